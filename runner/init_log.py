"""The lines Caffe's Net::Init logs while it builds a net, in its order, with its words.

A pycaffe user (and anyone reading an old training log) knows this block: the filtered prototxt, then per
layer "Creating Layer", its bottoms (``<-``) and tops (``->``), "Setting up", every top shape with its
element count, the loss weights and the running "Memory required for data"; then, walking the net
backwards, which layers need backward computation, the net's outputs and "Network initialization done."
``runner.graph.build_graph`` calls the hooks below as it builds; the backward decisions here repeat
Caffe's rule (it is what the lines report) and decide nothing for the runner, whose own rule lives in
graph._decide_gradients. Nothing is computed when INFO lines are off.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from netspec import caffe_pb2, glog

#: Layer types whose SetUp creates an inner layer through Caffe's registry (logging "Creating layer" again).
INNER_REGISTRY_LAYER = ("SoftmaxWithLoss", "InfogainLoss")
_FLOAT_BYTES = 4


@dataclass
class _LayerRecord:
    name: str
    bottoms: List[str]
    tops: List[str]
    loss_weights: List[float]
    need_backward: bool
    bottom_need_backward: List[bool] = field(default_factory=list)


def _count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's Blob::shape_string: the dims and the count in parentheses, "3 5 (15)"; 0-d is "(1)"."""
    return "".join(f"{int(dim)} " for dim in shape) + f"({_count(shape)})"


class NetInitLog:
    """Logs one net's construction; create it when the build starts."""

    def __init__(self) -> None:
        self.active = glog.enabled(glog.INFO)
        self._memory = 0
        self._blob_needs_backward: Dict[str, bool] = {}
        self._layers: List[_LayerRecord] = []
        self._param_owners: Dict[str, Tuple[str, int]] = {}

    def parameters(self, filtered: "caffe_pb2.NetParameter") -> None:
        """The net after phase/level/stage filtering, before Split layers go in."""
        if self.active:
            glog.info("net.cpp:53", "Initializing net from parameters: \n%s", filtered)

    def creating(self, layer: "caffe_pb2.LayerParameter") -> None:
        """Before the layer object exists (Caffe's LayerRegistry::CreateLayer)."""
        if self.active:
            glog.info("layer_factory.hpp:77", "Creating layer %s", layer.name)

    def connecting(self, name: str, bottoms: Sequence[str], tops: Sequence[str]) -> None:
        """The layer exists; its blobs are wired."""
        if not self.active:
            return
        glog.info("net.cpp:86", "Creating Layer %s", name)
        for bottom in bottoms:
            glog.info("net.cpp:408", "%s <- %s", name, bottom)
        for i, top in enumerate(tops):
            if i < len(bottoms) and bottoms[i] == top:
                glog.info("net.cpp:369", "%s -> %s (in-place)", name, top)
            else:
                glog.info("net.cpp:382", "%s -> %s", name, top)

    def setting_up(self, layer: "caffe_pb2.LayerParameter") -> None:
        """Inside SetUp, before it sizes the tops: the inner layer some loss layers make."""
        if self.active and layer.type in INNER_REGISTRY_LAYER:
            glog.info("layer_factory.hpp:77", "Creating layer %s", layer.name)

    def set_up(self, layer: "caffe_pb2.LayerParameter", top_shapes: Sequence[Sequence[int]],
               loss_weights: Sequence[float], param_count: int) -> None:
        """The layer is set up: its tops have their shapes and its parameters exist."""
        if not self.active:
            return
        glog.info("net.cpp:124", "Setting up %s", layer.name)
        for shape, weight in zip(top_shapes, loss_weights):
            glog.info("net.cpp:131", "Top shape: %s", shape_string(shape))
            if weight:
                glog.info("net.cpp:134", "    with loss weight %g", glog.real(weight))
            self._memory += _count(shape)
        glog.info("net.cpp:139", "Memory required for data: %d", self._memory * _FLOAT_BYTES)
        self._share_params(layer, param_count)
        self._record(layer, loss_weights, param_count)

    def _share_params(self, layer: "caffe_pb2.LayerParameter", param_count: int) -> None:
        """Caffe's AppendParam: a parameter named before belongs to the layer that named it first."""
        for index in range(param_count):
            name = layer.param[index].name if index < len(layer.param) else ""
            if not name:
                continue
            if name in self._param_owners:
                owner, owner_index = self._param_owners[name]
                glog.info("net.cpp:467", "Sharing parameters '%s' owned by layer '%s', param index %d",
                          name, owner, owner_index)
            else:
                self._param_owners[name] = (layer.name, index)

    def _record(self, layer: "caffe_pb2.LayerParameter", loss_weights: Sequence[float], param_count: int) -> None:
        """Caffe's forward bookkeeping of which blobs need backward (bottoms first, then tops, then params)."""
        bottoms, tops = list(layer.bottom), list(layer.top)
        need = any(self._blob_needs_backward.get(b, False) for b in bottoms)
        if layer.propagate_down and len(layer.propagate_down) == len(bottoms):
            bottom_need = list(layer.propagate_down)
        else:
            bottom_need = [self._blob_needs_backward.get(b, False) for b in bottoms]
        for i, top in enumerate(tops):
            if not (i < len(bottoms) and bottoms[i] == top):
                self._blob_needs_backward[top] = False
        need = need or any((layer.param[i].lr_mult if i < len(layer.param) else 1.0) != 0
                           for i in range(param_count))
        if need:
            for top in tops:
                self._blob_needs_backward[top] = True
        self._layers.append(_LayerRecord(layer.name, bottoms, tops, list(loss_weights), need, bottom_need))

    def done(self, outputs: Sequence[str]) -> None:
        """The backward walk (which layers contribute to a loss), the outputs, the end."""
        if not self.active:
            return
        under_loss: set = set()
        skip_backward: set = set()
        for record in reversed(self._layers):
            contributes, skip_down = False, True
            for top, weight in zip(record.tops, record.loss_weights):
                contributes = contributes or bool(weight) or top in under_loss
                skip_down = skip_down and top in skip_backward
                if contributes and not skip_down:
                    break
            need = record.need_backward and not skip_down and contributes
            bottom_need = [n and not skip_down for n in record.bottom_need_backward]
            if need:
                glog.info("net.cpp:200", "%s needs backward computation.", record.name)
            else:
                glog.info("net.cpp:202", "%s does not need backward computation.", record.name)
            for i, bottom in enumerate(record.bottoms):
                if contributes:
                    under_loss.add(bottom)
                else:
                    bottom_need[i] = False
                if not bottom_need[i]:
                    skip_backward.add(bottom)
        for name in sorted(outputs):  # Caffe keeps its available blobs in a std::set
            glog.info("net.cpp:244", "This network produces output %s", name)
        glog.info("net.cpp:257", "Network initialization done.")
