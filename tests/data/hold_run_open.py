"""Not collected by `pytest tests/` (no test_ prefix): the interruption tests pass this file
explicitly before suites/ so that a run is reliably mid-way when the signal arrives."""

import os
import time


def test_hold_the_run_open() -> None:
    time.sleep(float(os.environ.get("CROSSNET_TEST_HOLD", "0")))
