"""Element-wise functions beyond the classic neurons: ELU, Exp, Log, BNLL, Threshold, Clip, Swish.

Each maps one bottom to one top of its shape (``neuron._NeuronLayer``). Autograd's derivatives are
Caffe's for all but BNLL, whose overflow-free form has no derivative at 0, so BNLL carries Caffe's
backward. Threshold has no backward in Caffe: a backward that reaches it is refused, as Caffe aborts.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from runner.layers.neuron import _NeuronLayer
from runner.registry import register


def _log_base(layer: _NeuronLayer, base: float) -> float:
    """``ln(base)``, where Caffe's base -1 means e (exactly 1); other bases must be positive."""
    if base == -1.0:
        return 1.0
    if base <= 0.0:
        raise ValueError(f"layer '{layer.name}' ({layer.type}): base must be strictly positive (or -1 for e), "
                         f"got {base}")
    log_base = math.log(base)
    if log_base == 0.0 and layer.type == "Log":
        raise ValueError(f"layer '{layer.name}' (Log): base 1 has no logarithm (1/log(base) is infinite)")
    return log_base


@register("ELU")
class ELU(_NeuronLayer):
    """``x > 0 ? x : alpha*(exp(x) - 1)``; gradient 1, or ``top + alpha`` where ``x <= 0``, as Caffe."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.alpha = float(layer_param.elu_param.alpha)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return F.elu(x, alpha=self.alpha)


@register("Exp")
class Exp(_NeuronLayer):
    """``base^(shift + scale*x)`` (base -1: e), computed as Caffe does: ``outer * exp(inner * x)`` with
    ``inner = ln(base)*scale`` and ``outer = base^shift``."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.exp_param
        log_base = _log_base(self, float(p.base))
        self.inner = log_base * float(p.scale)
        self.outer = 1.0 if p.shift == 0 else math.exp(log_base * float(p.shift))

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        y = torch.exp(x * self.inner if self.inner != 1.0 else x)
        return y * self.outer if self.outer != 1.0 else y


@register("Log")
class Log(_NeuronLayer):
    """``log_base(shift + scale*x)`` (base -1: natural log)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.log_param
        self.base_scale = 1.0 / _log_base(self, float(p.base))
        self.scale, self.shift = float(p.scale), float(p.shift)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        if self.shift != 0.0:
            x = x + self.shift
        y = torch.log(x)
        return y * self.base_scale if self.base_scale != 1.0 else y


class _BNLLFunction(torch.autograd.Function):
    """``log(1 + exp(x))`` in its overflow-free form, with Caffe's gradient ``sigmoid(x)`` (also at 0,
    where the form's ``|x|`` has no derivative)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x) + torch.log1p(torch.exp(-torch.abs(x)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor]:
        (x,) = ctx.saved_tensors
        return (grad * torch.sigmoid(x),)


@register("BNLL")
class BNLL(_NeuronLayer):
    """Binomial normal log likelihood ``log(1 + exp(x))`` (softplus without torch's linear cut-off)."""

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return _BNLLFunction.apply(x)


@register("Threshold")
class Threshold(_NeuronLayer):
    """``x > threshold ? 1 : 0``. Caffe has no backward for it (NOT_IMPLEMENTED), so the top carries no
    gradient and a backward through it is refused."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.threshold = float(layer_param.threshold_param.threshold)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return (x.detach() > self.threshold).to(x.dtype)

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        return "Not Implemented Yet: Caffe has no backward for Threshold (threshold_layer.hpp)"


@register("Clip")
class Clip(_NeuronLayer):
    """``min(max(x, min), max)``; the gradient passes where ``min <= x <= max`` (bounds included)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise ValueError(f"layer '{self.name}' (Clip): clip_param needs both min and max")
        self.min, self.max = float(p.min), float(p.max)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        inside = (x >= self.min) & (x <= self.max)
        return torch.where(inside, x, x.detach().clamp(self.min, self.max))


@register("Swish")
class Swish(_NeuronLayer):
    """``x * sigmoid(beta*x)``."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.beta = float(layer_param.swish_param.beta)

    def activate(self, x: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        return x * torch.sigmoid(x * self.beta if self.beta != 1.0 else x)
