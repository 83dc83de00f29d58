"""``make experiments``: the paper's ablations (Tables 2, 3, 8, loss sampling, IU bounds) in miniature.

``run_all(out_dir)`` does, for each of three seeds, what one seed needs: train a classifier, convolutionalize
it once, train every ablation from that body on synthetic VOC data (``out_dir/seed-K``); then it writes
REPORT.md and bounds.png over all seeds, each finding stated only where the spread over seeds allows.
See fcn.experiments.run for the runs.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from fcn.experiments.run import Budget, run_experiments

SEEDS = (0, 1, 2)


def run_all(out_dir: str, budget: Optional[Budget] = None, seeds: Sequence[int] = SEEDS) -> str:
    """Every run of every seed under ``out_dir``, then the report; returns the report's path."""
    from fcn.experiments.report import write_bounds_plot, write_report
    runs = []
    for seed in seeds:
        print(f"seed {seed} ({len(runs) + 1} of {len(seeds)})", flush=True)
        runs.append(run_experiments(os.path.join(out_dir, f"seed-{seed}"), budget, seed))
    os.makedirs(out_dir, exist_ok=True)
    write_bounds_plot(runs, out_dir)
    return write_report(runs, out_dir)


__all__ = ["Budget", "SEEDS", "run_all"]
