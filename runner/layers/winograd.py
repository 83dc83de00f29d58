"""Transform-domain 2-D convolution on the CPU through NNPACK, the library torch ships for it.

Caffe (im2col + GEMM) and torch's default CPU path compute every multiply-add of a convolution. NNPACK
computes a stride-1 3x3 convolution by Winograd's F(6x6, 3x3), which needs about 5x fewer multiplications
(larger kernels go through FFTs), and runs it about 2x faster here (see BENCHMARKS.md). The price is
rounding: about 1e-5 of the output's magnitude per layer instead of about 1e-7, which is why it is an
opt-in speed option (``Net.set_speed(winograd=True)``) and not the default.

NNPACK's batched entry point is a training algorithm that is slower than torch's own; single images
take the Winograd path, so a batch is convolved one image at a time. It is used for inference only (a
gradient, when needed, comes from torch's own convolution, as Caffe's would), pads at most
``kernel - 1`` itself and rejects some shapes: those cases fall back to torch's convolution.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

_available: Optional[bool] = None


def nnpack_available() -> bool:
    """Whether NNPACK runs on this machine; asking also initializes it, which it needs once per process."""
    global _available
    if _available is None:
        _available = bool(torch._nnpack_available())
    return _available


def applies(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], dilation: Sequence[int],
            groups: int) -> bool:
    """Whether ``conv2d(x, weight, ...)`` can take the transform-domain path: an inference-only, float32,
    CPU, stride-1, undilated, ungrouped 2-D convolution."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return (x.dim() == 4 and x.shape[0] > 0 and x.device.type == "cpu" and x.dtype == torch.float32 == weight.dtype
            and not needs_grad and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and nnpack_available())


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           padding: Sequence[int]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` for a case ``applies`` accepted, by NNPACK.

    Raises RuntimeError when NNPACK refuses the shape; callers fall back to ``F.conv2d``."""
    kernel = weight.shape[2:]
    if any(p >= k for p, k in zip(padding, kernel)):
        # NNPACK pads by less than the kernel only (FCN's conv1_1 pads 100): pad here, then convolve unpadded
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
        padding = (0, 0)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    weight = weight.contiguous()
    images = [torch._nnpack_spatial_convolution(image.unsqueeze(0).contiguous(), weight, bias, list(padding))
              for image in x]
    return images[0] if len(images) == 1 else torch.cat(images)
