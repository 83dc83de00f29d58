"""``python -m bench.fresh_demo``: time `make demo` as a new user meets it, from a fresh clone.

A new user clones the repository and types `make demo`: the time that counts includes making the .venv
and installing torch and the rest. This clones the committed HEAD into a scratch folder, runs `make demo`
there with no virtualenv active (so the Makefile makes its own .venv), and records the wall-clock time
of the whole command, the part spent before the first stage started (the install), the machine's load
before and after, and the nets' scores, in ``bench/demo_fresh_clone.json``, which BENCHMARKS.md and the
README quote. Run it on an otherwise idle machine: the figure is only as good as the idleness.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

from bench.measure import REPO, machine
from netspec.atomic import write_atomically

RECORD = os.path.join(REPO, "bench", "demo_fresh_clone.json")
FIRST_STAGE = "[1/5]"


def time_fresh_demo(scratch: str) -> Dict[str, Any]:
    """Clone, `make demo`, and the figures of that run (raises if the demo fails)."""
    clone = os.path.join(scratch, "fcn-caffe")
    subprocess.run(["git", "clone", "-q", REPO, clone], check=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    load_before = list(os.getloadavg())
    started = time.perf_counter()
    install_seconds: Optional[float] = None
    lines = []
    with subprocess.Popen(["make", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if install_seconds is None and line.startswith(FIRST_STAGE):
                install_seconds = time.perf_counter() - started
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"make demo failed ({proc.returncode}):\n{''.join(lines[-20:])}")
    with open(os.path.join(clone, "demo", "stages.json")) as handle:
        stages = json.load(handle)
    return {"seconds": round(total, 1), "install_seconds": round(install_seconds or 0.0, 1),
            "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "machine": machine(),
            "mean_iu": {name: stage["final"].get("mean_iu") for name, stage in stages.items() if stage["final"]}}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=RECORD, help="where the JSON record goes (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fcn-fresh-demo-") as scratch:
        record = time_fresh_demo(scratch)
    write_atomically(args.out, (json.dumps(record, indent=1) + "\n").encode())
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
