"""Training targets derived from a label map inside the net, for losses that do not take class indices.

``ForegroundTargets`` feeds the "null background" mode (the FCN paper, Section 6.1; built by
``netspec.null_background``): each foreground class gets its own sigmoid cross-entropy, so the loss needs
one binary map per foreground class. Background pixels are 0 in every map, void pixels carry the ignore
label in every map (SigmoidCrossEntropyLoss skips targets equal to its ``ignore_label``). A Python layer,
so that the prototxt stays one real Caffe runs with pycaffe.
"""
from __future__ import annotations

from typing import Any, List

import numpy as np

from data_layers.params import integer, parse_param_str
from runner.python_layer import Layer

VOID = 255
MAX_CLASSES = 65536


class ForegroundTargets(Layer):
    """bottom: N x 1 x H x W labels; top: N x (classes - 1) x H x W, map c holding ``label == c + 1``.

    ``param_str``: a Python dict with ``classes`` (including the background, class 0) and optionally
    ``ignore_label`` (default 255)."""

    def setup(self, bottom: List[Any], top: List[Any]) -> None:
        where = "ForegroundTargets"
        params = parse_param_str(self.param_str, ("classes",), ("ignore_label",), where)
        self.classes = integer(params, "classes", None, 2, MAX_CLASSES, where)  # including the background
        self.ignore_label = integer(params, "ignore_label", VOID, -2 ** 31, 2 ** 31 - 1, where)
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError(f"{where}: one bottom (labels) and one top, got {len(bottom)} and {len(top)}")

    def reshape(self, bottom: List[Any], top: List[Any]) -> None:
        shape = bottom[0].data.shape
        if len(shape) != 4 or shape[1] != 1:
            raise ValueError(f"ForegroundTargets: labels must be N x 1 x H x W, got {shape}")
        top[0].reshape(shape[0], self.classes - 1, shape[2], shape[3])

    def forward(self, bottom: List[Any], top: List[Any]) -> None:
        labels = bottom[0].data
        foreground = np.arange(1, self.classes, dtype=labels.dtype).reshape(1, -1, 1, 1)
        targets = (labels == foreground).astype(np.float32)
        targets[np.broadcast_to(labels == self.ignore_label, targets.shape)] = self.ignore_label
        top[0].data[...] = targets

    def backward(self, top: List[Any], propagate_down: List[bool], bottom: List[Any]) -> None:
        pass  # labels take no gradient
