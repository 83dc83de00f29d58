"""Shift-and-stitch (the FCN paper, Section 3.2): dense output from a net of output stride f by running
it on f^2 shifted inputs and interlacing the outputs. Kept as the reference that ``surgery.dilation``'s
rewrite must reproduce, and for the paper's comparison of the two (the rewrite is one pass instead of f^2).

Shifting here drops the first ``dy`` rows and ``dx`` columns of the input, so that the shifted net's
output ``(i, j)`` sits at dense position ``(f*i + dy, f*j + dx)``. The equivalence with the dilated net
is exact for nets without padding (every layer "valid"): a padded layer pads each shifted copy at its
own border, where the dilated net sees real pixels, so with padding the two agree only away from the
borders. Caffe's ceil-rounded pooling can add a partial window at the end of a shifted copy; those
outputs lie past the dilated net's output and are cut off with the rest of the ragged edge.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _forward(net: Any, image: np.ndarray, input_blob: str, output_blob: str) -> np.ndarray:
    net.blobs[input_blob].reshape(*image.shape)
    net.reshape()
    net.blobs[input_blob].data[...] = image
    net.forward()
    return np.array(net.blobs[output_blob].data, copy=True)


def shift_and_stitch(net: Any, image: np.ndarray, f: int, input_blob: str = "data",
                     output_blob: str = "score") -> np.ndarray:
    """The dense N x C x H' x W' output of ``net`` (output stride ``f``) on an N x C x H x W ``image``:
    the ``f*f`` shifted outputs interlaced, cropped to the rows and columns every shift covers."""
    if f < 1:
        raise ValueError(f"shift_and_stitch: f must be >= 1, got {f}")
    outputs = {(dy, dx): _forward(net, image[:, :, dy:, dx:], input_blob, output_blob)
               for dy in range(f) for dx in range(f)}
    height = min(f * out.shape[2] + dy for (dy, _), out in outputs.items())
    width = min(f * out.shape[3] + dx for (_, dx), out in outputs.items())
    first = outputs[0, 0]
    dense = np.empty(first.shape[:2] + (f * first.shape[2], f * first.shape[3]), dtype=first.dtype)
    for (dy, dx), out in outputs.items():
        rows, cols = min(out.shape[2], first.shape[2]), min(out.shape[3], first.shape[3])
        dense[:, :, dy::f, dx::f][:, :, :rows, :cols] = out[:, :, :rows, :cols]
    return dense[:, :, :height, :width]
