"""The pycaffe facade: ``import fcn.caffe as caffe`` gives a pycaffe script what ``import caffe`` gave it.

Everything here is a re-export of the packages that do the work; ``install_as_caffe()`` makes the plain
``import caffe`` (and ``caffe.proto.caffe_pb2``, ``caffe.io``, ``caffe.net_spec``, ``caffe.coord_map``)
resolve to this module, which is how ``fcn pycaffe SCRIPT`` runs unmodified pycaffe code.
"""
from __future__ import annotations

import sys
import types

from typing import Optional

from netspec import caffe_pb2, coord_map, glog, net_spec
from netspec.net_spec import NetSpec, layers, params, to_proto
from runner.device import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from runner.net import Net
from runner.python_layer import Layer
from runner.registry import layer_type_list

from fcn import caffe_io as io
from solvers.api import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                         get_solver)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

proto = types.ModuleType("caffe.proto", "Caffe's protobuf messages (caffe.proto.caffe_pb2).")
proto.caffe_pb2 = caffe_pb2

__all__ = ["Net", "Layer", "TRAIN", "TEST", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
           "layer_type_list", "NetSpec", "layers", "params", "to_proto", "net_spec", "coord_map", "proto", "io",
           "install_as_caffe", "get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "init_log", "log"]


def init_log(level: Optional[int] = None, stderr: Optional[bool] = None) -> None:
    """pycaffe's ``caffe.init_log()``, ``init_log(level)``, ``init_log(level, stderr)``: glog's
    InitGoogleLogging with ``minloglevel = level`` and ``logtostderr = stderr`` (see netspec.glog for what
    reaches stderr afterwards; no log files are written)."""
    glog.init_google_logging(minloglevel=level, logtostderr=stderr)


def log(message: str) -> None:
    """pycaffe's ``caffe.log(s)``: one INFO line, from pycaffe's own source line."""
    glog.info("_caffe.cpp:68", "%s", message)


def install_as_caffe() -> types.ModuleType:
    """Register this facade under the module names pycaffe scripts import."""
    this = sys.modules[__name__]
    sys.modules.update({
        "caffe": this,
        "caffe.proto": proto,
        "caffe.proto.caffe_pb2": caffe_pb2,
        "caffe.io": io,
        "caffe.net_spec": net_spec,
        "caffe.coord_map": coord_map,
    })
    return this

