"""What a snapshot's caffemodel and solverstate leave out, so that a resumed run is exact anywhere and
not only at an epoch boundary: where each data layer is in its sample stream, with its random
generators' states, and torch's generators (Dropout); plus whether the snapshot's weights are finite.

It goes beside the solverstate as ``<prefix>_iter_<N>.datastate``, JSON that real Caffe never reads (it
restores from the solverstate alone, and so do we when the file is absent). It is written atomically
before the solverstate, so a solverstate on disk always has its complete datastate next to it.

A data layer takes part by having ``get_data_state()`` (JSON-ready) and ``set_data_state(state, where)``.
"""
from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from netspec.atomic import write_atomically

log = logging.getLogger(__name__)

FORMAT = 1
EXTENSION = ".datastate"
_SOLVERSTATE_SUFFIXES = (".solverstate.h5", ".solverstate")

Captured = Dict[str, Any]


def datastate_path(solverstate: str) -> str:
    """``<prefix>_iter_<N>.datastate`` for ``<prefix>_iter_<N>.solverstate`` (or ``.solverstate.h5``)."""
    for suffix in _SOLVERSTATE_SUFFIXES:
        if solverstate.endswith(suffix):
            return solverstate[: -len(suffix)] + EXTENSION
    return solverstate + EXTENSION


def stateful_layers(net: Any) -> List[Tuple[str, Any]]:
    """``(name, layer)`` of the net's layers that can say and take back where they are."""
    return [(name, layer) for name, layer in net.layer_dict.items()
            if callable(getattr(layer, "get_data_state", None)) and callable(getattr(layer, "set_data_state", None))]


def capture(layers: List[Tuple[str, Any]]) -> Captured:
    """The state right now: cheap enough to take at the start of every iteration."""
    state: Captured = {"layers": {name: layer.get_data_state() for name, layer in layers},
                       "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _encode(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _decode(text: Any, where: str) -> torch.Tensor:
    try:
        return torch.from_numpy(np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8).copy())
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: a random generator state is not valid base64 ({err})") from None


def save(path: str, state: Captured, finite_weights: bool) -> None:
    """Write ``state`` (from ``capture``) as JSON, atomically."""
    record = {"format": FORMAT, "finite_weights": finite_weights, "layers": state["layers"],
              "torch_rng": _encode(state["torch_rng"])}
    if "cuda_rng" in state:
        record["cuda_rng"] = [_encode(t) for t in state["cuda_rng"]]
    write_atomically(path, json.dumps(record, indent=1).encode())


def load(path: str) -> Optional[Dict[str, Any]]:
    """The record at ``path``, None when there is none; ValueError naming the file when it is damaged."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.read())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a data state file (JSON expected: {err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("layers"), dict):
        raise ValueError(f"{path}: not a data state file of format {FORMAT}")
    return record


def apply(record: Dict[str, Any], layers: List[Tuple[str, Any]], path: str) -> None:
    """Put every data layer and torch's generators where ``record`` (read from ``path``) says."""
    saved = record["layers"]
    names = [name for name, _ in layers]
    if sorted(saved) != sorted(names):
        raise ValueError(f"{path}: holds the data layers {sorted(saved)}, the net has {sorted(names)}")
    for name, layer in layers:
        layer.set_data_state(saved[name], f"{path} (layer '{name}')")
    try:
        torch.set_rng_state(_decode(record.get("torch_rng"), path))
    except RuntimeError as err:
        raise ValueError(f"{path}: bad torch generator state ({err})") from None
    cuda = record.get("cuda_rng")
    if cuda is not None:
        if torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_decode(text, path) for text in cuda])
        else:
            log.warning("%s: the run used %d CUDA device(s) and this one has %d: their generators (Dropout) "
                        "start afresh", path, len(cuda), torch.cuda.device_count() if torch.cuda.is_available() else 0)
