"""Caffe's update rules on tensors: gradient clipping, iter_size normalization, weight decay and the six
ComputeUpdateValue variants (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam).

Each rule works like Caffe's: it turns every parameter's diff, in place, into the value then subtracted
from the weights, and advances its history buffers. The formulas and their operation order are those of
Caffe's CPU code, in float32, so trajectories match real Caffe to rounding and a resumed run is bitwise
the run that never stopped. All arithmetic stays on the tensors' device and uses torch's multi-tensor
(``_foreach``) kernels, the way ``torch.optim`` does, so an update is a handful of kernel launches for
the whole net and never waits for the host.

Per-parameter scalars (``local_rate = rate * lr_mult``, ``local_decay = weight_decay * decay_mult``)
are rounded to float32 by the caller, as Caffe computes them in float.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from netspec import caffe_pb2

Tensors = List[torch.Tensor]


def f32(value: float) -> float:
    """``value`` rounded to float32 (as a Python float): Caffe's Dtype arithmetic on scalars."""
    return float(np.float32(value))


@dataclass(frozen=True)
class Hyper:
    """The SolverParameter fields the rules read, as float32 values."""
    momentum: float
    momentum2: float
    delta: float
    rms_decay: float

    @classmethod
    def of(cls, param: "caffe_pb2.SolverParameter") -> "Hyper":
        return cls(f32(param.momentum), f32(param.momentum2), f32(param.delta), f32(param.rms_decay))


@dataclass(frozen=True)
class UpdateRule:
    """One solver type: how many history blobs it keeps per parameter, and its ComputeUpdateValue over all
    parameters at once: ``compute(diffs, history, local_rates, hyper, iteration)``."""
    name: str
    history_per_param: int
    compute: Callable[[Tensors, Tensors, Sequence[float], Hyper, int], None]


# ----- the steps before the rule -----

def clip_gradients(diffs: Tensors, threshold: float) -> Optional[torch.Tensor]:
    """Scale all diffs by ``threshold / norm`` when their global L2 norm exceeds ``threshold`` (a negative
    threshold disables clipping). Decided on the device; returns the norm (a 0-d tensor) or None."""
    if threshold < 0 or not diffs:
        return None
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)))
    limit = torch.tensor(threshold, dtype=norm.dtype, device=norm.device)
    scale = torch.where(norm > limit, limit / norm, torch.ones_like(norm))
    torch._foreach_mul_(diffs, scale)
    return norm


def normalize(diffs: Tensors, iter_size: int) -> None:
    """Average the gradient accumulated over ``iter_size`` forward/backward passes."""
    if iter_size != 1:
        torch._foreach_mul_(diffs, f32(1.0 / iter_size))


def regularize(diffs: Tensors, weights: Tensors, decays: Sequence[float], kind: str) -> None:
    """Add weight decay to the diffs: ``decay * w`` (L2) or ``decay * sign(w)`` (L1); decay 0 adds nothing."""
    if kind not in ("L2", "L1"):
        raise ValueError(f"unknown regularization type '{kind}' (regularization_type must be L2 or L1)")
    chosen = [i for i, decay in enumerate(decays) if decay]
    if not chosen:
        return
    terms = [weights[i] for i in chosen]
    if kind == "L1":
        terms = torch._foreach_sign(terms)
    _add_scaled([diffs[i] for i in chosen], terms, [decays[i] for i in chosen])


def _add_scaled(targets: Tensors, sources: Tensors, alphas: Sequence[float]) -> None:
    """``targets[i] += alphas[i] * sources[i]``, one multi-tensor call per distinct alpha (nets have few)."""
    groups: Dict[float, List[int]] = defaultdict(list)
    for i, alpha in enumerate(alphas):
        groups[alpha].append(i)
    for alpha, members in groups.items():
        torch._foreach_add_([targets[i] for i in members], [sources[i] for i in members], alpha=alpha)


# ----- ComputeUpdateValue -----

def _sgd(diffs: Tensors, history: Tensors, rates: Sequence[float], hyper: Hyper, iteration: int) -> None:
    """h = local_rate * g + momentum * h; the update is h."""
    torch._foreach_mul_(diffs, list(rates))
    torch._foreach_mul_(history, hyper.momentum)
    torch._foreach_add_(history, diffs)
    torch._foreach_copy_(diffs, history)


