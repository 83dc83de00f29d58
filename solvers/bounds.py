"""Upper bounds on mean IU at a given output stride (the FCN paper, Section 6.3).

A net whose prediction is a coarse grid of stride f can at best reproduce the ground truth as seen on
that grid. Downsampling the ground truth by f (one label per f x f cell) and upsampling it back by
repetition therefore gives an upper bound on the mean IU any stride-f predictor can reach; the paper
uses it to argue that mean IU is limited far more by the learned model than by output resolution.

Two cell rules: ``nearest`` takes the label at the cell's centre pixel, ``mode`` takes the most frequent
non-void label of the cell (void only where the whole cell is void). A void bound prediction over a
non-void truth pixel is a miss: it counts against that class's IU, never for another class.
"""
from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np


MODES = ("nearest", "mode")
DEFAULT_FACTORS = (128, 64, 32, 16, 8, 4)
# The void label every data layer delivers (and the nets' ignore_label); solvers do not import data_layers.
VOID = 255


def _cells(label: np.ndarray, factor: int) -> np.ndarray:
    """``label`` padded with VOID to whole cells and split into ``(rows, cols, factor*factor)``."""
    h, w = label.shape
    rows, cols = -(-h // factor), -(-w // factor)
    padded = np.full((rows * factor, cols * factor), VOID, dtype=label.dtype)
    padded[:h, :w] = label
    return padded.reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3).reshape(rows, cols, -1)


def downsample(label: np.ndarray, factor: int, mode: str = "mode") -> np.ndarray:
    """One label per ``factor`` x ``factor`` cell of an H x W label map (see the module docstring)."""
    if factor < 1:
        raise ValueError(f"downsampling factor must be >= 1, got {factor}")
    if mode == "nearest":
        h, w = label.shape
        rows = np.minimum(np.arange(0, h, factor) + factor // 2, h - 1)
        cols = np.minimum(np.arange(0, w, factor) + factor // 2, w - 1)
        return label[np.ix_(rows, cols)]
    if mode != "mode":
        raise ValueError(f"unknown cell rule {mode!r}; known: {', '.join(MODES)}")
    cells = _cells(label, factor)
    flat = cells.reshape(-1, cells.shape[-1]).astype(np.int64)
    counts = np.zeros((flat.shape[0], VOID + 1), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(flat.shape[0]), flat.shape[1]), flat.ravel()), 1)
    counts[:, VOID] = 0
    winner = np.where(counts.any(axis=1), counts.argmax(axis=1), VOID)
    return winner.reshape(cells.shape[:2]).astype(label.dtype)


def upsample(coarse: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """Each cell's label repeated over its ``factor`` x ``factor`` pixels, cropped to ``shape``."""
    full = np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)
    return full[: shape[0], : shape[1]]


def bound_hist(label: np.ndarray, factor: int, num_classes: int, mode: str = "mode") -> np.ndarray:
    """``num_classes`` x ``num_classes + 1`` confusion counts of the truth against its down-and-up
    sampled self; the last column counts void predictions (misses). Void truth pixels are skipped."""
    bound = upsample(downsample(label, factor, mode), factor, label.shape).astype(np.int64)
    truth = label.astype(np.int64).ravel()
    guess = np.where(bound == VOID, num_classes, bound).ravel()
    keep = truth < num_classes
    pairs = truth[keep] * (num_classes + 1) + guess[keep]
    return np.bincount(pairs, minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


def mean_iu(hist: np.ndarray) -> float:
    """Mean IU (percent) of a bound histogram, over classes present in truth or prediction."""
    diag = np.diag(hist[:, :-1]).astype(np.float64)
    union = hist.sum(axis=1) + hist[:, :-1].sum(axis=0) - diag
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nanmean(diag / union) * 100.0)


def iu_bounds(labels: Iterable[np.ndarray], factors: Sequence[int], mode: str = "mode",
              num_classes: int = VOID) -> Dict[int, float]:
    """Mean IU bound (percent) for each factor over all H x W label maps in ``labels``. The default
    ``num_classes`` covers every non-void label value: classes that never occur are NaN and drop out of
    the mean, so the dataset's class count need not be known."""
    hists = {f: np.zeros((num_classes, num_classes + 1), dtype=np.int64) for f in factors}
    for label in labels:
        for factor in factors:
            hists[factor] += bound_hist(label, factor, num_classes, mode)
    return {factor: mean_iu(hist) for factor, hist in hists.items()}
