"""Weights in and out of a built net in Caffe's caffemodel format.

Loading follows Caffe's CopyTrainedLayersFrom: match by layer name, ignore layers the net lacks, demand
the same number of blobs and the same shapes (legacy num/channels/height/width blobs count as equal when
they match the target shape padded with leading 1s, as released VGG16/FCN models need). Two differences,
both where Caffe loses weights without a word: layers sharing a name are matched in order (Caffe puts
every such entry into the last of them), and the net's learnable layers that the file does not cover
are named in a warning (they keep their fillers). Saving follows Net::ToProto, layer by layer, so that
real Caffe (and our own loader) reads the file back bit for bit.
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, List, Sequence, Set, Tuple

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.atomic import write_atomically
from netspec.caffemodel import fill_layer_blobs, load_caffemodel_layers


def _legacy_equal(source: Tuple[int, ...], target: Tuple[int, ...]) -> bool:
    """Caffe's ShapeEquals for legacy 4-D blobs: (1, 1, O, K) holds an (O, K) InnerProduct weight."""
    if len(source) != 4 or len(target) > 4:
        return False
    return tuple(source) == (1,) * (4 - len(target)) + tuple(target)


def copy_weights_from(graph, filename: str, adopt: bool = False) -> Set[int]:
    """Copy every blob of the caffemodel's layers into the same-named layers of ``graph``; returns the ids
    of the tensors it wrote.

    ``adopt`` (a net being built, whose parameters nobody holds yet): CPU float32 parameters take the
    decoded arrays themselves as their storage instead of a copy. The file's bytes are then the weights:
    no second copy, no page faults writing one, peak memory about the file's size.
    """
    _, layers = load_caffemodel_layers(filename)
    slots: Dict[str, List] = {}
    for slot in graph.slots:
        slots.setdefault(slot.name, []).append(slot)
    seen: Dict[str, int] = {}
    covered: Set[int] = set()
    loaded: Set[int] = set()
    for layer_name, arrays in layers:
        same_name = slots.get(layer_name)
        if not same_name:
            continue
        occurrence = seen.get(layer_name, 0)
        seen[layer_name] = occurrence + 1
        slot = same_name[min(occurrence, len(same_name) - 1)]
        covered.add(id(slot))
        loaded |= _copy_layer(filename, slot, arrays, adopt)
    missed = [slot.name for slot in graph.slots if _target_blobs(slot) and id(slot) not in covered]
    if missed and covered:
        shown = ", ".join(missed[:8]) + (f" and {len(missed) - 8} more" if len(missed) > 8 else "")
        net = f" of net '{graph.name}'" if graph.name else ""
        warnings.warn(f"{filename} holds no weights for {len(missed)} learnable layer(s){net}: {shown}; they keep "
                      f"their fillers", UserWarning, stacklevel=3)
    return loaded


def _copy_layer(filename: str, slot, arrays: Sequence[np.ndarray], adopt: bool) -> Set[int]:
    targets = _target_blobs(slot)
    if len(arrays) != len(targets):
        raise ValueError(f"{filename}: layer '{slot.name}' has {len(arrays)} blobs, the net's layer "
                         f"'{slot.name}' ({slot.type}) has {len(targets)}")
    loaded: Set[int] = set()
    for index, (array, blob) in enumerate(zip(arrays, targets)):
        want = blob.shape
        if tuple(array.shape) != want and not _legacy_equal(tuple(array.shape), want):
            raise ValueError(f"{filename}: cannot copy param {index} of layer '{slot.name}': shape mismatch, "
                             f"caffemodel has {tuple(array.shape)}, net expects {want} (rename the layer to "
                             f"learn it from scratch)")
        values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).reshape(want))
        target = blob.tensor()
        with torch.no_grad():
            if adopt and isinstance(target, torch.nn.Parameter) and target.device.type == "cpu" \
                    and array.dtype == np.float32:
                target.data = values
            else:
                target.copy_(values)
        loaded.add(id(target))
    return loaded


def _target_blobs(slot) -> List:
    if slot.python_layer is not None:
        return list(slot.python_layer.blobs)
    return list(slot.param_blobs)


def net_to_proto(graph) -> "caffe_pb2.NetParameter":
    """The instantiated net with its weights, as Caffe's Net::ToProto writes it (every layer, its phase,
    loss weights, each layer's own blobs: layers sharing a name keep theirs)."""
    net = caffe_pb2.NetParameter()
    net.name = graph.name
    for slot in graph.slots:
        layer = net.layer.add()
        layer.CopyFrom(slot.layer_param)
        layer.ClearField("blobs")
        blobs = _target_blobs(slot)
        if blobs:
            fill_layer_blobs(layer, [blob.tensor().detach().cpu().numpy() for blob in blobs])
    return net


def save_caffemodel(net: "caffe_pb2.NetParameter", filename: str) -> None:
    """Write a caffemodel atomically."""
    write_atomically(os.fspath(filename), net.SerializeToString())
