"""Pooling (MAX and AVE) with Caffe's output sizes, window clipping and divisors.

Caffe rounds the output size up by default, and drops the last window when it would start in the
trailing padding, but only when some pad is non-zero; torch's ceil_mode always drops it and
refuses pads over half the kernel. Where torch's own padding gives Caffe's sizes it is used
directly (its windows, -inf padding and AVE divisors then equal Caffe's); otherwise the input is
padded explicitly so that plain windows reproduce Caffe's grid. MAX ties go to the first strictly
larger value in row-major order in both Caffe and torch, so autograd routes gradients as Caffe does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from runner.layers.base import Layer, Shape
from runner.registry import register

_MAX, _AVE, _STOCHASTIC = 0, 1, 2
_FLOOR = 1
_FLT_MAX = float(torch.finfo(torch.float32).max)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, clip: bool) -> int:
    """Caffe's pooled size: ceil (or floor) of (size + 2 pad - kernel)/stride, plus one; with
    ``clip`` (some pad non-zero) one less when the last window would start in the trailing padding."""
    span = size + 2 * pad - kernel
    out = (_ceil_div(span, stride) if ceil else span // stride) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _torch_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """What torch's pooling gives for these settings (its ceil_mode always clips)."""
    return caffe_pooled_size(size, kernel, stride, pad, ceil, clip=ceil)


@dataclass(frozen=True)
class _Plan:
    """How to run one pooling: torch padding/ceil_mode, or explicit (top, bottom, left, right) pads."""
    out: Tuple[int, int]
    padding: Tuple[int, int]
    ceil_mode: bool
    explicit: Optional[Tuple[int, int, int, int]]