def _nesterov(diffs: Tensors, history: Tensors, rates: Sequence[float], hyper: Hyper, iteration: int) -> None:
    """h' = momentum * h + local_rate * g; the update is (1 + momentum) * h' - momentum * h."""
    momentum = hyper.momentum
    previous = torch._foreach_mul(history, momentum)
    torch._foreach_mul_(diffs, list(rates))
    torch._foreach_mul_(history, momentum)
    torch._foreach_add_(history, diffs)
    torch._foreach_copy_(diffs, history)
    torch._foreach_mul_(diffs, f32(1.0 + momentum))
    torch._foreach_sub_(diffs, previous)


def _adagrad(diffs: Tensors, history: Tensors, rates: Sequence[float], hyper: Hyper, iteration: int) -> None:
    """h += g^2; the update is local_rate * g / (sqrt(h) + delta)."""
    torch._foreach_addcmul_(history, diffs, diffs)
    _divide_by_root(diffs, history, hyper.delta)
    torch._foreach_mul_(diffs, list(rates))


def _rmsprop(diffs: Tensors, history: Tensors, rates: Sequence[float], hyper: Hyper, iteration: int) -> None:
    """h = rms_decay * h + (1 - rms_decay) * g^2; the update is local_rate * g / (sqrt(h) + delta)."""
    _decayed_square(history, diffs, hyper.rms_decay)
    _divide_by_root(diffs, history, hyper.delta)
    torch._foreach_mul_(diffs, list(rates))


def _adadelta(diffs: Tensors, history: Tensors, rates: Sequence[float], hyper: Hyper, iteration: int) -> None:
    """h1 = m*h1 + (1-m)*g^2; u = g * sqrt((h2 + delta) / (h1 + delta)); h2 = m*h2 + (1-m)*u^2; the update is
    local_rate * u (m = momentum). History holds all h1, then all h2."""
    n = len(diffs)
    gradient_sq, update_sq = history[:n], history[n:]
    _decayed_square(gradient_sq, diffs, hyper.momentum)
    ratio = torch._foreach_add(update_sq, hyper.delta)
    torch._foreach_div_(ratio, torch._foreach_add(gradient_sq, hyper.delta))
    torch._foreach_sqrt_(ratio)
    torch._foreach_mul_(diffs, ratio)
    _decayed_square(update_sq, diffs, hyper.momentum)
    torch._foreach_mul_(diffs, list(rates))


def _adam(diffs: Tensors, history: Tensors, rates: Sequence[float], hyper: Hyper, iteration: int) -> None:
    """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; the update is
    local_rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta) with t = iteration + 1.
    History holds all m, then all v."""
    n = len(diffs)
    first, second = history[:n], history[n:]
    beta1, beta2 = hyper.momentum, hyper.momentum2
    t = iteration + 1
    correction = f32(math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))  # in double, as C++ pow(float, int)
    _decayed_square(second, diffs, beta2)
    torch._foreach_mul_(first, beta1)
    torch._foreach_add_(first, diffs, alpha=f32(1.0 - beta1))
    torch._foreach_copy_(diffs, first)
    _divide_by_root(diffs, second, hyper.delta)
    torch._foreach_mul_(diffs, [f32(rate * correction) for rate in rates])


def _decayed_square(average: Tensors, values: Tensors, decay: float) -> None:
    """average = decay * average + (1 - decay) * values^2."""
    torch._foreach_mul_(average, decay)
    torch._foreach_addcmul_(average, values, values, value=f32(1.0 - decay))


def _divide_by_root(diffs: Tensors, accumulated: Tensors, delta: float) -> None:
    """diffs /= sqrt(accumulated) + delta."""
    denominator = torch._foreach_sqrt(accumulated)
    torch._foreach_add_(denominator, delta)
    torch._foreach_div_(diffs, denominator)


RULES: Dict[str, UpdateRule] = {rule.name: rule for rule in (
    UpdateRule("SGD", 1, _sgd),
    UpdateRule("Nesterov", 1, _nesterov),
    UpdateRule("AdaGrad", 1, _adagrad),
    UpdateRule("RMSProp", 1, _rmsprop),
    UpdateRule("AdaDelta", 2, _adadelta),
    UpdateRule("Adam", 2, _adam),
)}


def check_hyper_parameters(kind: str, param: "caffe_pb2.SolverParameter") -> None:
    """The checks Caffe's solver constructors make, as errors a user can act on."""
    if kind in ("AdaGrad", "RMSProp") and param.momentum != 0:
        raise ValueError(f"Momentum cannot be used with {kind} (momentum: {param.momentum}; remove it)")
    if kind == "RMSProp" and not 0 <= param.rms_decay < 1:
        raise ValueError(f"rms_decay should lie between 0 and 1 (got {param.rms_decay})")
