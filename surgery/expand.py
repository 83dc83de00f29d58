"""Grow a score layer to more classes (the release's ``surgery.expand_score``).

A net trained on N classes can seed one with N' > N classes (PASCAL's 21 into a larger label set):
the old classes keep their learned filters and biases in the first N outputs, and the new classes
keep whatever the new net was initialised with.
"""
from __future__ import annotations

from typing import Any


def expand_score(new_net: Any, new_layer: str, net: Any, layer: str) -> None:
    """Copy ``net``'s ``layer`` into the first outputs of ``new_net``'s ``new_layer``.

    Raises ValueError when a layer is missing, the blob counts differ, the new layer has fewer
    outputs, or any axis other than the output axis differs.
    """
    for owner, name in ((net, layer), (new_net, new_layer)):
        if name not in owner.params:
            raise ValueError(f"expand_score: net has no layer '{name}' with parameters")
    old_blobs, new_blobs = net.params[layer], new_net.params[new_layer]
    if len(old_blobs) != len(new_blobs):
        raise ValueError(f"expand_score: {layer} has {len(old_blobs)} blobs, {new_layer} has {len(new_blobs)}")
    for index, (old, new) in enumerate(zip(old_blobs, new_blobs)):
        old_shape, new_shape = tuple(old.shape), tuple(new.shape)
        if new_shape[0] < old_shape[0] or new_shape[1:] != old_shape[1:]:
            raise ValueError(f"expand_score: {layer} blob {index} {old_shape} does not fit into the first "
                             f"outputs of {new_layer} blob {index} {new_shape}")
    for old, new in zip(old_blobs, new_blobs):
        new.data[:old.shape[0]] = old.data
