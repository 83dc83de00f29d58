"""FCN-8s on VGG16 written the ordinary PyTorch way, as the yardstick for the runner's overhead.

Nothing here knows about Caffe layers, blobs or prototxts: a ``torch.nn.Module`` with one attribute per
layer and a hand-written ``forward`` (in-place ReLUs, ceil-mode pooling, transposed convolutions, the
release's fixed crop offsets), the way pytorch-fcn or torchvision would write it. ``load_from`` takes the
weights of a runner ``Net`` of the same shape, so both compute on identical numbers and the benchmark can
demand the same outputs (up to float rounding: the runner's inference convolutions go through oneDNN with
packed weights and fused ReLUs, torch's plain ones do not) before it compares times.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

VGG16_STAGES = (2, 2, 3, 3, 3)
# Where each coarse score map sits inside the finer one (the release's Crop offsets; they follow from
# VGG16's kernels, strides and conv1_1's pad of 100, not from the widths).
OFFSET_POOL4, OFFSET_POOL3, OFFSET_SCORE = 5, 9, 31


class PlainFCN8s(nn.Module):
    """FCN-8s with layer names equal to the released prototxt's, so weights map one to one."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512, 512), fc_width: int = 4096,
                 num_classes: int = 21) -> None:
        super().__init__()
        channels = 3
        for stage, (depth, width) in enumerate(zip(VGG16_STAGES, widths), start=1):
            for i in range(1, depth + 1):
                pad = 100 if (stage, i) == (1, 1) else 1
                setattr(self, f"conv{stage}_{i}", nn.Conv2d(channels, width, 3, padding=pad))
                channels = width
        self.fc6 = nn.Conv2d(channels, fc_width, 7)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.score_fr = nn.Conv2d(fc_width, num_classes, 1)
        self.score_pool4 = nn.Conv2d(widths[3], num_classes, 1)
        self.score_pool3 = nn.Conv2d(widths[2], num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)

    def _stage(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        for i in range(1, VGG16_STAGES[stage - 1] + 1):
            x = F.relu(getattr(self, f"conv{stage}_{i}")(x), inplace=True)
        return F.max_pool2d(x, 2, 2, ceil_mode=True)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        x = self._stage(self._stage(data, 1), 2)
        pool3 = self._stage(x, 3)
        pool4 = self._stage(pool3, 4)
        x = self._stage(pool4, 5)
        x = F.relu(self.fc6(x), inplace=True)
        x = F.relu(self.fc7(x), inplace=True)
        up = self.upscore2(self.score_fr(x))
        h, w = up.shape[2:]
        up = up + self.score_pool4(pool4)[:, :, OFFSET_POOL4:OFFSET_POOL4 + h, OFFSET_POOL4:OFFSET_POOL4 + w]
        up = self.upscore_pool4(up)
        h, w = up.shape[2:]
        up = up + self.score_pool3(pool3)[:, :, OFFSET_POOL3:OFFSET_POOL3 + h, OFFSET_POOL3:OFFSET_POOL3 + w]
        up = self.upscore8(up)
        h, w = data.shape[2:]
        return up[:, :, OFFSET_SCORE:OFFSET_SCORE + h, OFFSET_SCORE:OFFSET_SCORE + w]

    def load_from(self, net: Any) -> "PlainFCN8s":
        """Copy every parameter from a runner ``Net`` (or anything with pycaffe's ``params``)."""
        params: Dict[str, Any] = net.params
        with torch.no_grad():
            for name, module in self.named_children():
                blobs = params[name]
                module.weight.copy_(blobs[0].tensor())
                if module.bias is not None:
                    module.bias.copy_(blobs[1].tensor())
        return self
