"""Weights in and out of a built net in Caffe's caffemodel formats, binary protobuf and HDF5.

Loading follows Caffe's CopyTrainedLayersFrom: a file with HDF5's signature is read as a ``.caffemodel.h5``
(whatever its name, as Caffe's ``H5Fis_hdf5`` test), anything else as a binary caffemodel. Both match by
layer name and ignore layers the net lacks. Binary: the same number of blobs and the same shapes (legacy
num/channels/height/width blobs count as equal when they match the target shape padded with leading 1s,
as released VGG16/FCN models need). HDF5 (CopyTrainedLayersFromHDF5): no more blobs than the layer has,
a missing one only where the layer shares it from another layer, and exactly the same shapes. Two
differences from Caffe, both where Caffe loses weights without a word: layers sharing a name are matched
in order (Caffe puts every such entry into the last of them), and the net's learnable layers that a
binary file does not cover are named in a warning (they keep their fillers). Saving follows Net::ToProto
(layer by layer) and Net::ToHDF5 so that real Caffe (and our own loader) reads the file back bit for bit.
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from netspec import caffe_pb2, glog
from netspec.atomic import write_atomically
from netspec.caffemodel import fill_layer_blobs, load_caffemodel_layers
from netspec.hdf5 import LayerBlobs, is_hdf5, load_weights_hdf5, save_weights_hdf5


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
    filename = os.fspath(filename)
    if is_hdf5(filename) or filename.endswith(".h5"):
        return copy_weights_from_hdf5(graph, filename, adopt)
    source, layers = load_caffemodel_layers(filename)
    slots: Dict[str, List] = {}
    for slot in graph.slots:
        slots.setdefault(slot.name, []).append(slot)
    for layer in [*source.layer, *source.layers]:
        if layer.name not in slots:
            glog.info("net.cpp:746", "Ignoring source layer %s", layer.name)
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
        _copy_layer(filename, slot, arrays, adopt, loaded)
    missed = [slot.name for slot in graph.slots if _target_blobs(slot) and id(slot) not in covered]
    if missed and covered:
        shown = ", ".join(missed[:8]) + (f" and {len(missed) - 8} more" if len(missed) > 8 else "")
        net = f" of net '{graph.name}'" if graph.name else ""
        warnings.warn(f"{filename} holds no weights for {len(missed)} learnable layer(s){net}: {shown}; they keep "
                      f"their fillers", UserWarning, stacklevel=3)
    return loaded


def _copy_layer(filename: str, slot, arrays: Sequence[np.ndarray], adopt: bool, loaded: Set[int]) -> None:
    targets = _target_blobs(slot)
    if len(arrays) != len(targets):
        raise ValueError(f"{filename}: layer '{slot.name}' has {len(arrays)} blobs, the net's layer "
                         f"'{slot.name}' ({slot.type}) has {len(targets)}")
    for index, (array, blob) in enumerate(zip(arrays, targets)):
        want = blob.shape
        if tuple(array.shape) != want and not _legacy_equal(tuple(array.shape), want):
            raise ValueError(_shape_mismatch(filename, slot.name, index, "caffemodel", array.shape, want))
        _set_blob(blob, array, adopt, loaded)


def copy_weights_from_hdf5(graph, filename: str, adopt: bool = False) -> Set[int]:
    """Copy the weights of a ``.caffemodel.h5`` into ``graph`` (pycaffe's ``load_hdf5``; ``copy_weights_from``
    comes here for HDF5 files); returns the ids of the tensors it wrote. ``adopt`` as there."""
    layers = load_weights_hdf5(filename)
    slots = {slot.name: slot for slot in graph.slots}
    borrowed = _borrowed_blobs(graph)
    loaded: Set[int] = set()
    for layer_name, blobs in layers.items():
        slot = slots.get(layer_name)
        if slot is None:
            glog.info("net.cpp:801", "Ignoring source layer %s", layer_name)
            continue
        targets = _target_blobs(slot)
        extra = sorted(index for index in blobs if index >= len(targets))
        if extra:
            raise ValueError(f"{filename}: layer '{layer_name}' has blob data/{layer_name}/{extra[0]}, the net's "
                             f"layer '{layer_name}' ({slot.type}) has {len(targets)} blobs")
        for index, blob in enumerate(targets):
            array = blobs.get(index)
            if array is None:
                if (layer_name, index) in borrowed:
                    continue  # shared from an earlier layer, which the file holds it under
                raise ValueError(f"{filename}: layer '{layer_name}' has no blob data/{layer_name}/{index}, the "
                                 f"net's layer '{layer_name}' ({slot.type}) has {len(targets)} blobs")
            if tuple(array.shape) != blob.shape:
                raise ValueError(_shape_mismatch(filename, layer_name, index, "the HDF5 file", array.shape,
                                                 blob.shape))
            _set_blob(blob, array, adopt, loaded)
    return loaded


def _shape_mismatch(filename: str, layer_name: str, index: int, source: str, got: Tuple[int, ...],
                    want: Tuple[int, ...]) -> str:
    return (f"{filename}: cannot copy param {index} of layer '{layer_name}': shape mismatch, {source} has "
            f"{tuple(got)}, net expects {tuple(want)} (rename the layer to learn it from scratch)")


def _set_blob(blob, array: np.ndarray, adopt: bool, loaded: Set[int]) -> None:
    """Put ``array`` into a parameter blob: adopted as its storage where allowed, else copied."""
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).reshape(blob.shape))
    target = blob.tensor()
    with torch.no_grad():
        if adopt and isinstance(target, torch.nn.Parameter) and target.device.type == "cpu" \
                and array.dtype == np.float32:
            target.data = values
        else:
            target.copy_(values)
    loaded.add(id(target))


def _borrowed_blobs(graph) -> Set[Tuple[str, int]]:
    """(layer, blob index) of the parameters a layer shares from an earlier layer, which owns them (Caffe's
    param_owners_ != -1)."""
    owned: Set[int] = set()
    borrowed: Set[Tuple[str, int]] = set()
    for slot in graph.slots:
        for index, blob in enumerate(_target_blobs(slot)):
            key = id(blob.tensor())
            if key in owned:
                borrowed.add((slot.name, index))
            owned.add(key)
    return borrowed


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
            fill_layer_blobs(layer, [_host(blob.tensor()) for blob in blobs])
    return net


def save_weights_to_hdf5(graph, filename: str, write_diff: bool = False) -> None:
    """Write a ``.caffemodel.h5`` (atomically) as Net::ToHDF5: a group per layer with the blobs it owns;
    ``write_diff`` adds every blob's diff, shared ones included."""
    borrowed = _borrowed_blobs(graph)
    layers: List[Tuple[str, LayerBlobs, Optional[LayerBlobs]]] = []
    for slot in graph.slots:
        blobs = _target_blobs(slot)
        data = {i: _host(blob.tensor()) for i, blob in enumerate(blobs) if (slot.name, i) not in borrowed}
        diffs = {i: _host(blob.diff_tensor()) for i, blob in enumerate(blobs)} if write_diff else None
        layers.append((slot.name, data, diffs))
    save_weights_hdf5(filename, layers)


def _host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def save_caffemodel(net: "caffe_pb2.NetParameter", filename: str) -> None:
    """Write a caffemodel atomically."""
    write_atomically(os.fspath(filename), net.SerializeToString())
