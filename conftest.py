# Registers the crossnet pytest plugin (options, topology lifecycle, cells, reports); nothing else.
pytest_plugins = ["crossnet.plugin", "fixtures.cells"]
