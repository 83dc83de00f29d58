"""Caffe's global compute mode (``set_mode_cpu``/``set_mode_gpu``/``set_device``) mapped onto torch devices.

Caffe keeps one process-wide mode that every Net follows at its next forward; we keep the same: a Net
reads ``current_device()`` whenever it runs and moves itself if the mode changed since its last run.
"""
from __future__ import annotations

import os
import warnings

import torch

from runner import caffe_rng

_state = {"gpu": False, "device_id": 0}


def set_mode_cpu() -> None:
    """Run every net on the CPU from the next forward on."""
    _state["gpu"] = False


#: Set to 1 to let ``set_mode_gpu`` continue on the CPU (with a warning) where no CUDA device exists.
CPU_FALLBACK_VARIABLE = "FCN_CAFFE_GPU_FALLBACK_TO_CPU"


def set_mode_gpu() -> None:
    """Run every net on the selected CUDA device. Without one, refuse, as real Caffe aborts at the first
    GPU forward ("Cannot use GPU in CPU-only Caffe"): a script that asked for a GPU and silently ran on
    the CPU would take hours where the user expected minutes. Setting FCN_CAFFE_GPU_FALLBACK_TO_CPU=1
    runs such scripts on the CPU anyway, with a warning."""
    if not torch.cuda.is_available():
        if os.environ.get(CPU_FALLBACK_VARIABLE) == "1":
            warnings.warn("set_mode_gpu: no CUDA device; running on the CPU "
                          f"({CPU_FALLBACK_VARIABLE}=1)", RuntimeWarning, stacklevel=2)
            return
        raise RuntimeError("set_mode_gpu: PyTorch sees no CUDA device (torch.cuda.is_available() is False); "
                           "call set_mode_cpu() instead, install a CUDA build of torch, or set "
                           f"{CPU_FALLBACK_VARIABLE}=1 to run GPU scripts on the CPU")
    _state["gpu"] = True


def set_device(device_id: int) -> None:
    """Select the CUDA device used in GPU mode (Caffe's ``set_device``)."""
    if device_id < 0:
        raise ValueError(f"set_device: device id must be >= 0, got {device_id}")
    _state["device_id"] = int(device_id)


def gpu_available() -> bool:
    return torch.cuda.is_available()


def current_device() -> torch.device:
    """The torch device nets run on now."""
    if _state["gpu"] and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if _state["device_id"] >= count:
            raise ValueError(f"set_device({_state['device_id']}): only {count} CUDA device(s) present")
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


def set_random_seed(seed: int) -> None:
    """Seed every random source a net uses, as Caffe's ``set_random_seed``: Caffe's own generator
    (``runner.caffe_rng``: fillers and the seeds of data layers draw Caffe's very numbers from it) and
    torch's (Dropout and whatever else runs on torch)."""
    torch.manual_seed(int(seed))
    caffe_rng.seed(seed)


def caffe_rng_seed() -> int:
    """A seed for a component's own generator (Caffe's ``caffe_rng_rand()``): the next number of Caffe's
    generator once ``set_random_seed`` seeded it, else one from torch's, so that seeding once makes every
    random choice of a net repeatable."""
    stream = caffe_rng.stream()
    if stream is not None:
        return stream.rand()
    return int(torch.randint(0, 2 ** 31 - 1, (1,)).item())
