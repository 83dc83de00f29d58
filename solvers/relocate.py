"""Run an experiment folder's solver against another data root and output folder (``fcn train --data``).

The release's prototxts carry their dataset folders inside the data layers' ``param_str``. Rather than
editing them, we write a resolved copy of the solver and its nets into the output folder with the data
layers pointed at the new root (in the layout the release used, see data_layers.layout) and snapshots
going to ``<out>/snapshot/``. The copy doubles as the exact record of what was trained.
"""
from __future__ import annotations

import ast
import os
from typing import Optional

from data_layers.catalog import LAYERS
from data_layers.layout import dataset_params
from netspec import caffe_pb2
from netspec.prototxt import read_prototxt, write_prototxt
from solvers.parameters import read_solver_parameter, resolve_path


def _dataset_kind(python_param: "caffe_pb2.PythonParameter") -> Optional[str]:
    for kind, cls in LAYERS.items():
        if cls.__module__ == python_param.module and cls.__name__ == python_param.layer:
            return kind
    return None


def point_data_layers(net: "caffe_pb2.NetParameter", data_root: str) -> int:
    """Set the dataset folder keys of every known data layer in ``net`` to ``data_root``'s layout, in place.
    Returns how many layers were changed."""
    changed = 0
    for layer in net.layer:
        if layer.type != "Python":
            continue
        kind = _dataset_kind(layer.python_param)
        if kind is None:
            continue
        params = ast.literal_eval(layer.python_param.param_str) if layer.python_param.param_str else {}
        params.update(dataset_params(kind, data_root))
        layer.python_param.param_str = repr(params)
        changed += 1
    return changed


def relocate_solver(solver_path: str, out_dir: str, data_root: Optional[str] = None) -> str:
    """Write ``out_dir/solver.prototxt`` (and its nets) with absolute paths, data layers at ``data_root``
    (when given) and snapshots under ``out_dir/snapshot/``; returns the new solver's path."""
    param = read_solver_parameter(solver_path)
    base_dir = os.path.dirname(os.path.abspath(solver_path))
    os.makedirs(os.path.join(out_dir, "snapshot"), exist_ok=True)

    def moved(path: str, field: str) -> str:
        source = resolve_path(path, base_dir, field)
        net = read_prototxt(source, caffe_pb2.NetParameter)
        if data_root is not None:
            point_data_layers(net, data_root)
        target = os.path.abspath(os.path.join(out_dir, os.path.basename(source)))
        write_prototxt(target, net)
        return target

    for field in ("train_net", "net"):
        if param.HasField(field):
            setattr(param, field, moved(getattr(param, field), field))
    test_nets = [moved(path, "test_net") for path in param.test_net]
    del param.test_net[:]
    param.test_net.extend(test_nets)
    if data_root is not None:
        for inline in [param.train_net_param, param.net_param, *param.test_net_param]:
            point_data_layers(inline, data_root)
    param.snapshot_prefix = os.path.abspath(os.path.join(out_dir, "snapshot", os.path.basename(param.snapshot_prefix)))
    target = os.path.join(out_dir, "solver.prototxt")
    write_prototxt(target, param)
    return target