def _plan(size: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int], pad: Tuple[int, int],
          out: Tuple[int, int], ceil_first: bool) -> _Plan:
    # The layer's own rounding is tried first, so that a trace (ONNX export) taken at one input size
    # records the mode that stays right at every other size.
    if all(p <= k // 2 for p, k in zip(pad, kernel)):
        for ceil in ((True, False) if ceil_first else (False, True)):
            if all(_torch_pooled_size(n, k, s, p, ceil) == o
                   for n, k, s, p, o in zip(size, kernel, stride, pad, out)):
                return _Plan(out, pad, ceil, None)
    # Pad so the grid of `out` windows starting at -pad exactly covers the padded input.
    trailing = [(o - 1) * s + k - p - n for n, k, s, p, o in zip(size, kernel, stride, pad, out)]
    return _Plan(out, (0, 0), False, (pad[0], trailing[0], pad[1], trailing[1]))


def _ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> List[int]:
    """Caffe's AVE divisor per window along one axis: the window clipped to the padded input."""
    return [min(i * stride - pad + kernel, size + pad) - (i * stride - pad) for i in range(out)]


@register("Pooling")
class Pooling(Layer):
    """Caffe's Pooling: MAX (optional second top = argmax mask h*W + w) and AVE; 4-D bottoms only."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.pooling_param
        self.method = p.pool
        if self.method == _STOCHASTIC:
            raise self._error("STOCHASTIC pooling is not supported (Caffe implements it on GPU only)")
        if self.method not in (_MAX, _AVE):
            raise self._error(f"unknown pooling method {self.method}")
        self.global_pooling = p.global_pooling
        has = p.HasField
        if self.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                raise self._error("with global_pooling the kernel size cannot be given")
            self.kernel: Optional[Tuple[int, int]] = None
        else:
            if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
                raise self._error("give kernel_size, or kernel_h and kernel_w (both, and not with kernel_size)")
            self.kernel = (p.kernel_h, p.kernel_w) if has("kernel_h") else (p.kernel_size, p.kernel_size)
            if min(self.kernel) <= 0:
                raise self._error(f"kernel dimensions must be positive, got {self.kernel}")
        self.pad = self._pair(p, "pad")
        self.stride = self._pair(p, "stride")
        if min(self.stride) <= 0:
            raise self._error(f"stride must be positive, got {self.stride}")
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self._error("with global_pooling only pad = 0 and stride = 1 are allowed")
        if self.kernel is not None and any(p_ >= k for p_, k in zip(self.pad, self.kernel)):
            raise self._error(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        self.ceil = p.round_mode != _FLOOR
        self.want_mask = len(layer_param.top) > 1
        if self.want_mask and self.method != _MAX:
            raise self._error("only MAX pooling has a second (mask) top")
        if len(layer_param.top) > 2:
            raise self._error(f"takes at most 2 tops, got {len(layer_param.top)}")

    def _error(self, message: str) -> ValueError:
        return ValueError(f"layer '{self.name}' (Pooling): {message}")

    def _pair(self, p: Any, name: str) -> Tuple[int, int]:
        """A scalar field or its _h/_w pair (both required, and not together with the scalar)."""
        has_h, has_w = p.HasField(name + "_h"), p.HasField(name + "_w")
        if has_h or has_w:
            if not (has_h and has_w) or p.HasField(name):
                raise self._error(f"give {name}, or {name}_h and {name}_w (both, and not with {name})")
            return (getattr(p, name + "_h"), getattr(p, name + "_w"))
        return (getattr(p, name), getattr(p, name))

    def _checked(self, bottom_shapes: Sequence[Shape]) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        """(input size, kernel, output size) of the one 4-D bottom, after Caffe's checks."""
        self.check_bottoms(1, 1, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self._error(f"input must have 4 axes (N, C, H, W), got shape {shape}")
        size = (shape[2], shape[3])
        kernel = size if self.kernel is None else self.kernel
        clip = self.pad != (0, 0)
        out = tuple(caffe_pooled_size(n, k, s, p, self.ceil, clip)
                    for n, k, s, p in zip(size, kernel, self.stride, self.pad))
        if min(out) <= 0:
            raise self._error(f"bottom {shape} is too small for kernel {kernel}, "
                              f"stride {self.stride}, pad {self.pad}: output size {out}")
        return size, kernel, out

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        out = self._checked(bottom_shapes)[2]
        top = tuple(bottom_shapes[0][:2]) + out
        return [top, top] if self.want_mask else [top]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        size, kernel, out = self._checked([tuple(b.shape) for b in bottoms])
        x = bottoms[0]
        plan = _plan(size, kernel, self.stride, self.pad, out, self.ceil)
        if self.method == _AVE:
            return [self._average(x, plan, size, kernel)]
        return self._max(x, plan, size, kernel)

    def forward_inference(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """MAX pooling of a float32 tensor on the CPU in a layout with a fast kernel: torch's own kernel for
        NCHW compares one element at a time and is 5 to 15 times slower than oneDNN's, which takes NCHW
        tensors here, or than torch's channels-last kernel, which takes the convolutions' outputs (strides
        made canonical: for a batch of one, torch may otherwise take them for NCHW). The maximum is exact,
        so the values are the same."""
        x = bottoms[0] if len(bottoms) == 1 else None
        if x is None or self.method != _MAX or self.want_mask or x.dim() != 4 or x.device.type != "cpu" \
                or x.dtype != torch.float32 or x.numel() == 0:
            return None
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            n, c, h, w = x.shape
            return self.forward([x.as_strided(x.shape, (c * h * w, 1, w * c, c))], params)
        if not x.is_contiguous() or not torch.backends.mkldnn.is_available():
            return None
        size, kernel, out = self._checked([tuple(x.shape)])
        plan = _plan(size, kernel, self.stride, self.pad, out, self.ceil)
        source = x if plan.explicit is None else self._padded(x, plan, float("-inf"))
        y = torch.ops.aten.mkldnn_max_pool2d(source.to_mkldnn(), list(kernel), list(self.stride),
                                             list(plan.padding), [1, 1], plan.ceil_mode).to_dense()
        return [y if plan.explicit is None else y.clamp(min=-_FLT_MAX)]

    @staticmethod
    def _padded(x: torch.Tensor, plan: _Plan, value: float) -> torch.Tensor:
        top, bottom, left, right = plan.explicit
        # F.pad crops for negative amounts: rows past the last window are never read.
        return F.pad(x, (left, right, top, bottom), value=value)

    def _average(self, x: torch.Tensor, plan: _Plan, size: Tuple[int, int], kernel: Tuple[int, int]) -> torch.Tensor:
        if plan.explicit is None:
            return F.avg_pool2d(x, kernel, self.stride, plan.padding, ceil_mode=plan.ceil_mode,
                                count_include_pad=True)
        sums = F.avg_pool2d(self._padded(x, plan, 0.0), kernel, self.stride, divisor_override=1)
        rows, cols = (torch.tensor(_ave_divisor(n, k, s, p, o), dtype=x.dtype, device=x.device)
                      for n, k, s, p, o in zip(size, kernel, self.stride, self.pad, plan.out))
        return sums / (rows[:, None] * cols[None, :])

    def _max(self, x: torch.Tensor, plan: _Plan, size: Tuple[int, int], kernel: Tuple[int, int]) -> List[torch.Tensor]:
        source = x if plan.explicit is None else self._padded(x, plan, float("-inf"))
        pooled = F.max_pool2d(source, kernel, self.stride, plan.padding, ceil_mode=plan.ceil_mode,
                              return_indices=self.want_mask)
        y, index = pooled if self.want_mask else (pooled, None)
        if plan.explicit is not None:
            # Windows lying wholly in the padding (possible with pad 0 and stride > kernel) hold -inf;
            # Caffe leaves them at -FLT_MAX with no argmax, which the clamp (zero gradient there) gives.
            y = y.clamp(min=-_FLT_MAX)
            if self.want_mask:
                top, left, width = plan.explicit[0], plan.explicit[2], source.shape[3]
                index = (index // width - top) * size[1] + (index % width - left)
        if not self.want_mask:
            return [y]
        # Caffe's mask is -1 where no input value beat its start value -FLT_MAX.
        mask = torch.where(y <= -_FLT_MAX, torch.full_like(y, -1), index.to(y.dtype))
        return [y, mask.detach()]
