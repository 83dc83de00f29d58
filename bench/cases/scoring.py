"""Case 6: scoring throughput, the confusion histogram (solvers.score.fast_hist) over label maps, on torch
tensors as the solve loop calls it and on numpy arrays as the release's score.py did, then the metrics."""
from __future__ import annotations

from typing import Any, Dict

import torch

from bench.measure import interleaved
from bench.sizes import Sizes
from solvers.score import fast_hist, scores_from_hist

VOID = 255


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    shape = (sizes.score_batch, sizes.image, sizes.image)
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(0, sizes.classes, shape, generator=generator)
    truth = torch.where(torch.rand(shape, generator=generator) < 0.05, torch.full_like(truth, VOID), truth)
    predicted = torch.randint(0, sizes.classes, shape, generator=generator)
    truth_np, predicted_np = truth.numpy(), predicted.numpy()
    hist = fast_hist(truth, predicted, sizes.classes)
    if not (hist.numpy() == fast_hist(truth_np, predicted_np, sizes.classes)).all():
        raise AssertionError("fast_hist gives different counts on tensors and on numpy arrays")
    timings = interleaved({
        "fast_hist_torch": lambda: fast_hist(truth, predicted, sizes.classes),
        "fast_hist_numpy": lambda: fast_hist(truth_np, predicted_np, sizes.classes),
        "metrics_from_hist": lambda: scores_from_hist(hist.numpy()),
    }, sizes.score_reps)
    pixels = truth.numel()
    return {
        "pixels_per_call": pixels,
        "classes": sizes.classes,
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "pixels_per_second": {name: pixels / timings[name].median for name in ("fast_hist_torch", "fast_hist_numpy")},
    }
