"""Segmentation scoring as the FCN paper reports it: pixel accuracy, mean accuracy, mean IU and
frequency-weighted IU (plus per-class IU), from a confusion histogram.

The histogram is accumulated with ``torch.bincount`` on the net's own device, so scoring a GPU net moves
one n x n matrix to the host per evaluation instead of every score map. The function names and arguments
follow the FCN release's ``score.py`` (``fast_hist``, ``compute_hist``, ``seg_tests``) so its solve
scripts keep working.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from netspec.atomic import write_atomically
from runner import interrupt


def voc_palette() -> np.ndarray:
    """PASCAL VOC's 256-entry colour map (the devkit's bit-interleaving rule)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        value, rgb = label, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette[label] = rgb
    return palette


def save_label_png(labels: np.ndarray, path: str) -> None:
    """Write a label map as a palette PNG (VOC colours; 255 stays the void colour), atomically."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    png = io.BytesIO()
    image.save(png, format="PNG")
    write_atomically(path, png.getvalue())


def fast_hist(a: Any, b: Any, n: int) -> Any:
    """Confusion counts of ground truth ``a`` (rows) vs prediction ``b`` (columns) for labels in [0, n);
    other ground-truth values (255 = void) are skipped. numpy in, numpy out; torch in, torch out."""
    if isinstance(a, torch.Tensor):
        a, b = a.reshape(-1).long(), b.reshape(-1).long()
        valid = (a >= 0) & (a < n)
        index = torch.where(valid, n * a + b, torch.full_like(a, n * n))
        return torch.bincount(index, minlength=n * n + 1)[: n * n].reshape(n, n)
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    valid = (a >= 0) & (a < n)
    return np.bincount(n * a[valid].astype(int) + b[valid].astype(int), minlength=n * n).reshape(n, n)


@dataclass
class SegScores:
    """The paper's four metrics (as fractions) and the per-class IU; NaN where a class never occurs."""
    pixel_accuracy: float
    mean_accuracy: float
    mean_iu: float
    fw_iu: float
    per_class_iu: List[float]
    loss: Optional[float] = None

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def scores_from_hist(hist: np.ndarray, present_only: bool = False, loss: Optional[float] = None) -> SegScores:
    """Metrics of a confusion histogram. ``present_only`` averages over the classes that occur in the
    ground truth (SIFT Flow's rule); otherwise classes absent from both truth and prediction are left out
    of the means as NaN, as the release's ``np.nanmean`` does."""
    hist = np.asarray(hist, dtype=np.float64)
    diag = np.diag(hist)
    truth, predicted = hist.sum(1), hist.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = diag / truth
        iu = diag / (truth + predicted - diag)
    if present_only:
        keep = truth > 0
        class_acc, iu_for_mean, weights = class_acc[keep], iu[keep], truth[keep]
    else:
        iu_for_mean, weights = iu, truth
    total = hist.sum()
    freq = weights / total if total else weights
    return SegScores(
        pixel_accuracy=float(diag.sum() / total) if total else float("nan"),
        mean_accuracy=float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else float("nan"),
        mean_iu=float(np.nanmean(iu_for_mean)) if np.isfinite(iu_for_mean).any() else float("nan"),
        fw_iu=float(np.nansum(freq * iu_for_mean)),
        per_class_iu=[float(v) for v in iu],
        loss=loss,
    )


def score_heads(blob_names: Sequence[str]) -> List[Tuple[str, str, bool]]:
    """``(score blob, label blob, present_only)`` of a net named as the FCN release names them: ``score``
    against ``label`` (VOC, NYUD, PASCAL-Context), else every ``score_X`` against ``X`` in net order (SIFT
    Flow's ``score_sem`` and ``score_geo``). As the release scored them, SIFT Flow's semantic labels average
    their IU over the classes present only (many of its 33 are absent from the test set). Raises ValueError
    when there is neither."""
    names = set(blob_names)
    if {"score", "label"} <= names:
        return [("score", "label", False)]
    heads = [(name, name[len("score_"):], name == "score_sem") for name in blob_names
             if name.startswith("score_") and name[len("score_"):] in names]
    if not heads:
        raise ValueError(f"no score blob to score: expected 'score' and 'label', or 'score_X' and 'X' "
                         f"(blobs: {', '.join(blob_names)})")
    return heads


def compute_hist(net: Any, save_dir: Optional[str], dataset: Sequence[Any], layer: str = "score",
                 gt: str = "label", loss_blob: Optional[str] = "loss") -> tuple:
    """Run ``net`` once per item of ``dataset`` (its data layer supplies the images), accumulate the
    histogram of ``gt`` vs argmax of ``layer`` on the net's device; optionally save each prediction as
    ``save_dir/<item>.png``. Returns (histogram as numpy, mean loss or None). A stop request
    (``runner.interrupt``) ends it before the next image, with ``Interrupted`` saying how far it got."""
    n_cl = net.blobs[layer].channels
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    hist = None
    loss_sum, has_loss = 0.0, loss_blob is not None and loss_blob in net.blobs
    loss_terms: List[torch.Tensor] = []
    with torch.no_grad():
        for done, item in enumerate(dataset):
            interrupt.check(f"after {done} of {len(dataset)} images")
            net.forward()
            score = net.blobs[layer].tensor()[0]
            prediction = score.argmax(0)
            truth = net.blobs[gt].tensor()[0, 0]
            counts = fast_hist(truth, prediction, n_cl)
            hist = counts if hist is None else hist + counts
            if save_dir:
                save_label_png(prediction.cpu().numpy(), os.path.join(save_dir, f"{item}.png"))
            if has_loss:
                loss_terms.append(net.blobs[loss_blob].tensor().reshape(-1)[0])
    if loss_terms:
        loss_sum = float(torch.stack(loss_terms).double().sum())
    counts_np = hist.cpu().numpy() if hist is not None else np.zeros((n_cl, n_cl), dtype=np.int64)
    mean_loss = loss_sum / len(dataset) if has_loss and len(dataset) else None
    return counts_np, mean_loss


def do_seg_tests(net: Any, iteration: int, save_format: Optional[str], dataset: Sequence[Any],
                 layer: str = "score", gt: str = "label", present_only: bool = False) -> SegScores:
    """Score ``net`` on ``dataset``; ``save_format`` (e.g. ``'out/iter{}'``) gets the iteration filled in."""
    save_dir = save_format.format(iteration) if save_format else None
    hist, loss = compute_hist(net, save_dir, dataset, layer, gt)
    return scores_from_hist(hist, present_only=present_only, loss=loss)


def seg_tests(solver: Any, save_format: Optional[str], dataset: Sequence[Any], layer: str = "score",
              gt: str = "label", present_only: bool = False) -> SegScores:
    """Score the solver's first test net, which shares the train net's weights (no copy)."""
    net = solver.test_nets[0]
    net.share_with(solver.net)
    return do_seg_tests(net, solver.iter, save_format, dataset, layer, gt, present_only)


def format_scores(scores: SegScores, iteration: Optional[int] = None) -> str:
    """One line in the release's wording, for logs."""
    head = f"Iteration {iteration} " if iteration is not None else ""
    loss = f"loss {scores.loss:.4f} " if scores.loss is not None else ""
    return (f"{head}{loss}overall accuracy {scores.pixel_accuracy:.4f} mean accuracy {scores.mean_accuracy:.4f} "
            f"mean IU {scores.mean_iu:.4f} fwavacc {scores.fw_iu:.4f}")


def read_split(path: str) -> List[str]:
    """The item names of a split file (one per line, blank lines skipped)."""
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]
