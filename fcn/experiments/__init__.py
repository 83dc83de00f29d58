"""``make experiments``: the paper's ablations (Tables 2, 3, 8, loss sampling, IU bounds) in miniature.

``run_all(out_dir)`` trains one classifier, convolutionalizes it once, trains every ablation from that
body on synthetic VOC data, and writes REPORT.md and bounds.png; see fcn.experiments.run for the runs.
"""
from __future__ import annotations

from typing import Optional

from fcn.experiments.run import Budget, run_experiments


def run_all(out_dir: str, budget: Optional[Budget] = None, seed: int = 0) -> str:
    """Every run into ``out_dir``, then the report; returns the report's path."""
    from fcn.experiments.report import write_bounds_plot, write_report
    results = run_experiments(out_dir, budget, seed)
    write_bounds_plot(results)
    return write_report(results)


__all__ = ["Budget", "run_all"]
