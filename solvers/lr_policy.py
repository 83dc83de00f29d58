"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), bit for bit in float32.

Resuming a run must give the very rate Caffe would have used, so the arithmetic follows Caffe's C++
types: ``step``, ``exp`` and ``multistep`` raise gamma to an integer power in double precision (C++
promotes ``pow(float, int)``) before the product is stored as float; ``inv``, ``poly`` and ``sigmoid``
work in float throughout, with glibc's correctly rounded ``powf``/``expf`` (computed here in double and
rounded once; numpy's own float32 ``power``/``exp`` are off by an ulp now and then). The reference
fixtures confirm each choice: any other misses Caffe's float32 rate by one ulp at some iteration.

``multistep`` carries state: ``current_step`` advances by at most one per call, when ``iter`` has
reached the next ``stepvalue``. That is why the policy returns the new step rather than keeping it,
and why the solver stores it in its snapshots. ``step`` also records its step index there, as Caffe
does.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from netspec import caffe_pb2

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
_f32 = np.float32


def learning_rate(param: "caffe_pb2.SolverParameter", iteration: int, current_step: int) -> Tuple[float, int]:
    """The rate for update number ``iteration`` (0-based) and the policy's ``current_step`` afterwards.

    The rate is a Python float holding Caffe's float32 value exactly.
    """
    policy = param.lr_policy
    base = _f32(param.base_lr)
    if policy == "fixed":
        return float(base), current_step
    if policy == "step":
        _require(param.stepsize > 0, "step", f"stepsize must be > 0 (got {param.stepsize})")
        _require_gamma(param)
        current_step = iteration // param.stepsize
        return float(_f32(float(base) * float(param.gamma) ** current_step)), current_step
    if policy == "exp":
        _require_gamma(param)
        return float(_f32(float(base) * float(param.gamma) ** iteration)), current_step
    if policy == "inv":
        _require_gamma(param)
        grown = _f32(1) + _f32(param.gamma) * _f32(iteration)
        return float(base * _powf(grown, -_f32(param.power))), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        _require_gamma(param)
        return float(_f32(float(base) * float(param.gamma) ** current_step)), current_step
    if policy == "poly":
        _require(param.max_iter > 0, "poly", f"max_iter must be > 0 (got {param.max_iter})")
        left = _f32(1) - _f32(iteration) / _f32(param.max_iter)
        return float(base * _powf(left, _f32(param.power))), current_step
    if policy == "sigmoid":
        _require_gamma(param)
        _require(param.stepsize > 0, "sigmoid", f"stepsize must be > 0 (got {param.stepsize})")
        exponent = -_f32(param.gamma) * (_f32(iteration) - _f32(param.stepsize))
        return float(base * (_f32(1) / (_f32(1) + _expf(exponent)))), current_step
    known = ", ".join(POLICIES)
    raise ValueError(f"unknown learning rate policy '{policy}' (lr_policy must be one of: {known})")


def _powf(x: np.float32, y: np.float32) -> np.float32:
    """C's ``powf``, correctly rounded (NaN for a negative base, as there)."""
    with np.errstate(all="ignore"):
        return _f32(np.power(np.float64(x), np.float64(y)))


def _expf(x: np.float32) -> np.float32:
    """C's ``expf``, correctly rounded (inf on overflow, as there)."""
    with np.errstate(all="ignore"):
        return _f32(np.exp(np.float64(x)))


def _require(ok: bool, policy: str, what: str) -> None:
    if not ok:
        raise ValueError(f"lr_policy '{policy}': {what}")


def _require_gamma(param: "caffe_pb2.SolverParameter") -> None:
    _require(param.gamma >= 0 and not math.isnan(param.gamma), param.lr_policy,
             f"gamma must be >= 0 (got {param.gamma})")
