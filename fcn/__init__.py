"""fcn package: the ``fcn`` command line, the pycaffe facade and ``Segmenter``.

``Segmenter`` is resolved on first use, so that ``import fcn`` (and the CLI's start-up) does not pay for
importing torch.
"""
from typing import Any

__all__ = ["Segmenter"]


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from fcn.segmenter import Segmenter
        return Segmenter
    raise AttributeError(f"module 'fcn' has no attribute {name!r}")
