"""Shared pytest set-up: the tests folder is importable (fixture helpers live in ``caffe_cases``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "fuzz: malformed-input runs for a time budget (make fuzz)")
