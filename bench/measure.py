"""Timing and the record of where it was measured.

Functions that are compared are timed round-robin (A, B, C, A, B, C, ...) after a warm-up round, so that
load from other processes falls on all of them alike, and each is summarised by its median. Each call's
CPU time (all threads, user + system) is kept beside its wall time: on a machine shared with other work,
wall time includes the moments the process was not running, CPU time mostly does not.
"""
from __future__ import annotations

import importlib
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
import torch

from runner.host_memory import freed_memory_kept

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Timing:
    """Wall-clock and CPU seconds of the repetitions of one function."""
    samples: List[float]
    cpu_samples: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples)

    def as_dict(self) -> Dict[str, Any]:
        return {"median_s": self.median, "best_s": self.best, "cpu_median_s": self.cpu_median,
                "samples_s": self.samples, "cpu_samples_s": self.cpu_samples}


def interleaved(functions: Mapping[str, Callable[[], Any]], reps: int, warmup: int = 1) -> Dict[str, Timing]:
    """Time every function ``reps`` times, taking turns, after ``warmup`` untimed rounds (0 where the caller
    has just run each of them once anyway)."""
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    samples: Dict[str, Timing] = {name: Timing([], []) for name in functions}
    for _ in range(reps):
        for name, fn in functions.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            samples[name].samples.append(time.perf_counter() - start)
            samples[name].cpu_samples.append(time.process_time() - cpu_start)
    return samples


def big_convolution() -> Tuple[Callable[[], Any], float]:
    """One large 3x3 convolution (256 -> 256 channels on 100x100) and its FLOPs: what this machine's
    convolution library reaches when nothing gets in its way, the yardstick for whole nets. Time it in
    the same round as the nets it is compared with, so that it sees the same load."""
    x = torch.randn(1, 256, 100, 100)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return conv(x)
    return call, 2.0 * 256 * 256 * 9 * 100 * 100


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return "absent"


def machine() -> Dict[str, Any]:
    """What the figures were measured on and with."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        # the benchmark's own outputs do not count: a --merge run finds the last run's there
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                         ":!BENCHMARKS.md", ":!bench/results.json")),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(memory / 2**30, 1),
        "load_average_at_start": list(os.getloadavg()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": _version("cv2"),
        "protobuf": _version("google.protobuf"),
        "freed_memory_kept": freed_memory_kept(),
    }
