"""Local response normalisation (LRN), both of Caffe's regions.

ACROSS_CHANNELS: ``x * (k + alpha/n * sum_{n neighbouring channels} x^2)^-beta`` (zero padded).
WITHIN_CHANNEL:  ``x * (1 + alpha/n^2 * sum_{n x n window} x^2)^-beta`` (zero padded; Caffe builds it
from AVE pooling and Power layers, so ``k`` is not used). Autograd of these expressions is exactly
Caffe's hand-written backward.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
import torch.nn.functional as F

from runner.layers.base import Layer
from runner.registry import register

_ACROSS_CHANNELS, _WITHIN_CHANNEL = 0, 1


@register("LRN")
class LRN(Layer):
    """Caffe's LRN layer on 4-D (N, C, H, W) bottoms."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.lrn_param
        if p.local_size % 2 != 1:
            raise ValueError(f"layer '{self.name}' (LRN): local_size must be odd, got {p.local_size}")
        if p.norm_region not in (_ACROSS_CHANNELS, _WITHIN_CHANNEL):
            raise ValueError(f"layer '{self.name}' (LRN): unknown norm_region {p.norm_region}")
        self.size = p.local_size
        self.alpha = p.alpha
        self.beta = p.beta
        self.k = p.k
        self.across = p.norm_region == _ACROSS_CHANNELS

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        if x.dim() != 4:
            raise ValueError(f"layer '{self.name}' (LRN): input must have 4 axes (N, C, H, W), "
                             f"got shape {tuple(x.shape)}")
        half = (self.size - 1) // 2
        square = x * x
        if self.across:
            # Mean over the channel window, padding counted: sum / n.
            # The channel window is zero-padded explicitly: avg_pool3d's own padding may not exceed half
            # the window, and Caffe accepts local_size larger than the channel count.
            padded = F.pad(square, (0, 0, 0, 0, half, self.size - 1 - half))
            mean = F.avg_pool3d(padded.unsqueeze(1), (self.size, 1, 1), stride=1).squeeze(1)
            scale = self.k + self.alpha * mean
        else:
            mean = F.avg_pool2d(square, self.size, stride=1, padding=half, count_include_pad=True)
            scale = 1.0 + self.alpha * mean
        return [x * scale.pow(-self.beta)]

    def forward_inference(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """ACROSS_CHANNELS as a few in-place passes: the channel window summed by shifted adds (pooling over a
        5-D view was 5 times slower), and the usual beta of 0.75 as ``r * sqrt(r)`` with ``r = scale^-0.5``
        (a pow is an exp and a log per element)."""
        x = bottoms[0] if len(bottoms) == 1 else None
        if x is None or not self.across or x.dim() != 4:
            return None
        square = x * x
        window = square.clone()
        for offset in range(1, min((self.size - 1) // 2, x.shape[1] - 1) + 1):
            window[:, offset:] += square[:, :-offset]
            window[:, :-offset] += square[:, offset:]
        scale = window.mul_(self.alpha / self.size).add_(self.k)
        if self.beta == 0.75:
            root = scale.rsqrt_()
            return [root.mul_(root.sqrt()).mul_(x)]
        return [scale.pow_(-self.beta).mul_(x)]
