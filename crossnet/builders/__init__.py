"""One module per suite: `build(topology, profile) -> list[Cell]`, registered in crossnet.suites."""
