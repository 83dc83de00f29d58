"""When an in-place layer (top == bottom, like FCN's every ReLU) may really overwrite its bottom's memory.

Caffe runs such layers in place; the runner computes a new tensor instead, because autograd needs the
old one and because a tensor may be seen from elsewhere (a Split top is a view of its bottom, an identity
layer hands its bottom on as its top, a Python layer may keep what it was given, a user's hook may hold a
blob's array). Without a gradient and without hooks, a fresh tensor that one built-in layer made in this
pass and that nothing else has been given can be overwritten: that saves an allocation and a pass over
memory per ReLU, which is what a hand-written PyTorch net gets from ``relu(inplace=True)``.
"""
from __future__ import annotations

from typing import Any, List, Set

import torch


class OwnedBlobs:
    """The blobs of one forward pass whose current tensor only the runner holds."""

    def __init__(self) -> None:
        self._owned: Set[str] = set()

    def may_overwrite(self, slot: Any) -> bool:
        """Whether ``slot`` is an in-place layer whose bottom may be written over."""
        return (slot.impl is not None and len(slot.bottoms) == 1 and slot.tops == slot.bottoms
                and slot.bottoms[0] in self._owned)

    def fresh(self, name: str) -> None:
        """Blob ``name`` now holds memory a fused step (runner.fusion) has just allocated for it."""
        self._owned.add(name)

    def record(self, slot: Any, inputs: List[torch.Tensor], tops: List[torch.Tensor]) -> None:
        """After ``slot`` ran on ``inputs`` (its bottoms and parameters) and its tops were stored: a top in
        fresh memory of its own becomes owned; a top sharing memory with an input (a view, an alias, a
        parameter handed on) or with another top, or kept by its layer (``keeps_tops``), is not, nor are
        the bottoms of such a layer; a Python layer's bottoms and tops are never owned."""
        if slot.impl is None:
            self._owned.difference_update(slot.bottoms)
            self._owned.difference_update(slot.tops)
            return
        inputs_memory = {_memory(tensor) for tensor in inputs}
        tops_memory = [_memory(top) for top in tops]
        for name, top, memory in zip(slot.tops, tops, tops_memory):
            if name in slot.bottoms and top is inputs[slot.bottoms.index(name)]:
                continue  # written in place: as owned as before
            if memory not in inputs_memory and tops_memory.count(memory) == 1 and not slot.impl.keeps_tops:
                self._owned.add(name)
            else:
                self._owned.discard(name)
                self._owned.difference_update(slot.bottoms)


def _memory(tensor: torch.Tensor) -> int:
    """Where a tensor's storage starts: equal for views, aliases and detached copies of one tensor."""
    return tensor.untyped_storage().data_ptr()
