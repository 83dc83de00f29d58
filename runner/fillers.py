"""Caffe's weight fillers, so that a freshly built net starts from the weights Caffe would give it.

Once ``set_random_seed`` (or a solver's ``random_seed``) seeded Caffe's generator (``runner.caffe_rng``),
the random fillers draw Caffe's very numbers from it, in Caffe's float32 arithmetic (xavier's
``sqrt(3/n)``, msra's ``sqrt(2/n)``, positive_unitball's row sums): a seeded net equals real Caffe's, value
for value. Unseeded, they draw the same distributions from torch's generator, on the tensor's device.
``bilinear`` is deterministic and reproduces Caffe's float32 arithmetic bit for bit.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from runner import caffe_rng

#: FillerParameter.VarianceNorm values (caffe.proto): FAN_IN = 0, FAN_OUT = 1, AVERAGE = 2.
_FAN_IN, _FAN_OUT, _AVERAGE = 0, 1, 2


def _legacy_dim(tensor: torch.Tensor, index: int) -> int:
    """Caffe's num()/channels(): the axis size, or 1 where the blob has fewer axes."""
    return tensor.shape[index] if tensor.dim() > index else 1


def _fan_n(tensor: torch.Tensor, filler: Any) -> float:
    """The n of xavier/msra: fan_in = count/num, fan_out = count/channels (integer division, as Caffe)."""
    count = tensor.numel()
    fan_in = count // _legacy_dim(tensor, 0)
    fan_out = count // _legacy_dim(tensor, 1)
    norm = filler.variance_norm
    if norm == _AVERAGE:
        return (fan_in + fan_out) / 2.0
    if norm == _FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _constant(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    t.fill_(f.value)


def _uniform(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    t.uniform_(f.min, f.max, generator=g)


def _gaussian(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    t.normal_(f.mean, f.std, generator=g)
    if f.sparse >= 0:
        # Caffe keeps each weight with probability sparse / num_outputs (num_outputs = axis 0).
        keep = min(1.0, f.sparse / _legacy_dim(t, 0))
        t.mul_(torch.bernoulli(torch.full_like(t, keep), generator=g))


def _positive_unitball(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    t.uniform_(0.0, 1.0, generator=g)
    rows = t.reshape(_legacy_dim(t, 0), -1)
    t.copy_((rows / rows.sum(dim=1, keepdim=True)).reshape(t.shape))


def _xavier(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    bound = math.sqrt(3.0 / _fan_n(t, f))
    t.uniform_(-bound, bound, generator=g)


def _msra(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    t.normal_(0.0, math.sqrt(2.0 / _fan_n(t, f)), generator=g)


def _fan_n32(t: torch.Tensor, f: Any) -> np.float32:
    """Caffe's ``Dtype n`` of xavier/msra: fan_in, fan_out or their sum halved in float."""
    count = t.numel()
    fan_in, fan_out = count // _legacy_dim(t, 0), count // _legacy_dim(t, 1)
    if f.variance_norm == _AVERAGE:
        return np.float32(fan_in + fan_out) / np.float32(2)
    return np.float32(fan_out if f.variance_norm == _FAN_OUT else fan_in)


def _caffe_values(t: torch.Tensor, f: Any, rng: caffe_rng.CaffeRNG) -> np.ndarray:
    """The values Caffe's filler writes into a blob of ``t``'s shape, drawn from Caffe's generator."""
    count, kind = t.numel(), f.type
    if kind == "gaussian":
        values = rng.gaussian(count, f.mean, f.std)
        if f.sparse >= 0:
            keep = min(np.float32(1), np.float32(f.sparse) / np.float32(_legacy_dim(t, 0)))
            values *= rng.bernoulli(count, keep)
        return values
    if kind == "uniform":
        return rng.uniform(count, f.min, f.max)
    if kind == "xavier":
        scale = np.sqrt(np.float32(3) / _fan_n32(t, f))
        return rng.uniform(count, -scale, scale)
    if kind == "msra":
        return rng.gaussian(count, 0.0, np.sqrt(np.float32(2) / _fan_n32(t, f)))
    rows = rng.uniform(count, 0.0, 1.0).reshape(_legacy_dim(t, 0), -1)  # positive_unitball
    return rows / np.cumsum(rows, axis=1, dtype=np.float32)[:, -1:]  # each row's sum as Caffe adds it


def bilinear_kernel(size: int) -> torch.Tensor:
    """The size x size bilinear upsampling kernel exactly as Caffe's float32 arithmetic computes it.

    Caffe evaluates ``(1 - |x/f - c|) * (1 - |y/f - c|)`` with f = ceil(size/2) and
    c = (size-1)/(2f) rounded to float32, every step in float32; doing the same steps here keeps
    odd kernels (where float64-then-round differs by an ulp) bitwise equal to Caffe.
    """
    f = math.ceil(size / 2.0)
    c = torch.tensor((size - 1) / (2.0 * f), dtype=torch.float32)
    pos = torch.arange(size, dtype=torch.float32)
    profile = 1 - torch.abs(pos / f - c)
    return profile[:, None] * profile[None, :]


def _bilinear(t: torch.Tensor, f: Any, g: Optional[torch.Generator]) -> None:
    if t.dim() != 4:
        raise ValueError(f"bilinear filler needs a 4-D blob, got shape {tuple(t.shape)}")
    if t.shape[2] != t.shape[3]:
        raise ValueError(f"bilinear filler needs a square kernel, got shape {tuple(t.shape)}")
    # Caffe gives every (output, input) pair the kernel, not only the diagonal.
    t.copy_(bilinear_kernel(t.shape[3]).to(t.dtype).expand_as(t))


_FILLERS: Dict[str, Callable[[torch.Tensor, Any, Optional[torch.Generator]], None]] = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


#: The fillers that draw random numbers (from Caffe's generator once it is seeded).
_CAFFE_RANDOM = ("gaussian", "uniform", "xavier", "msra", "positive_unitball")


def fill(tensor: torch.Tensor, filler_param: Any, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill ``tensor`` in place as Caffe's filler ``filler_param`` (a FillerParameter) would; returns it.

    ``None`` means Caffe's default FillerParameter: constant 0. Random fillers draw from Caffe's generator
    when it is seeded and no ``generator`` is given, else from ``generator`` (default: torch's).
    """
    if filler_param is None:
        with torch.no_grad():
            return tensor.zero_()
    kind = filler_param.type
    try:
        impl = _FILLERS[kind]
    except KeyError:
        raise ValueError(f"unknown filler type {kind!r}; supported: {', '.join(sorted(_FILLERS))}") from None
    if filler_param.sparse < -1 or (filler_param.sparse != -1 and kind != "gaussian"):
        raise ValueError(f"filler {kind!r}: sparse = {filler_param.sparse} is not supported "
                         "(only the gaussian filler takes sparse >= 0)")
    if tensor.numel() == 0:
        raise ValueError(f"filler {kind!r}: cannot fill an empty blob of shape {tuple(tensor.shape)}")
    stream = caffe_rng.stream() if generator is None else None
    with torch.no_grad():
        if stream is not None and kind in _CAFFE_RANDOM:
            values = _caffe_values(tensor, filler_param, stream)
            tensor.copy_(torch.from_numpy(values.reshape(tuple(tensor.shape))))
        else:
            impl(tensor, filler_param, generator)
    return tensor
