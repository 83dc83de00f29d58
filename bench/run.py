"""``python -m bench.run``: run the cases, write the raw figures (JSON) and BENCHMARKS.md.

``--quick`` runs every case on toy sizes (seconds, for the smoke test); ``--cases`` picks some, and ``--merge``
keeps the figures of the others from the last run's JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from dataclasses import asdict
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

import torch

from bench import fresh_demo, report
from bench.cases import amortize, data, dilation, forward, gpu, loading, scoring, training, zoo
from bench.measure import REPO, machine
from bench.sizes import FULL, QUICK, Sizes
from netspec.atomic import write_atomically
from runner.host_memory import keep_freed_memory, release_freed_memory

CASES: Dict[str, ModuleType] = {"forward": forward, "training": training, "amortize": amortize,
                                "loading": loading, "data": data, "scoring": scoring, "gpu": gpu,
                                "dilation": dilation, "zoo": zoo}


def run_cases(sizes: Sizes, names: Sequence[str] = tuple(CASES), threads: Optional[int] = None) -> Dict[str, Any]:
    """Every named case's figures, with the machine they ran on. ``threads`` sets torch's intra-op threads
    for the run (restored afterwards); None keeps torch's default, one per core."""
    unknown = set(names) - set(CASES)
    if unknown:
        raise ValueError(f"unknown case(s) {sorted(unknown)}; known: {', '.join(CASES)}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        results: Dict[str, Any] = {"machine": machine(), "sizes": asdict(sizes), "cases": {}, "case_seconds": {}}
        for name in names:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix=f"fcn-bench-{name}-") as scratch:
                results["cases"][name] = CASES[name].run(sizes, scratch)
            results["case_seconds"][name] = time.perf_counter() - start
            gc.collect()  # the case's nets hold reference cycles: free them now, then hand the memory back,
            release_freed_memory()  # so that the next case does not have to squeeze around it
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
        return results
    finally:
        torch.set_num_threads(before)


def merged(earlier: Dict[str, Any], later: Dict[str, Any]) -> Dict[str, Any]:
    """``later``'s figures over ``earlier``'s: the cases ``later`` ran replace theirs, the others are kept, each
    with the record of the machine and run that measured it (``case_machines``), which the report names. A
    long benchmark can so be run a few cases at a time."""
    machines = dict(earlier.get("case_machines") or {name: earlier["machine"] for name in earlier["cases"]})
    machines.update({name: later["machine"] for name in later["cases"]})
    return {**later, "cases": {**earlier["cases"], **later["cases"]},
            "case_seconds": {**earlier.get("case_seconds", {}), **later["case_seconds"]}, "case_machines": machines,
            "kept_cases": [name for name in earlier["cases"] if name not in later["cases"]]}


def write(results: Dict[str, Any], markdown_path: str, json_path: str) -> None:
    """BENCHMARKS.md and the raw JSON, each replaced atomically."""
    write_atomically(json_path, (json.dumps(results, indent=1) + "\n").encode())
    write_atomically(markdown_path, report.render(results, fresh_demo_record()).encode())


def fresh_demo_record() -> Optional[Dict[str, Any]]:
    """bench/fresh_demo.py's last record, if it was run."""
    if not os.path.exists(fresh_demo.RECORD):
        return None
    with open(fresh_demo.RECORD) as handle:
        return json.load(handle)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark the runner, solver, loaders and metrics.")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks the harness, not the speed")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: %(default)s")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--markdown", default=os.path.join(REPO, "BENCHMARKS.md"))
    parser.add_argument("--json", default=os.path.join(REPO, "bench", "results.json"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the figures of the cases not run from the existing --json (the report says so)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="keep freed host memory for reuse (runner.host_memory, as the fcn commands do); "
                             "default: glibc's defaults, as a pycaffe script runs")
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        keep_freed_memory()  # every contender runs in this process and shares it
    results = run_cases(QUICK if args.quick else FULL, [c for c in args.cases.split(",") if c], args.threads)
    if args.merge and os.path.exists(args.json):
        with open(args.json) as handle:
            results = merged(json.load(handle), results)
    write(results, args.markdown, args.json)
    print(report.render(results, fresh_demo_record()))


if __name__ == "__main__":
    main()
