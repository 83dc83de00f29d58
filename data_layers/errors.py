"""The two ways a data layer fails, as exception types a solve loop or a test can tell apart."""
from pathlib import Path
from typing import Union


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder, split list or label table is missing. The message says where the layer looked
    and how to get the data, because a bare "No such file" is the most common first-run failure."""


class BadSampleError(ValueError):
    """One sample cannot be used: unreadable or truncated file, labels outside the task's classes, or
    tops whose sizes disagree. It names the offending file so that skip-and-report can list it."""

    def __init__(self, path: Union[str, Path], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
