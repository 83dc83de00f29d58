"""BatchNorm, Scale and Bias: Caffe's split of batch normalisation into statistics and affine parts.

BatchNorm keeps its statistics as Caffe stores them (blob 0 = sum-scaled mean, blob 1 = sum-scaled
variance, blob 2 = the scale factor; the stats are blob/factor) and has no affine part; nets follow
it with a Scale layer (``bias_term: true``). Scale and Bias broadcast a blob of shape
``bottom.shape[axis : axis + num_axes]`` over the bottom, taken from a parameter or a second bottom.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch

from netspec import caffe_pb2
from runner.layers.base import Layer, ParamSpec, Shape
from runner.layers.shape import canonical_axis
from runner.registry import register

_TEST = 1


def _error(layer: Layer, message: str) -> ValueError:
    return ValueError(f"layer '{layer.name}' ({layer.type}): {message}")


def _operand_shape(layer: Layer, shape: Shape, axis: int, num_axes: int) -> Shape:
    """Shape of the learned scale/bias blob: ``shape[axis : axis + num_axes]`` (-1: to the end)."""
    if num_axes < -1:
        raise _error(layer, f"num_axes must be non-negative, or -1 to extend to the end, got {num_axes}")
    start = canonical_axis(layer, axis, len(shape))
    if num_axes == -1:
        return tuple(shape[start:])
    if len(shape) < start + num_axes:
        raise _error(layer, f"a {num_axes}-axis blob starting at axis {start} extends past the bottom's shape {tuple(shape)}")
    return tuple(shape[start:start + num_axes])


def _broadcast(layer: Layer, x: torch.Tensor, operand: torch.Tensor, axis: int) -> torch.Tensor:
    """``operand`` viewed so that it lines up with ``x`` from ``axis`` (axis 0 for a scalar operand)."""
    start = 0 if operand.dim() == 0 else canonical_axis(layer, axis, x.dim())
    end = start + operand.dim()
    if tuple(x.shape[start:end]) != tuple(operand.shape):
        raise _error(layer, f"operand shape {tuple(operand.shape)} does not match bottom shape "
                            f"{tuple(x.shape)} from axis {start}")
    return operand.reshape(tuple(operand.shape) + (1,) * (x.dim() - end))


def _per_channel(layer: Layer, bottom_shape: Shape, operands: List[torch.Tensor], axis: int) -> bool:
    """Whether a one-bottom layer's learned operand is one value per channel: shape (C,) on axis 1."""
    return (len(operands) == 1 and len(bottom_shape) >= 2 and canonical_axis(layer, axis, len(bottom_shape)) == 1
            and tuple(operands[0].shape) == (bottom_shape[1],))


def _constant_filler(value: float) -> Any:
    return caffe_pb2.FillerParameter(type="constant", value=value)


