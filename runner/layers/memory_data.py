"""Caffe's ``MemoryData`` layer: batches taken from arrays the user hands over with pycaffe's
``net.set_input_arrays(data, labels)``.

As in Caffe, the arrays are not copied: each forward's tops are views of rows ``pos .. pos+batch_size``
of the user's arrays (on the CPU), so writing into the arrays afterwards changes what later forwards
see; ``pos`` wraps around. The ``transform_param`` is ignored (Caffe only warns), the label top is
(batch_size,) after construction and (batch_size, 1, 1, 1) once a forward has run. The checks and their
RuntimeError messages are pycaffe's.
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
import torch

from netspec import glog
from runner.layers.batch_source import BatchSource
from runner.registry import register


@register("MemoryData")
class MemoryData(BatchSource):
    """Rows of the arrays given to ``set_input_arrays``, ``memory_data_param.batch_size`` at a time."""

    keeps_tops = True  # the tops are the user's memory: nothing may be written over them in place

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.memory_data_param
        self.batch_size, self.channels = int(param.batch_size), int(param.channels)
        self.height, self.width = int(param.height), int(param.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise ValueError(f"{self.label}: batch_size, channels, height, and width must be specified and "
                             f"positive in memory_data_param")
        self.set_shapes((self.batch_size, self.channels, self.height, self.width), (self.batch_size,))
        self._data: Optional[torch.Tensor] = None
        self._labels: Optional[torch.Tensor] = None
        self._arrays: tuple = ()
        self._pos = 0

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's checks on 4-D float32 C-contiguous arrays, then Caffe's MemoryDataLayer::Reset."""
        _check_array(data, "data array", self.channels, self.height, self.width)
        _check_array(labels, "labels array", 1, 1, 1)
        if data.shape[0] != labels.shape[0]:
            raise RuntimeError("data and labels must have the same first dimension")
        if data.shape[0] % self.batch_size != 0:
            raise RuntimeError("first dimensions of input arrays must be a multiple of batch size")
        if self.layer_param.HasField("transform_param"):
            glog.warning("memory_data_layer.cpp:90", "%s does not transform array data on Reset()", self.type)
        self._arrays = (data, labels)  # pycaffe keeps the arrays alive as long as the net
        self._data = torch.from_numpy(data)
        self._labels = torch.from_numpy(labels).reshape(-1, 1, 1, 1)
        self._pos = 0

    def load_batch(self) -> List[torch.Tensor]:
        if self._data is None:
            raise ValueError(f"{self.label}: no data yet; call net.set_input_arrays(data, labels) before forward")
        rows = slice(self._pos, self._pos + self.batch_size)
        self._pos = (self._pos + self.batch_size) % self._data.shape[0]
        return [self._data[rows], self._labels[rows]]


def _check_array(array: Any, name: str, channels: int, height: int, width: int) -> None:
    """pycaffe's CheckContiguousArray, in its order and with its messages."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise RuntimeError(f"{name} must be C contiguous")
    if array.ndim != 4:
        raise RuntimeError(f"{name} must be 4-d")
    if array.dtype != np.float32:
        raise RuntimeError(f"{name} must be float32")
    for axis, want, what in ((1, channels, "number of channels"), (2, height, "height"), (3, width, "width")):
        if array.shape[axis] != want:
            raise RuntimeError(f"{name} has wrong {what}")
