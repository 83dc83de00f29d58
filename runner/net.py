"""pycaffe's ``Net`` on PyTorch: build a NetParameter into layers over Blobs, run forward and backward.

Construction follows Caffe's Net::Init: read (and upgrade) the prototxt, filter by phase/level/stages,
insert Split layers, then set every layer up in order so that blob names, layer names, in-place tops
and loss weights are the ones a pycaffe user sees under real Caffe. Execution is a plain loop over the
layers on torch tensors (see ``runner.graph``); backward is autograd, seeded with the loss weights and
any diffs the user wrote into output blobs, and read back into every blob's ``diff`` Caffe's way.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from netspec import caffe_pb2, glog
from runner import device as device_mode
from runner.blob import Blob
from runner.graph import LayerSlot, NetGraph, SpeedOptions, build_graph
from runner.layers.memory_data import MemoryData
from runner.weights import (copy_weights_from, copy_weights_from_hdf5, net_to_proto, save_caffemodel,
                            save_weights_to_hdf5)

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
NetSource = Union[str, os.PathLike, "caffe_pb2.NetParameter"]


class LayerView:
    """What ``net.layers[i]`` shows for a built-in layer: its type and parameter blobs."""

    def __init__(self, slot: LayerSlot) -> None:
        self._slot = slot
        self.type = slot.type

    @property
    def blobs(self) -> List[Blob]:
        return self._slot.param_blobs

    def reshape(self) -> None:
        """Shapes follow the bottoms at every forward; nothing to do ahead of time."""

    def setup(self) -> None:
        """Layers are set up when the net is built."""


class Net:
    """A Caffe net (pycaffe API). ``Net(prototxt, phase, weights=..., level=, stages=)`` or the legacy
    ``Net(prototxt, weights, phase)``; ``prototxt`` may also be a NetParameter message."""

    def __init__(self, network_file: NetSource, *args: Any, phase: Optional[int] = None,
                 weights: Optional[str] = None, level: int = 0, stages: Optional[Sequence[str]] = None) -> None:
        phase, weights = _resolve_constructor_args(args, phase, weights)
        self.phase = phase
        self._device = device_mode.current_device()
        self._graph: NetGraph = build_graph(network_file, phase, level, list(stages or ()), self._device,
                                            defer_fills=weights is not None)
        self._before_forward: List[Any] = []
        self._after_forward: List[Any] = []
        self._first_versions: Dict[str, torch.Tensor] = {}
        if weights is not None:
            self._graph.fill_deferred(copy_weights_from(self._graph, weights, adopt=True))

    # ----- pycaffe attributes -----
    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def blobs(self) -> "OrderedDict[str, Blob]":
        return self._graph.blobs

    @property
    def params(self) -> "OrderedDict[str, List[Blob]]":
        return OrderedDict((s.name, s.param_blobs) for s in self._graph.slots if s.param_blobs)

    @property
    def layers(self) -> List[Any]:
        return [s.python_layer if s.python_layer is not None else LayerView(s) for s in self._graph.slots]

    @property
    def layer_dict(self) -> "OrderedDict[str, Any]":
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def _layer_names(self) -> List[str]:
        return [s.name for s in self._graph.slots]

    @property
    def _blob_names(self) -> List[str]:
        return list(self._graph.blobs)

    @property
    def top_names(self) -> "OrderedDict[str, List[str]]":
        return OrderedDict((s.name, list(s.tops)) for s in self._graph.slots)

    @property
    def bottom_names(self) -> "OrderedDict[str, List[str]]":
        return OrderedDict((s.name, list(s.bottoms)) for s in self._graph.slots)

    @property
    def inputs(self) -> List[str]:
        return list(self._graph.input_names)

    @property
    def outputs(self) -> List[str]:
        return list(self._graph.output_names)

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        return OrderedDict((name, self._graph.loss_weights.get(name, 0.0)) for name in self._graph.blobs)

    @property
    def _blob_loss_weights(self) -> List[float]:
        return list(self.blob_loss_weights.values())

    # ----- running -----
    def _index_of(self, layer_name: Optional[str], default: int) -> int:
        if layer_name is None:
            return default
        try:
            return self._layer_names.index(layer_name)
        except ValueError:
            raise ValueError(f"no layer named '{layer_name}' in net '{self.name}'") from None

    def _follow_device(self) -> None:
        wanted = device_mode.current_device()
        if wanted != self._device:
            self._graph.to(wanted)
            self._device = wanted

    def _forward(self, start: int, end: int) -> float:
        """Run layers ``start..end`` (inclusive); return the weighted loss of the layers run."""
        self._follow_device()
        if start == 0:
            self._first_versions = {}
        loss = 0.0
        recording = contextlib.nullcontext() if self._graph.records_gradients else torch.no_grad()
        with recording:
            losses = self._graph.run(start, end, self._first_versions, self._before_forward, self._after_forward)
        for value in losses:
            loss += float(value)
        return loss

    def forward(self, blobs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                end: Optional[str] = None, **kwargs: np.ndarray) -> Dict[str, np.ndarray]:
        """Run forward from layer ``start`` to ``end``; keyword arrays fill the input blobs first.
        Returns the output blobs (and any named in ``blobs``) as arrays, like pycaffe."""
        start_ind = self._index_of(start, 0)
        end_ind = self._index_of(end, len(self._graph.slots) - 1)
        wanted = set(self._graph.slots[end_ind].tops if end is not None else self.outputs) | set(blobs or ())
        if kwargs:
            self._require_names("forward", "inputs", kwargs, self.inputs)
            for name, array in kwargs.items():
                target = self.blobs[name]
                if np.shape(array)[0] != target.shape[0]:
                    raise ValueError(f"forward: input '{name}' has batch size {np.shape(array)[0]}, "
                                     f"the net expects {target.shape[0]} (reshape the blob first)")
                if tuple(np.shape(array)) != target.shape:
                    raise ValueError(f"forward: input '{name}' has shape {tuple(np.shape(array))}, the blob has "
                                     f"{target.shape} (reshape the blob and call net.reshape() first)")
                target.data[...] = array
        self._forward(start_ind, end_ind)
        return {name: self.blobs[name].data for name in wanted}

    def _require_names(self, method: str, kind: str, given: Iterable[str], allowed: List[str]) -> None:
        unknown = set(given) - set(allowed)
        if unknown:
            raise ValueError(f"{method}: {sorted(unknown)} are not {kind} of net '{self.name}' ({kind}: {allowed})")

    def _backward(self, start: int, end: int, retain_graph: bool = True, blob_diffs: bool = True) -> None:
        """Backward over layers end..start. A training step passes ``retain_graph=False`` and
        ``blob_diffs=False``: only parameter gradients are wanted, and the graph may be freed at once."""
        self._graph.backward(start, end, self._first_versions, retain_graph, blob_diffs)

    def backward(self, diffs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                 end: Optional[str] = None, **kwargs: np.ndarray) -> Dict[str, np.ndarray]:
        """Back-propagate from layer ``start`` (default: the last) down to ``end`` (default: the first).
        Keyword arrays set output diffs first. Returns the input diffs (and any named in ``diffs``)."""
        start_ind = self._index_of(start, len(self._graph.slots) - 1)
        end_ind = self._index_of(end, 0)
        wanted = set(self._graph.slots[end_ind].bottoms if end is not None else self.inputs) | set(diffs or ())
        if kwargs:
            self._require_names("backward", "outputs", kwargs, self.outputs)
            for name, array in kwargs.items():
                self.blobs[name].diff[...] = array
        self._backward(start_ind, end_ind)
        return {name: self.blobs[name].diff for name in wanted}

    def forward_all(self, blobs: Optional[Iterable[str]] = None, **kwargs: np.ndarray) -> Dict[str, np.ndarray]:
        """Forward a whole set of inputs batch by batch; outputs concatenated (the last partial batch is
        padded and trimmed, like pycaffe)."""
        return self._all_batches(kwargs, lambda batch: self.forward(blobs=blobs, **batch))

    def forward_backward_all(self, blobs: Optional[Iterable[str]] = None, diffs: Optional[Iterable[str]] = None,
                             **kwargs: np.ndarray) -> tuple:
        """``forward_all`` and ``backward`` for each batch; returns (outputs, input diffs)."""
        forward_in = {k: v for k, v in kwargs.items() if k in self.inputs}
        backward_in = {k: v for k, v in kwargs.items() if k in self.outputs}
        diffs_out: Dict[str, List[np.ndarray]] = {}

        def step(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            out = self.forward(blobs=blobs, **{k: batch[k] for k in forward_in})
            grads = self.backward(diffs=diffs, **{k: batch[k] for k in backward_in})
            for k, v in grads.items():
                diffs_out.setdefault(k, []).append(v.copy())
            return out

        outs = self._all_batches(kwargs, step)
        n = len(next(iter(kwargs.values()))) if kwargs else 0
        return outs, {k: np.concatenate(v)[:n] for k, v in diffs_out.items()}

    def _all_batches(self, arrays: Dict[str, np.ndarray], step: Any) -> Dict[str, np.ndarray]:
        if not arrays:
            return {k: v.copy() for k, v in step({}).items()}
        n = len(next(iter(arrays.values())))
        batch = self.blobs[self.inputs[0]].shape[0] if self.inputs else n
        collected: Dict[str, List[np.ndarray]] = {}
        for begin in range(0, n, batch):
            chunk = {}
            for name, array in arrays.items():
                part = np.asarray(array[begin:begin + batch], dtype=np.float32)
                if len(part) < batch:
                    pad = np.zeros((batch - len(part),) + part.shape[1:], dtype=np.float32)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            for name, value in step(chunk).items():
                collected.setdefault(name, []).append(np.array(value, copy=True))
        return {name: np.concatenate(parts)[:n] for name, parts in collected.items()}

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Hand the first layer, a MemoryData layer, the arrays it serves batches from (not copied: later
        writes into them show in later forwards). pycaffe's checks and RuntimeError messages."""
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        first = self._graph.slots[0].impl if self._graph.slots else None
        if not isinstance(first, MemoryData):
            raise RuntimeError("set_input_arrays may only be called if the first layer is a MemoryDataLayer")
        first.set_input_arrays(data, labels)

    def reshape(self) -> None:
        """Recompute every blob's shape from the input blobs (after ``blobs[input].reshape(...)``)."""
        self._follow_device()
        self._graph.reshape()

    def clear_param_diffs(self) -> None:
        """Zero every parameter gradient (Caffe's ClearParamDiffs)."""
        self._graph.clear_param_diffs()

    # ----- weights -----
    def copy_from(self, filename: str) -> None:
        """Load weights from a caffemodel, binary or HDF5 (``.caffemodel.h5``, told apart by content as Caffe
        does), by layer name: unknown layers are ignored, a shape mismatch is an error naming the layer, the
        blob index and both shapes."""
        copy_weights_from(self._graph, os.fspath(filename))

    def load_hdf5(self, filename: str) -> None:
        """Load weights from a ``.caffemodel.h5`` (pycaffe's ``load_hdf5``)."""
        copy_weights_from_hdf5(self._graph, os.fspath(filename))

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s parameter tensors for the layers both nets have (Caffe's ShareTrainedLayersWith):
        a test net scoring a train net without copying. Logs ``other``'s layers this net lacks, as Caffe."""
        mine = set(self._layer_names)
        for name in other._layer_names:
            if name not in mine:
                glog.info("net.cpp:678", "Ignoring source layer %s", name)
        self._graph.share_params_with(other._graph)

    def save(self, filename: str) -> None:
        """Write a caffemodel (atomically) that real Caffe loads."""
        save_caffemodel(net_to_proto(self._graph), filename)

    def save_hdf5(self, filename: str) -> None:
        """Write the weights as a ``.caffemodel.h5`` (atomically) in Net::ToHDF5's layout (pycaffe's
        ``save_hdf5``)."""
        save_weights_to_hdf5(self._graph, os.fspath(filename))

    def to_proto(self) -> "caffe_pb2.NetParameter":
        """The instantiated net with its weights, as ``save`` writes it."""
        return net_to_proto(self._graph)

    # ----- speed -----
    def set_speed(self, autocast: Optional[torch.dtype] = None, compile: Union[bool, str] = False,
                  winograd: bool = False) -> None:
        """Opt into faster execution: autocast to ``autocast`` (e.g. ``torch.bfloat16``), torch.compile for
        inference (``True`` or a backend name), Winograd convolutions for CPU inference. See
        ``runner.graph.SpeedOptions`` for what each changes; no arguments restore Caffe's plain float32
        loop."""
        self._graph.set_speed(SpeedOptions(autocast, compile, winograd))

    # ----- hooks -----
    def before_forward(self, fn: Any) -> None:
        """Call ``fn(layer_index)`` before each layer's forward (pycaffe's hook)."""
        self._before_forward.append(fn)

    def after_forward(self, fn: Any) -> None:
        """Call ``fn(layer_index)`` after each layer's forward."""
        self._after_forward.append(fn)

    @property
    def graph(self) -> NetGraph:
        """The executable graph (``torch.nn.Module``) behind this net."""
        return self._graph


def _resolve_constructor_args(args: Sequence[Any], phase: Optional[int], weights: Optional[str]) -> tuple:
    """Accept pycaffe's two signatures: ``Net(file, phase, ...)`` and ``Net(file, weights, phase)``."""
    args = list(args)
    if len(args) == 1 and phase is None:
        phase = args[0]
    elif len(args) == 2 and phase is None and weights is None:
        weights, phase = args
    elif args:
        raise TypeError("Net(network_file, phase, weights=..., level=..., stages=...) or "
                        "Net(network_file, weights, phase)")
    if phase is None:
        raise TypeError("Net: phase is required (caffe.TRAIN or caffe.TEST)")
    if phase not in (TRAIN, TEST):
        raise ValueError(f"Net: phase must be caffe.TRAIN (0) or caffe.TEST (1), got {phase!r}")
    return int(phase), (os.fspath(weights) if weights is not None else None)
