"""Element-wise activation layers: ReLU, PReLU, Sigmoid, TanH, Power, AbsVal, Dropout.

Each maps one bottom to one top of the same shape. Autograd gives Caffe's gradients for all of them
except Power, whose Caffe backward uses ``top / (shift + scale*x)`` shortcuts that differ from the
analytic derivative where the base is 0, so Power carries its own backward.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from netspec import caffe_pb2
from runner.layers.base import Layer, ParamSpec, Shape
from runner.registry import register

TRAIN = caffe_pb2.TRAIN


class _NeuronLayer(Layer):
    """One bottom, one top; subclasses implement ``activate``."""

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        return [self.activate(bottoms[0], params)]

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.activate")


@register("ReLU")
class ReLU(_NeuronLayer):
    """``x > 0 ? x : negative_slope*x``. ``torch.where`` on ``x > 0`` gives Caffe's gradient exactly,
    including slope (not 1) at x == 0, which ``clamp`` based formulas would not."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.negative_slope = float(layer_param.relu_param.negative_slope)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        if self.negative_slope == 0.0:
            return torch.relu(x)
        return torch.where(x > 0, x, x * self.negative_slope)

    def forward_in_place(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        # the same values as ``activate``; no gradient is taken through this form
        self.check_bottoms(1, 1, bottoms)
        if self.negative_slope == 0.0:
            return [torch.relu_(bottoms[0])]
        return [F.leaky_relu_(bottoms[0], self.negative_slope)]


@register("PReLU")
class PReLU(_NeuronLayer):
    """ReLU with a learned negative slope per channel (axis 1), or one shared slope (a 0-d blob, as
    Caffe allocates it); Caffe's default filler is the constant 0.25."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        prelu = layer_param.prelu_param
        self.channel_shared = bool(prelu.channel_shared)
        if prelu.HasField("filler"):
            self.filler = prelu.filler
        else:
            self.filler = caffe_pb2.FillerParameter(type="constant", value=0.25)

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        self.check_bottoms(1, 1, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            raise ValueError(f"layer '{self.name}' (PReLU): bottom must have at least 2 axes, got shape {shape}")
        return [ParamSpec((), self.filler) if self.channel_shared else ParamSpec((shape[1],), self.filler)]

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        slope = params[0]
        if not self.channel_shared:
            if x.dim() < 2 or x.shape[1] != slope.shape[0]:
                raise ValueError(f"layer '{self.name}' (PReLU): bottom shape {tuple(x.shape)} does not match "
                                 f"{slope.shape[0]} slopes on axis 1")
            slope = slope.reshape((1, -1) + (1,) * (x.dim() - 2))
        return torch.where(x > 0, x, x * slope)


@register("Sigmoid")
class Sigmoid(_NeuronLayer):
    """Logistic function; backward ``y*(1-y)`` as Caffe."""

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(x)


@register("TanH")
class TanH(_NeuronLayer):
    """Hyperbolic tangent; backward ``1 - y^2`` as Caffe."""

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return torch.tanh(x)


@register("AbsVal")
class AbsVal(_NeuronLayer):
    """``|x|``; backward ``sign(x)`` (0 at 0), as Caffe."""

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return torch.abs(x)


class _PowerFunction(torch.autograd.Function):
    """``(shift + scale*x)^power`` with Caffe's backward, which takes shortcuts instead of the analytic
    derivative: 0 when ``power*scale`` is 0 (the top is then the constant ``shift^power``, or 1 for
    power 0), the constant ``power*scale`` for power 1, ``power*scale*(shift + scale*x)`` for power 2,
    ``power * y / x`` when shift is 0 and ``power*scale * y / (shift + scale*x)`` otherwise."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, power: float, scale: float, shift: float) -> torch.Tensor:
        ctx.constants = (power, scale, shift)
        if power * scale == 0.0:
            y = torch.ones_like(x) if power == 0.0 else torch.full_like(x, shift).pow_(power)
        else:
            base = x * scale if scale != 1.0 else x
            base = base + shift if shift != 0.0 else base
            y = base if power == 1.0 else torch.pow(base, power)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        power, scale, shift = ctx.constants
        x, y = ctx.saved_tensors
        diff_scale = power * scale
        if diff_scale == 0.0:
            local = torch.zeros_like(x)
        elif power == 1.0:
            local = torch.full_like(x, diff_scale)
        elif power == 2.0:
            local = x * (diff_scale * scale) + diff_scale * shift
        elif shift == 0.0:
            local = y / x * power
        else:
            local = y / (x * scale + shift) * diff_scale
        return grad * local if diff_scale != 0.0 else local, None, None, None


@register("Power")
class Power(_NeuronLayer):
    """``(shift + scale*x)^power`` (PowerParameter defaults 1, 1, 0)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return _PowerFunction.apply(x, self.power, self.scale, self.shift)


@register("Dropout")
class Dropout(_NeuronLayer):
    """TRAIN: keep each element with probability ``1 - dropout_ratio`` (torch's RNG, seeded by
    ``set_random_seed``) and scale kept ones by ``1/(1 - ratio)``; TEST: a copy (Caffe copies, so the
    top never aliases the bottom)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.ratio = float(layer_param.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"layer '{self.name}' (Dropout): dropout_ratio must be in [0, 1), got {self.ratio}")
        self.scale = 1.0 / (1.0 - self.ratio)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        if self.phase != TRAIN:
            return x.clone()
        mask = torch.empty_like(x).bernoulli_(1.0 - self.ratio)
        return x * mask * self.scale
