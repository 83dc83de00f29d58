"""``make demo``: the FCN recipe of the paper, in miniature, on a synthetic VOC-format dataset.

``run_demo(out_dir)`` generates the data, trains the classifier, convolutionalizes it, trains FCN-32s,
16s and 8s staged and 8s at once, scores them, and writes REPORT.md, curves.png and predictions.png;
``run_seeds(out_dir, seeds)`` does that once per seed (``seed-K`` folders) and writes a REPORT.md whose
table carries the spread over the seeds and whose findings are stated only where the spread allows.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence


def run_demo(out_dir: str, budget: Optional["Budget"] = None, seed: int = 0) -> str:
    """Run every stage into ``out_dir``; returns the report's path."""
    from fcn.demo.report import write_curves, write_predictions, write_report
    from fcn.demo.run import run_stages
    started = time.perf_counter()
    demo = run_stages(out_dir, budget, seed)
    write_curves(demo)
    write_predictions(demo)
    return write_report(demo, time.perf_counter() - started)


def run_seeds(out_dir: str, seeds: Sequence[int], budget: Optional["Budget"] = None) -> str:
    """The demo once per seed into ``out_dir/seed-K``, then the report over all of them; returns its path."""
    from fcn.demo.report import write_curves, write_predictions, write_report, write_seeds_report
    from fcn.demo.run import run_stages
    started = time.perf_counter()
    demos = []
    for seed in seeds:
        print(f"seed {seed} ({len(demos) + 1} of {len(seeds)})", flush=True)
        seed_started = time.perf_counter()
        demo = run_stages(os.path.join(out_dir, f"seed-{seed}"), budget, seed)
        write_curves(demo)
        write_predictions(demo)
        write_report(demo, time.perf_counter() - seed_started)
        demos.append(demo)
    return write_seeds_report(out_dir, demos, time.perf_counter() - started)


def infer_command(out_dir: str) -> str:
    """The ``fcn infer`` command that labels the demo's pictures with its FCN-8s (paths as given)."""
    stage = os.path.join(out_dir, "fcn8s")
    pictures = os.path.join(out_dir, "data", "pascal", "VOC2011", "JPEGImages")
    return (f"fcn infer --model {os.path.join(stage, 'deploy.prototxt')} "
            f"--weights {os.path.join(stage, 'best.caffemodel')} {pictures} --out {os.path.join(out_dir, 'infer')}")


from fcn.demo.run import Budget  # noqa: E402  (re-exported for callers that size the run)

#: ``fcn demo --budget tiny``: every stage and output in well under a minute; the nets learn nothing.
TINY_BUDGET = Budget(images=4, size=(48, 64), classifier=3, fcn32s=4, fcn16s=2, fcn8s=2, atonce=2, score_points=2)
