"""The parameters a solver updates, in Caffe's order, with their lr_mult and decay_mult.

Caffe's Net keeps ``learnable_params``: every parameter blob once, in layer order, a blob shared by name
counted only at its first (owning) layer. That order is the order of the history blobs in a
``.solverstate``, so it must be reproduced exactly for snapshots to load in real Caffe and real Caffe's
snapshots to load here. A sharing layer may state lr_mult/decay_mult the owner left unset; an explicit
value on both sides must agree (Caffe's "Shared param has mismatched lr_mult").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from runner.blob import Blob


@dataclass
class Learnable:
    """One learnable parameter blob: where it first appears, and its multipliers."""
    blob: Blob
    layer: str
    index: int
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    lr_given: bool = False
    decay_given: bool = False

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.index}"


def learnable_params(net: Any) -> List[Learnable]:
    """The learnable parameters of a runner Net (its ``graph.slots``), owners first-come."""
    found: Dict[int, Learnable] = {}
    for slot in net.graph.slots:
        for index, blob in enumerate(slot.param_blobs):
            spec = slot.layer_param.param[index] if index < len(slot.layer_param.param) else None
            entry = found.get(id(blob))
            if entry is None:
                entry = found[id(blob)] = Learnable(blob, slot.name, index)
            if spec is not None:
                _merge(entry, spec, slot.name, index)
    return list(found.values())


def _merge(entry: Learnable, spec: Any, layer: str, index: int) -> None:
    """Take the multipliers a ParamSpec sets; a second explicit value must equal the first."""
    for field in ("lr_mult", "decay_mult"):
        if not spec.HasField(field):
            continue
        given_flag = "lr_given" if field == "lr_mult" else "decay_given"
        value = getattr(spec, field)
        if getattr(entry, given_flag) and getattr(entry, field) != value:
            raise ValueError(f"shared param '{spec.name}' has mismatched {field}: {getattr(entry, field)} at "
                             f"{entry.name}, {value} at {layer}/{index}")
        setattr(entry, field, value)
        setattr(entry, given_flag, True)
