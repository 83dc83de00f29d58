"""Build a Net from a prototxt someone else wrote, refusing Python layers unless the user vouches for it.

A ``Python`` layer in a prototxt names a module and class that the runner imports and runs: a deploy
file downloaded with a caffemodel can therefore execute arbitrary code. The commands that build nets
from such files (infer, export, time, convert --model) check the parsed NetParameter first, so that
nothing is imported before the user has said ``--allow-python-layers``.
"""
from __future__ import annotations

import os
from typing import List, Optional, Union

from netspec import caffe_pb2
from netspec.filtering import filter_net
from runner.graph import load_net_param
from runner.net import Net

PathLike = Union[str, "os.PathLike[str]"]
NetFile = Union[PathLike, "caffe_pb2.NetParameter"]


def python_layers(net: "caffe_pb2.NetParameter") -> List["caffe_pb2.LayerParameter"]:
    """The net's Python layers, in order (V1 nets must be upgraded first)."""
    return [layer for layer in net.layer if layer.type == "Python"]


def load_net(model: NetFile, phase: int, weights: Optional[PathLike] = None,
             allow_python_layers: bool = False) -> Net:
    """A Net of ``model`` (prototxt path or NetParameter) in ``phase``, with ``weights`` if given.

    Raises ValueError naming the first Python layer this phase would build unless
    ``allow_python_layers``. The file is parsed
    once: the checked message is what gets built, except when Python layers are allowed, where the path
    is passed on so that their modules are found next to the prototxt, as pycaffe users expect.
    """
    param = load_net_param(model)
    where = "net" if isinstance(model, caffe_pb2.NetParameter) else os.fspath(model)
    found = python_layers(filter_net(param, phase))
    if found and not allow_python_layers:
        layer = found[0]
        raise ValueError(f"{where}: layer '{layer.name}' is a Python layer (module "
                         f"'{layer.python_param.module}', class '{layer.python_param.layer}'), which would run "
                         f"code named by the file; pass --allow-python-layers (allow_python_layers=True) "
                         f"only if you trust it")
    source = model if found and not isinstance(model, caffe_pb2.NetParameter) else param
    return Net(source, phase, weights=weights)
