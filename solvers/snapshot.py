"""Snapshot files: ``<prefix>_iter_<N>.caffemodel`` + ``.solverstate`` (``snapshot_format: BINARYPROTO``) or
``.caffemodel.h5`` + ``.solverstate.h5`` (``HDF5``), read and written as Caffe does.

The solverstate holds the iteration, the multistep ``current_step``, the path of the caffemodel written
with it (``learned_net``, as given, so a relative prefix stays relative) and the history blobs in
learnable-parameter order: a binary SolverState message, or the same in Caffe's HDF5 layout
(netspec.hdf5). Like Caffe's Solver::Restore, a file name ending in ``.h5`` is read as HDF5. Files are
replaced atomically (netspec.atomic): a crash or a full disk mid-snapshot leaves the previous snapshot
intact, never a truncated one that would restore as garbage.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.caffemodel import load_solverstate, save_solverstate
from netspec.hdf5 import load_solverstate_hdf5, save_solverstate_hdf5
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
               history: Sequence[torch.Tensor], hdf5: bool = False) -> None:
    """Write a solverstate atomically: a binary SolverState, or with ``hdf5`` Caffe's HDF5 layout."""
    arrays = [h.detach().cpu().numpy() for h in history]
    if hdf5:
        save_solverstate_hdf5(path, iteration, current_step, learned_net, arrays)
        return
    state = caffe_pb2.SolverState(iter=iteration, learned_net=learned_net, current_step=current_step)
    save_solverstate(path, state, arrays)


def load_state(path: str) -> SavedState:
    """Read a solverstate: HDF5 when the name ends in ``.h5`` (Caffe's rule), binary otherwise. A relative
    ``learned_net`` is looked up from the working directory (as Caffe does) and then next to the
    solverstate."""
    if path.endswith(".h5"):
        iteration, current_step, learned_net, history = load_solverstate_hdf5(path)
    else:
        state, history = load_solverstate(path)
        iteration, current_step = state.iter, state.current_step
        learned_net = state.learned_net if state.HasField("learned_net") else None
    learned = ""
    if learned_net is not None:
        learned = resolve_path(learned_net, os.path.dirname(os.path.abspath(path)), f"learned_net of {path}")
    return SavedState(iteration, current_step, learned, history)
