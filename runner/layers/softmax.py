"""Softmax over one axis (``softmax_param.axis``, default 1: the class axis of N x C x H x W scores)."""
from __future__ import annotations

from typing import List

import torch

from runner.layers.base import Layer
from runner.layers.shape import canonical_axis
from runner.registry import register


@register("Softmax")
class Softmax(Layer):
    """``exp(x - max) / sum exp(x - max)`` along the axis; autograd's backward
    ``(dy - sum(dy*y)) * y`` is Caffe's."""

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        axis = canonical_axis(self, int(self.layer_param.softmax_param.axis), x.dim())
        return [torch.softmax(x, dim=axis)]
