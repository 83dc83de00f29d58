"""Host for Caffe's ``Python`` layers: user classes with setup/reshape/forward/backward over Blobs.

A Python layer sees pycaffe Blobs (numpy ``.data``/``.diff``), exactly as under real Caffe, so that
unmodified data layers and loss layers from pycaffe projects run. When a Python layer sits inside the
differentiable part of a net, an autograd Function calls its ``backward`` so gradients flow through it.
"""
from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence

import torch

from runner.blob import Blob


class BlobVec(list):
    """``layer.blobs`` of a Python layer: a list of Blobs that the layer may grow with ``add_blob``."""

    def add_blob(self, *shape: int) -> Blob:
        blob = Blob(shape)
        self.append(blob)
        return blob


class Layer:
    """Base class of Python layers (pycaffe's ``caffe.Layer``). Subclasses override what they need."""

    def __init__(self) -> None:
        self.blobs = BlobVec()
        self.param_str = ""
        self.phase = 0

    def setup(self, bottom: List[Blob], top: List[Blob]) -> None:
        pass

    def reshape(self, bottom: List[Blob], top: List[Blob]) -> None:
        pass

    def forward(self, bottom: List[Blob], top: List[Blob]) -> None:
        pass

    def backward(self, top: List[Blob], propagate_down: List[bool], bottom: List[Blob]) -> None:
        pass


@contextmanager
def _importable_from(folders: Sequence[str]) -> Iterator[None]:
    """Let a module next to the prototxt (or in the working directory) be found, as pycaffe users expect."""
    added = [f for f in folders if f and f not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


#: The FCN release's data-layer modules (``python_param { module: "voc_layers" }``) and the modules here that
#: implement the same classes, so the release's prototxts run without the release's files on the path.
#: A module of that name that can be imported (the user's own copy) always wins.
RELEASE_MODULES = {
    "voc_layers": "data_layers.voc",
    "nyud_layers": "data_layers.nyud",
    "siftflow_layers": "data_layers.siftflow",
    "pascalcontext_layers": "data_layers.pascalcontext",
}


def _import_layer_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name or name not in RELEASE_MODULES:
            raise
    return importlib.import_module(RELEASE_MODULES[name])


def instantiate(layer_param: Any, phase: int, search_folders: Sequence[str] = ()) -> Any:
    """Create the user's layer object named by ``python_param.module``/``.layer`` (never evaluated code:
    only an import and an attribute look-up)."""
    pp = layer_param.python_param
    where = f"layer '{layer_param.name}' (Python)"
    if not pp.module or not pp.layer:
        raise ValueError(f"{where}: python_param needs both 'module' and 'layer'")
    with _importable_from(search_folders):
        try:
            module = _import_layer_module(pp.module)
        except Exception as err:  # ImportError, or any error the module raises while it loads
            raise ValueError(f"{where}: cannot import module {pp.module!r}: {type(err).__name__}: {err}") from err
    cls = getattr(module, pp.layer, None)
    if cls is None:
        raise ValueError(f"{where}: module '{pp.module}' has no class '{pp.layer}'")
    obj = cls.__new__(cls)
    # pycaffe sets these before calling setup; a subclass __init__ is not part of the contract.
    try:
        Layer.__init__(obj)
    except TypeError:
        pass
    obj.param_str = pp.param_str
    obj.phase = phase
    obj.type = "Python"
    return obj


class _PythonLayerFunction(torch.autograd.Function):
    """Runs a Python layer's forward, and its own ``backward`` when autograd asks for bottom gradients."""

    @staticmethod
    def forward(ctx: Any, host: "PythonLayerHost", *bottoms: torch.Tensor) -> Any:
        ctx.host = host
        host.run_forward()
        return tuple(t.tensor().detach().clone() for t in host.tops)

    @staticmethod
    def backward(ctx: Any, *top_grads: Optional[torch.Tensor]) -> Any:
        host: PythonLayerHost = ctx.host
        for blob, grad in zip(host.tops, top_grads):
            blob.set_diff_tensor(grad.detach().clone() if grad is not None else torch.zeros_like(blob.tensor()))
        propagate = list(ctx.needs_input_grad[1:])
        host.layer.backward(host.tops, propagate, host.bottoms)
        grads = [b.diff_tensor().detach().clone() if need else None for b, need in zip(host.bottoms, propagate)]
        return (None, *grads)


class PythonLayerHost:
    """Binds one Python layer object to the net's bottom and top Blobs."""

    def __init__(self, layer: Any, bottoms: List[Blob], tops: List[Blob]) -> None:
        self.layer = layer
        self.bottoms = bottoms
        self.tops = tops

    def setup(self) -> None:
        self.layer.setup(self.bottoms, self.tops)
        self.layer.reshape(self.bottoms, self.tops)

    def run_forward(self) -> None:
        # Caffe calls Reshape before every Forward; data layers size their tops there.
        self.layer.reshape(self.bottoms, self.tops)
        self.layer.forward(self.bottoms, self.tops)

    def forward(self, bottom_tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """Run the layer; through autograd only when some bottom needs a gradient."""
        if torch.is_grad_enabled() and any(t.requires_grad for t in bottom_tensors):
            return list(_PythonLayerFunction.apply(self, *bottom_tensors))
        self.run_forward()
        return [blob.tensor() for blob in self.tops]
