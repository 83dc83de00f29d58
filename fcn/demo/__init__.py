"""``make demo``: the FCN recipe of the paper, in miniature, on a synthetic VOC-format dataset.

``run_demo(out_dir)`` generates the data, trains the classifier, convolutionalizes it, trains FCN-32s,
16s and 8s staged and 8s at once, scores them, and writes REPORT.md, curves.png and predictions.png.
"""
from __future__ import annotations

import time
from typing import Optional


def run_demo(out_dir: str, budget: Optional["Budget"] = None, seed: int = 0) -> str:
    """Run every stage into ``out_dir``; returns the report's path."""
    from fcn.demo.report import write_curves, write_predictions, write_report
    from fcn.demo.run import run_stages
    started = time.perf_counter()
    demo = run_stages(out_dir, budget, seed)
    write_curves(demo)
    write_predictions(demo)
    return write_report(demo, time.perf_counter() - started)


from fcn.demo.run import Budget  # noqa: E402  (re-exported for callers that size the run)
