"""Case 7: the FCN-8s forward and training iteration on a CUDA GPU, in float32, TF32 and bf16 autocast,
with images/s and peak GPU memory. Without CUDA it reports that no GPU was there and measures nothing."""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch

from bench.cases.training import random_label, write_solver
from bench.measure import interleaved
from bench.nets import fcn8s_deploy, random_image, randomize
from bench.sizes import Sizes
from netspec import caffe_pb2
from runner.device import set_mode_cpu, set_mode_gpu
from runner.net import Net
from solvers.api import get_solver

#: precision name -> (TF32 allowed, Net.set_speed keywords)
PRECISIONS = {
    "fp32": (False, {}),
    "tf32": (True, {}),
    "bf16_autocast": (False, dict(autocast=torch.bfloat16)),
}


def _tf32(allowed: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def _synchronized(fn: Callable[[], Any]) -> Callable[[], None]:
    def call() -> None:
        fn()
        torch.cuda.synchronize()
    return call


def _peak_gib(fn: Callable[[], Any]) -> float:
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    if not torch.cuda.is_available():
        return {"available": False, "note": "no CUDA device on this machine; nothing measured"}
    tf32_before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_mode_gpu()
    try:
        net = Net(fcn8s_deploy(sizes), caffe_pb2.TEST)
        randomize(net)
        net.blobs["data"].data[...] = random_image((1, 3, sizes.image, sizes.image)).numpy()
        forward: Dict[str, Any] = {}
        for name, (tf32, options) in PRECISIONS.items():
            _tf32(tf32)
            net.set_speed(**options)
            call = _synchronized(lambda: net.forward())
            with torch.no_grad():
                timing = interleaved({name: call}, sizes.forward_reps * 4)[name]
                forward[name] = {**timing.as_dict(), "images_per_second": 1.0 / timing.median,
                                 "peak_gib": _peak_gib(call)}
        net.set_speed()
        solver = get_solver(write_solver(sizes, scratch))
        randomize(solver.net)
        solver.net.blobs["data"].data[...] = random_image((1, 3, sizes.image, sizes.image)).numpy()
        solver.net.blobs["label"].data[...] = random_label(sizes).numpy()
        training: Dict[str, Any] = {}
        for name in ("fp32", "tf32"):
            _tf32(PRECISIONS[name][0])
            call = _synchronized(lambda: solver.step(1))
            timing = interleaved({name: call}, sizes.train_reps * 4)[name]
            training[name] = {**timing.as_dict(), "images_per_second": 1.0 / timing.median,
                              "peak_gib": _peak_gib(call)}
        return {"available": True, "device": torch.cuda.get_device_name(0), "forward": forward,
                "training": training}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        set_mode_cpu()
