"""Snapshot files: ``<prefix>_iter_<N>.caffemodel`` + ``.solverstate``, read and written as Caffe does.

The solverstate is Caffe's binary SolverState: the iteration, the multistep ``current_step``, the path
of the caffemodel written with it (``learned_net``, as given, so a relative prefix stays relative) and
the history blobs in learnable-parameter order. Files are replaced atomically (netspec.atomic): a
crash or a full disk mid-snapshot leaves the previous snapshot intact, never a truncated one that
would restore as garbage.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.caffemodel import load_solverstate, save_solverstate
from solvers.parameters import resolve_path


@dataclass
class SavedState:
    """What a solverstate holds, with ``learned_net`` resolved to a readable path ('' when absent)."""
    iteration: int
    current_step: int
    learned_net: str
    history: List[np.ndarray]


def snapshot_name(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's SnapshotFilename."""
    return f"{prefix}_iter_{iteration}{extension}"


def save_state(path: str, iteration: int, current_step: int, learned_net: str,
               history: Sequence[torch.Tensor]) -> None:
    """Write a binary SolverState atomically."""
    state = caffe_pb2.SolverState(iter=iteration, learned_net=learned_net, current_step=current_step)
    save_solverstate(path, state, [h.detach().cpu().numpy() for h in history])


def load_state(path: str) -> SavedState:
    """Read a binary SolverState. A relative ``learned_net`` is looked up from the working directory (as
    Caffe does) and then next to the solverstate."""
    if path.endswith(".h5"):
        raise ValueError(f"{path}: HDF5 solverstates are not supported; snapshot with snapshot_format: "
                         f"BINARYPROTO")
    state, history = load_solverstate(path)
    learned = ""
    if state.HasField("learned_net"):
        learned = resolve_path(state.learned_net, os.path.dirname(os.path.abspath(path)),
                               f"learned_net of {path}")
    return SavedState(state.iter, state.current_step, learned, history)
