"""Bilinear upsampling kernels for FCN's Deconvolution layers (the release's ``surgery.interp``).

FCN fixes its upsampling layers to bilinear interpolation: a CxC deconvolution whose weight is the
bilinear kernel on the diagonal (class c only feeds class c). Caffe's own bilinear filler puts the
kernel on every (input, output) pair instead, which mixes classes; hence this step. As in the release,
only the diagonal is written: the release's prototxts leave these weights at their zero default filler,
so the rest is zero there, and a user script that relies on keeping other entries keeps them.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from runner.fillers import bilinear_kernel


def upsample_filt(size: int) -> np.ndarray:
    """The size x size bilinear kernel (float32, equal to Caffe's bilinear filler)."""
    return bilinear_kernel(size).numpy()


def interp(net, layers: Iterable[str]) -> None:
    """Write the bilinear kernel on the diagonal of each named Deconvolution layer's weights."""
    for name in layers:
        if name not in net.params:
            raise ValueError(f"interp: net has no layer '{name}' with parameters")
        weight = net.params[name][0]
        m, k, h, w = weight.shape
        if m != k and k != 1:
            raise ValueError(f"interp: layer '{name}' maps {m} to {k} channels; input and output must match "
                             f"(or the layer must be grouped, k == 1)")
        if h != w:
            raise ValueError(f"interp: layer '{name}' has a non-square {h}x{w} kernel")
        weight.data[range(m), range(k) if k == m else 0, :, :] = upsample_filt(h)
