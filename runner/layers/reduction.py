"""Layers that summarise trailing axes: Reduction (sums to one value per leading index) and MVN (mean and
variance normalisation per sample or per channel)."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch

from netspec import caffe_pb2
from runner.layers.base import Layer, Shape
from runner.layers.shape import canonical_axis, legacy_shape
from runner.registry import register

_OP = caffe_pb2.ReductionParameter


@register("Reduction")
class Reduction(Layer):
    """SUM, ASUM (sum of absolute values), SUMSQ or MEAN of all axes from ``axis`` on, times ``coeff``:
    the top keeps the axes before ``axis`` (axis 0 gives a 0-d top). Caffe reduces only trailing axes."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.reduction_param
        self.operation = int(param.operation)
        if self.operation not in (_OP.SUM, _OP.ASUM, _OP.SUMSQ, _OP.MEAN):
            raise ValueError(f"layer '{self.name}' (Reduction): unknown operation {self.operation}")
        self.axis, self.coeff = int(param.axis), float(param.coeff)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        return [shape[:canonical_axis(self, self.axis, len(shape))]]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        (top_shape,) = self.top_shapes([tuple(b.shape) for b in bottoms], ())
        x = bottoms[0].reshape(math.prod(top_shape), -1)
        if self.operation == _OP.ASUM:
            x = x.abs()
        elif self.operation == _OP.SUMSQ:
            x = x * x
        coeff = self.coeff / x.shape[1] if self.operation == _OP.MEAN else self.coeff
        top = x.sum(dim=1)
        return [(top * coeff if coeff != 1.0 else top).reshape(top_shape)]


class _MeanVarianceNorm(torch.autograd.Function):
    """Rows of ``x`` centred (and divided by ``std + eps``), with Caffe's backward
    ``(g - mean(g) - y*mean(y*g)) / (std + eps)``: finite where a row is constant (a 1x1 map), where the
    derivative of ``sqrt`` at a zero variance would make autograd's NaN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, normalize_variance: bool, eps: float) -> torch.Tensor:
        y = x - x.mean(dim=1, keepdim=True)
        denominator: Optional[torch.Tensor] = None
        if normalize_variance:
            denominator = (y * y).mean(dim=1, keepdim=True).sqrt() + eps
            y = y / denominator
        ctx.save_for_backward(y, denominator)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, None]:
        y, denominator = ctx.saved_tensors
        diff = grad - grad.mean(dim=1, keepdim=True)
        if denominator is not None:
            diff = (diff - y * (y * grad).mean(dim=1, keepdim=True)) / denominator
        return diff, None, None


@register("MVN")
class MVN(Layer):
    """Subtract the mean, and with ``normalize_variance`` divide by ``sqrt(variance) + eps`` (Caffe adds eps
    to the standard deviation), over H*W per channel or over C*H*W per sample (``across_channels``). The
    top has Caffe's legacy 4-D shape (num, channels, height, width): a bottom of fewer axes gains 1s."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.mvn_param
        self.normalize_variance = bool(param.normalize_variance)
        self.across_channels = bool(param.across_channels)
        self.eps = float(param.eps)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        return [legacy_shape(self, bottom_shapes[0])]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        (top_shape,) = self.top_shapes([tuple(b.shape) for b in bottoms], ())
        groups = top_shape[0] if self.across_channels else top_shape[0] * top_shape[1]
        y = _MeanVarianceNorm.apply(bottoms[0].reshape(groups, -1), self.normalize_variance, self.eps)
        return [y.reshape(top_shape)]
