"""Data-parallel training with torch.distributed, keeping Caffe's multi-GPU semantics.

Caffe's multi-GPU training runs one solver per device on its own shard of the data, sums the parameter
gradients across devices when they are ready and divides by the number of solvers, then every solver
applies the same update. So N processes at iter_size k train like one process at iter_size N*k. We do
the same with one all-reduce per parameter gradient inside the solver's ``on_gradients_ready`` callback,
so clipping, weight decay and the update rule see exactly the averaged gradient.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from solvers.learnable import learnable_params


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands in the run: ``rank`` 0 logs, scores and snapshots."""
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_from_environment() -> ProcessGroup:
    """Join the process group that ``torchrun`` describes in the environment (NCCL when CUDA is present,
    gloo on CPU); a plain ``python solve.py`` is a group of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        from runner.device import set_device, set_mode_gpu
        set_device(int(os.environ.get("LOCAL_RANK", "0")))
        set_mode_gpu()
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def gradient_averager(solver: Any, group: ProcessGroup) -> Callable[[float], float]:
    """A function to call when gradients are ready: it averages every learnable gradient across the
    group and returns the sum over ranks of the ``flag`` each passes (the loop passes 1 for a non-finite
    loss, so that every rank stops together instead of waiting forever on the one that stopped). It also
    starts all ranks from rank 0's weights, as Caffe broadcasts the root solver's net."""
    if not group.active:
        return lambda flag: flag
    entries = learnable_params(solver.net)
    with torch.no_grad():
        for entry in entries:
            dist.broadcast(entry.blob.tensor(), src=0)

    def average(flag: float) -> float:
        diffs = [entry.blob.diff_tensor() for entry in entries]
        flat = torch.cat([d.reshape(-1) for d in diffs] + [torch.full((1,), flag, device=diffs[0].device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        total = float(flat[-1])
        flat /= group.world_size
        offset = 0
        with torch.no_grad():
            for d in diffs:
                d.copy_(flat[offset:offset + d.numel()].view_as(d))
                offset += d.numel()
        return total

    return average


def barrier(group: ProcessGroup) -> None:
    """Wait for every rank (e.g. while rank 0 scores and snapshots)."""
    if group.active:
        dist.barrier()


def shutdown(group: ProcessGroup) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()
