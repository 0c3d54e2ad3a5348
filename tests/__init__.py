"""The test suite, a package: the harness imports one way under `pytest` and `python -m pytest`."""
