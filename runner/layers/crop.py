"""Crop: cut bottom 0 to the shape of bottom 1 from ``axis`` on, at Caffe's offsets.

FCN aligns its upsampled scores with the input this way. Bottom 1 only lends its shape, so only
bottom 0 receives a gradient (as in Caffe).
"""
from __future__ import annotations

from typing import Any, List

import torch

from runner.layers.base import Layer
from runner.layers.shape import canonical_axis
from runner.registry import register


@register("Crop")
class Crop(Layer):
    """``top = bottom0[..., o_i : o_i + bottom1.shape[i], ...]`` for every axis i >= axis."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.axis = layer_param.crop_param.axis
        self.offsets = list(layer_param.crop_param.offset)

    def _error(self, message: str) -> ValueError:
        return ValueError(f"layer '{self.name}' (Crop): {message}")

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        x, ref = bottoms
        if x.dim() != ref.dim():
            raise self._error(f"both bottoms must have the same number of axes, got "
                              f"{tuple(x.shape)} and {tuple(ref.shape)}")
        start = canonical_axis(self, self.axis, x.dim())
        cropped = x.dim() - start
        if len(self.offsets) > 1 and len(self.offsets) != cropped:
            raise self._error(f"{len(self.offsets)} offsets given for {cropped} cropped axes "
                              f"(give none, one for all, or one per axis from axis {start})")
        index = [slice(None)] * start
        for i in range(start, x.dim()):
            offset = 0 if not self.offsets else self.offsets[0 if len(self.offsets) == 1 else i - start]
            if offset + ref.shape[i] > x.shape[i]:
                raise self._error(f"crop out of range on axis {i}: offset {offset} + size {ref.shape[i]} "
                                  f"exceeds bottom size {x.shape[i]} (bottoms {tuple(x.shape)}, {tuple(ref.shape)})")
            index.append(slice(offset, offset + ref.shape[i]))
        return [x[tuple(index)]]