@register("BatchNorm")
class BatchNorm(Layer):
    """``(x - mean) / sqrt(var + eps)`` per channel (axis 1), from batch or stored statistics."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.batch_norm_param
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else phase == _TEST
        self.fraction = p.moving_average_fraction
        self.eps = p.eps
        # Caffe pins the three statistics blobs to lr_mult 0 by adding param specs to the layer
        # (they then appear in saved caffemodels); it refuses a non-zero lr_mult.
        for i in range(3):
            if i < len(layer_param.param):
                if layer_param.param[i].lr_mult != 0:
                    raise _error(self, "cannot configure batch normalization statistics as layer parameters "
                                       f"(param {i} has lr_mult {layer_param.param[i].lr_mult}, must be 0)")
            else:
                layer_param.param.add().lr_mult = 0

    @property
    def writes_params(self) -> bool:  # type: ignore[override]
        return not self.use_global_stats

    @staticmethod
    def _channels(shape: Shape) -> int:
        return 1 if len(shape) == 1 else shape[1]

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        c = self._channels(tuple(bottom_shapes[0]))
        return [ParamSpec((c,)), ParamSpec((c,)), ParamSpec((1,))]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        c = self._channels(tuple(x.shape))
        if len(params) != 3 or tuple(params[0].shape) != (c,) or tuple(params[1].shape) != (c,) \
                or params[2].numel() != 1:
            raise _error(self, f"expects blobs of shapes ({c},), ({c},), (1,) for bottom {tuple(x.shape)}, "
                               f"got {[tuple(t.shape) for t in params]}")
        stat_shape = (1, c) + (1,) * (x.dim() - 2) if x.dim() > 1 else (1,)
        dims = [d for d in range(x.dim()) if d != 1 or x.dim() == 1]
        # Caffe never back-propagates into the statistics: they enter as constants.
        mean_sum, var_sum, factor = (t.detach() for t in params)
        if self.use_global_stats:  # an affine map with per-channel constants: one pass over x
            multiplier, addend = self._global_affine(mean_sum, var_sum, factor)
            return [torch.addcmul(addend.reshape(stat_shape), x, multiplier.reshape(stat_shape))]
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        self._update_running_stats(params, mean.detach().reshape(c), var.detach().reshape(c), x.numel() // c)
        return [(x - mean) / torch.sqrt(var + self.eps)]

    def _global_affine(self, mean_sum: torch.Tensor, var_sum: torch.Tensor,
                       factor: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The stored statistics as ``x * multiplier + addend``: 1/sqrt(var + eps) and -mean/sqrt(var + eps)."""
        inverse = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        multiplier = torch.rsqrt(var_sum * inverse + self.eps)
        return multiplier, -mean_sum * inverse * multiplier

    def channel_affine(self, bottom_shape: Shape, params: List[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        if not self.use_global_stats or len(bottom_shape) < 2 or len(params) != 3 \
                or tuple(params[0].shape) != (bottom_shape[1],):
            return None
        return self._global_affine(*(t.detach() for t in params))

    def _update_running_stats(self, params: List[torch.Tensor], mean: torch.Tensor, var: torch.Tensor,
                              m: int) -> None:
        """Caffe's in-place moving averages; the variance gets the unbiased m/(m-1) correction."""
        correction = m / (m - 1) if m > 1 else 1.0
        with torch.no_grad():
            params[2].mul_(self.fraction).add_(1)
            params[0].mul_(self.fraction).add_(mean)
            params[1].mul_(self.fraction).add_(var * correction)


@register("Scale")
class Scale(Layer):
    """``x * s (+ b)`` with s a learned blob (default filler constant 1) or the second bottom."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.scale_param
        self.axis = p.axis
        self.num_axes = p.num_axes
        self.bias_term = p.bias_term
        self.filler = p.filler if p.HasField("filler") else _constant_filler(1.0)
        self.bias_filler = p.bias_filler  # its default is Caffe's Bias default: constant 0

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        shape = tuple(bottom_shapes[0])
        specs = []
        if len(bottom_shapes) == 1:
            specs.append(ParamSpec(_operand_shape(self, shape, self.axis, self.num_axes), self.filler))
            bias_axes = self.num_axes
        else:
            bias_axes = len(bottom_shapes[1])
        if self.bias_term:
            specs.append(ParamSpec(_operand_shape(self, shape, self.axis, bias_axes), self.bias_filler))
        return specs

    def channel_affine(self, bottom_shape: Shape, params: List[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        if len(self.layer_param.bottom) != 1 or not _per_channel(self, bottom_shape, params[:1], self.axis):
            return None
        scale = params[0].detach()
        return scale, params[1].detach() if self.bias_term else torch.zeros_like(scale)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 2, bottoms)
        x = bottoms[0]
        scale = bottoms[1] if len(bottoms) == 2 else params[0]
        scale = _broadcast(self, x, scale, self.axis)
        if self.bias_term:  # x * s + b in one pass
            return [torch.addcmul(_broadcast(self, x, params[-1], self.axis), x, scale)]
        return [x * scale]


@register("Bias")
class Bias(Layer):
    """``x + b`` with b a learned blob (default filler constant 0) or the second bottom."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.bias_param
        self.axis = p.axis
        self.num_axes = p.num_axes
        self.filler = p.filler

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        if len(bottom_shapes) == 2:
            return []
        return [ParamSpec(_operand_shape(self, tuple(bottom_shapes[0]), self.axis, self.num_axes), self.filler)]

    def channel_affine(self, bottom_shape: Shape, params: List[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        if len(self.layer_param.bottom) != 1 or not _per_channel(self, bottom_shape, params, self.axis):
            return None
        bias = params[0].detach()
        return torch.ones_like(bias), bias

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 2, bottoms)
        x = bottoms[0]
        bias = bottoms[1] if len(bottoms) == 2 else params[0]
        return [x + _broadcast(self, x, bias, self.axis)]
