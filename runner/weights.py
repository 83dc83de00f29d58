"""Weights in and out of a built net in Caffe's caffemodel format.

Loading follows Caffe's CopyTrainedLayersFrom: match by layer name, ignore (and log) layers the net lacks, demand
the same number of blobs and the same shapes (legacy num/channels/height/width blobs count as equal when
they match the target shape padded with leading 1s, as released VGG16/FCN models need). Saving follows
Net::ToProto so that real Caffe (and our own loader) reads the file back bit for bit.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Set, Tuple

import numpy as np
import torch

from netspec import caffe_pb2, glog
from netspec.caffemodel import load_caffemodel, save_caffemodel as _write_caffemodel


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
    source, params = load_caffemodel(filename)
    slots = {slot.name: slot for slot in graph.slots}
    for layer in [*source.layer, *source.layers]:
        if layer.name not in slots:
            glog.info("net.cpp:746", "Ignoring source layer %s", layer.name)
    loaded: Set[int] = set()
    for layer_name, arrays in params.items():
        slot = slots.get(layer_name)
        if slot is None:
            continue
        targets = _target_blobs(slot)
        if len(arrays) != len(targets):
            raise ValueError(f"{filename}: layer '{layer_name}' has {len(arrays)} blobs, the net's layer "
                             f"'{layer_name}' ({slot.type}) has {len(targets)}")
        for index, (array, blob) in enumerate(zip(arrays, targets)):
            want = blob.shape
            if tuple(array.shape) != want and not _legacy_equal(tuple(array.shape), want):
                raise ValueError(f"{filename}: cannot copy param {index} of layer '{layer_name}': shape mismatch, "
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


def net_to_proto(graph) -> Tuple["caffe_pb2.NetParameter", Dict[str, List[np.ndarray]]]:
    """The instantiated net as Caffe's Net::ToProto writes it (every layer, its phase, loss weights), and
    the blob arrays by layer name."""
    net = caffe_pb2.NetParameter()
    net.name = graph.name
    arrays: Dict[str, List[np.ndarray]] = {}
    for slot in graph.slots:
        layer = net.layer.add()
        layer.CopyFrom(slot.layer_param)
        layer.ClearField("blobs")
        blobs = _target_blobs(slot)
        if blobs:
            arrays[slot.name] = [blob.tensor().detach().cpu().numpy() for blob in blobs]
    return net, arrays


def save_caffemodel(proto_and_arrays: Tuple["caffe_pb2.NetParameter", Dict[str, Sequence[np.ndarray]]],
                    filename: str) -> None:
    """Write a caffemodel atomically."""
    net, arrays = proto_and_arrays
    _write_caffemodel(os.fspath(filename), net, arrays)
