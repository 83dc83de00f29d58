"""Shared pytest set-up: the tests folder is importable (fixture helpers live in ``caffe_cases``)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "fuzz: malformed-input runs for a time budget (make fuzz)")


@pytest.fixture
def one_thread():
    """Toy-sized ops are fastest, and steadiest on a busy machine, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
