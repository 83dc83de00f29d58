"""Caffe's InsertSplits: give every consumer of a shared blob its own copy.

Caffe sums the gradients of a blob that feeds several layers by routing it
through a Split layer, and pycaffe users see the result: layer names like
``conv1_conv1_0_split`` in ``_layer_names`` and blobs like
``conv1_conv1_0_split_1`` in ``net.blobs``.  Reproducing the insertion exactly
(names, positions, which consumer gets which copy) keeps those names, the
blob dictionaries and saved caffemodels identical to Caffe's.

Rules, as in insert_splits.cpp: a blob is identified by the (layer, top
index) that wrote it last, so in-place layers (ReLU with top == bottom) hand
the name on; legacy net ``input`` blobs count as tops of a pseudo-layer
"input".  Each bottom that reads it counts once, and so does an explicit
non-zero ``loss_weight`` on the top.  Two or more uses get a Split layer right
after the producer (input splits go first); consumers get its tops in layer
order.  A loss use takes split top 0, which inherits the loss weight while the
producer's ``loss_weight`` list is cleared.  Only explicit ``loss_weight``
counts: Caffe inserts splits before layers exist, so the implicit weight 1 of
loss layers plays no part here.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Tuple

from netspec import caffe_pb2

_INPUT = -1  # pseudo layer index of the legacy net inputs
TopId = Tuple[int, int]  # (layer index, top index)


def split_layer_name(blob: str, producer: str, top_index: int) -> str:
    """The name Caffe gives the Split layer for top ``top_index`` (``blob``) of ``producer``."""
    return f"{blob}_{producer}_{top_index}_split"


def split_blob_name(blob: str, producer: str, top_index: int, copy: int) -> str:
    """The name of the ``copy``-th top of that Split layer."""
    return f"{split_layer_name(blob, producer, top_index)}_{copy}"


def insert_splits(net: "caffe_pb2.NetParameter") -> "caffe_pb2.NetParameter":
    """A copy of ``net`` with Caffe's Split layers inserted and consumers' bottoms renamed.

    ``net`` should already be filtered (netspec.filtering): Caffe splits the
    layers of one phase.  A bottom that neither a net input nor an earlier
    layer produces raises ValueError naming the layer and the blob.
    """
    source_of, uses, loss_weights = _count_uses(net)
    producer_names = {_INPUT: "input", **{i: layer.name for i, layer in enumerate(net.layer)}}
    next_copy: Counter = Counter()

    result = caffe_pb2.NetParameter()
    result.CopyFrom(net)
    result.ClearField("layer")
    for j, blob in enumerate(net.input):
        if uses[(_INPUT, j)] > 1:
            _add_split(result, blob, "input", j, uses[(_INPUT, j)], 0.0)
    for i, original in enumerate(net.layer):
        layer = result.layer.add()
        layer.CopyFrom(original)
        for j, blob in enumerate(layer.bottom):
            top_id = source_of[(i, j)]
            if uses[top_id] > 1:
                layer.bottom[j] = split_blob_name(blob, producer_names[top_id[0]], top_id[1], next_copy[top_id])
                next_copy[top_id] += 1
        for j, blob in enumerate(layer.top):
            if uses[(i, j)] > 1:
                loss_weight = loss_weights.get((i, j), 0.0)
                _add_split(result, blob, layer.name, j, uses[(i, j)], loss_weight)
                if loss_weight:
                    layer.ClearField("loss_weight")
                    next_copy[(i, j)] += 1
    return result


def _count_uses(net: "caffe_pb2.NetParameter") -> Tuple[Dict[TopId, TopId], Counter, Dict[TopId, float]]:
    """Which top each bottom reads, how often each top is used, and each top's explicit loss weight."""
    last_writer: Dict[str, TopId] = {blob: (_INPUT, j) for j, blob in enumerate(net.input)}
    source_of: Dict[TopId, TopId] = {}
    uses: Counter = Counter()
    loss_weights: Dict[TopId, float] = {}
    for i, layer in enumerate(net.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_writer:
                raise ValueError(f"layer {layer.name!r} bottom {j}: unknown blob {blob!r} "
                                 "(no net input or earlier layer produces it)")
            source_of[(i, j)] = last_writer[blob]
            uses[last_writer[blob]] += 1
        for j, blob in enumerate(layer.top):
            last_writer[blob] = (i, j)
        for blob, weight in zip(layer.top, layer.loss_weight):
            top_id = last_writer[blob]
            loss_weights[top_id] = weight
            if weight:
                uses[top_id] += 1
    return source_of, uses, loss_weights


def _add_split(net: "caffe_pb2.NetParameter", blob: str, producer: str, top_index: int,
               copies: int, loss_weight: float) -> None:
    """Append the Split layer for one shared top; with a loss weight, copy 0 carries it."""
    split = net.layer.add(name=split_layer_name(blob, producer, top_index), type="Split", bottom=[blob])
    split.top.extend(split_blob_name(blob, producer, top_index, k) for k in range(copies))
    if loss_weight:
        split.loss_weight.extend([loss_weight] + [0.0] * (copies - 1))
