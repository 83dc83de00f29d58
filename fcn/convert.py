"""``fcn convert``: weights between caffemodels (binary or HDF5) and tensor files (safetensors, PyTorch state_dict).

Tensor files name each blob ``<layer>/<index>``, e.g. ``conv1_1/0`` (weights) and ``conv1_1/1`` (bias):
exactly pycaffe's ``net.params[layer][index]``, and what the project's reference fixtures use. Layer
names may themselves contain ``/`` (GoogLeNet's ``inception_3a/1x1``); the index after the last ``/``
is what separates them. Values and dtypes (float32, or float64 from ``double_data``) pass through
unchanged, so a round trip is bit-exact. Shapes are the caffemodel's declared ones (legacy 4-D
``num/channels/height/width`` included) unless a prototxt is given, in which case they are the shapes
the net uses (a V1 InnerProduct weight 1x1xOxK becomes OxK).

A tensor file does not say which layers exist or what they are, so writing a caffemodel needs the
prototxt: its layers, with the tensors as their blobs, make the caffemodel. A ``.caffemodel.h5`` (any name
ending in ``.h5``) holds only names and arrays, so it is written without one; given the prototxt, it gets
a group for every layer, as Caffe's Net::ToHDF5 writes, and a tensor for a layer the net lacks is an error.
"""
from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from fcn.net_loading import PathLike, load_net
from netspec import caffe_pb2
from netspec.atomic import write_atomically
from netspec.caffemodel import load_caffemodel, save_caffemodel
from netspec.hdf5 import load_weights_hdf5, save_weights_hdf5
from runner.graph import load_net_param

Tensors = Dict[str, np.ndarray]

CAFFEMODEL, HDF5, SAFETENSORS, TORCH = "caffemodel", "caffemodel.h5", "safetensors", "torch"
_FORMATS = {".caffemodel": CAFFEMODEL, ".h5": HDF5, ".safetensors": SAFETENSORS, ".pt": TORCH, ".pth": TORCH}


def weights_format(path: PathLike) -> str:
    """The weights format a file name's suffix says: caffemodel, caffemodel.h5 (.h5), safetensors or torch
    (.pt/.pth)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{path}: unknown weights format {suffix!r} (use one of {', '.join(_FORMATS)})")
    return _FORMATS[suffix]


def tensor_key(layer: str, index: int) -> str:
    """The tensor-file name of blob ``index`` of ``layer``."""
    return f"{layer}/{index}"


def params_to_tensors(params: Mapping[str, List[np.ndarray]]) -> Tensors:
    """``{layer: [arrays]}`` (as caffemodels and pycaffe hold them) to flat ``{"layer/i": array}``."""
    return OrderedDict((tensor_key(layer, i), array) for layer, arrays in params.items()
                       for i, array in enumerate(arrays))


def tensors_to_params(tensors: Mapping[str, np.ndarray], source: str) -> Dict[str, List[np.ndarray]]:
    """Flat ``{"layer/i": array}`` back to ``{layer: [arrays]}``; every layer's indices must run 0..n-1."""
    indexed: Dict[str, Dict[int, np.ndarray]] = OrderedDict()
    for key, array in tensors.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise ValueError(f"{source}: tensor name {key!r} is not '<layer>/<index>' (e.g. 'conv1_1/0')")
        indexed.setdefault(layer, {})[int(index)] = array
    params: Dict[str, List[np.ndarray]] = OrderedDict()
    for layer, blobs in indexed.items():
        if sorted(blobs) != list(range(len(blobs))):
            raise ValueError(f"{source}: layer '{layer}' has blobs {sorted(blobs)}; expected 0..{len(blobs) - 1}")
        params[layer] = [blobs[i] for i in range(len(blobs))]
    return params


def read_tensors(path: PathLike, model: Optional[PathLike] = None, allow_python_layers: bool = False) -> Tensors:
    """The weights in any supported file as ``{"layer/i": array}``.

    With ``model`` (a prototxt), a caffemodel is read through the net: only its layers, in the shapes
    it uses. Tensor files are read without running code (safetensors; ``torch.load(weights_only=True)``).
    """
    kind = weights_format(path)
    if kind in (CAFFEMODEL, HDF5):
        if model is None and kind == HDF5:
            return OrderedDict((tensor_key(layer, i), blobs[i]) for layer, blobs in load_weights_hdf5(path).items()
                               for i in sorted(blobs))
        if model is None:
            return params_to_tensors(load_caffemodel(path)[1])
        net = load_net(model, caffe_pb2.TEST, weights=path, allow_python_layers=allow_python_layers)
        return params_to_tensors({layer: [blob.data.copy() for blob in blobs] for layer, blobs in net.params.items()})
    data = Path(path).read_bytes()
    if kind == SAFETENSORS:
        safetensors = _safetensors()
        try:
            return OrderedDict(safetensors.numpy.load(data))
        except safetensors.SafetensorError as err:
            raise ValueError(f"{path}: not a valid safetensors file ({err})") from None
    return _torch_tensors(data, path)


def _safetensors() -> ModuleType:
    """The safetensors package (with its numpy API), imported on first use: only this format needs it."""
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise ValueError("the safetensors format needs the 'safetensors' package (pip install safetensors)") from None
    return safetensors


def _torch_tensors(data: bytes, path: PathLike) -> Tensors:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a PyTorch tensor file torch.load can read safely ({err})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return OrderedDict((key, value.detach().cpu().numpy()) for key, value in state.items())


def write_tensors(path: PathLike, tensors: Mapping[str, np.ndarray], model: Optional[PathLike] = None,
                  source: str = "tensors") -> None:
    """Write ``{"layer/i": array}`` in the format ``path``'s suffix names, atomically. A caffemodel needs
    ``model``, the prototxt whose layers receive the blobs (a name it lacks is an error); ``source``
    names the tensors in errors."""
    kind = weights_format(path)
    if kind == CAFFEMODEL:
        if model is None:
            raise ValueError(f"{path}: writing a caffemodel needs the net's prototxt (--model) for its layers")
        params = tensors_to_params(tensors, source)
        try:
            save_caffemodel(path, load_net_param(model), params)
        except ValueError as err:
            raise ValueError(f"{model}: {err}") from None
    elif kind == HDF5:
        params = tensors_to_params(tensors, source)
        names = list(params) if model is None else [layer.name for layer in load_net_param(model).layer]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"{model}: params for layers the net does not have: {', '.join(unknown)}")
        save_weights_hdf5(path, [(name, dict(enumerate(params.get(name, ()))), None) for name in names])
    elif kind == SAFETENSORS:
        write_atomically(path, _safetensors().numpy.save({key: np.ascontiguousarray(v) for key, v in tensors.items()}))
    else:
        state = OrderedDict((key, torch.from_numpy(np.array(v))) for key, v in tensors.items())
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomically(path, buffer.getvalue())


def convert_weights(source: PathLike, target: PathLike, model: Optional[PathLike] = None,
                    allow_python_layers: bool = False) -> int:
    """Convert ``source`` to ``target`` (formats from their suffixes); returns the number of blobs."""
    if weights_format(source) == weights_format(target) == CAFFEMODEL:
        raise ValueError(f"{source} and {target} are both caffemodels; nothing to convert")
    tensors = read_tensors(source, model, allow_python_layers)
    write_tensors(target, tensors, model, source=str(source))
    return len(tensors)
