"""Caffe's FilterNet: keep the layers whose include/exclude rules the NetState meets.

One train_val prototxt serves several nets: Data layers marked
``include { phase: TRAIN }``, an Accuracy layer only in TEST, deploy-only
layers under a ``stage``.  Building a net for one phase must drop exactly the
layers Caffe drops, or names, blob lists and weights stop lining up.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple, Union

from netspec import caffe_pb2, glog

PhaseLike = Union[int, str]


def filter_net(net: "caffe_pb2.NetParameter", phase: PhaseLike, level: int = 0,
               stages: Iterable[str] = (), report: bool = False) -> "caffe_pb2.NetParameter":
    """A copy of ``net`` with only the layers Caffe would instantiate in this state.

    The state is built as pycaffe's ``Net(file, phase, level=, stages=)`` does:
    the net's own ``state`` with phase and level replaced and ``stages``
    appended; the returned net carries that state.  ``phase`` is
    caffe_pb2.TRAIN/TEST or "TRAIN"/"TEST".  A layer with include rules is kept
    if any rule is met; one with exclude rules is dropped if any is met; a layer
    with both raises ValueError, as Caffe refuses it.  ``report``: log Caffe's
    line for every rule found unmet, as Net::FilterNet does while building a net.
    """
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net)
    filtered.state.phase = caffe_pb2.Phase.Value(phase) if isinstance(phase, str) else phase
    filtered.state.level = level
    filtered.state.stage.extend(stages)
    filtered.ClearField("layer")
    for layer in net.layer:
        if layer_included(layer, filtered.state, report):
            filtered.layer.add().CopyFrom(layer)
    return filtered


def layer_included(layer: "caffe_pb2.LayerParameter", state: "caffe_pb2.NetState", report: bool = False) -> bool:
    """Whether Caffe keeps ``layer`` in a net with NetState ``state`` (``report``: see filter_net)."""
    if layer.include and layer.exclude:
        raise ValueError(f"layer {layer.name!r}: specify either include rules or exclude rules, not both")
    if layer.include:
        return any(_meets(state, rule, layer.name, report) for rule in layer.include)
    return not any(_meets(state, rule, layer.name, report) for rule in layer.exclude)


def state_meets_rule(state: "caffe_pb2.NetState", rule: "caffe_pb2.NetStateRule") -> bool:
    """Caffe's StateMeetsRule: every condition the rule sets must hold.

    phase equal; level >= min_level and <= max_level; every ``stage`` of the
    rule present in the state; no ``not_stage`` of the rule present.
    """
    return _unmet(state, rule) is None


def _meets(state: "caffe_pb2.NetState", rule: "caffe_pb2.NetStateRule", layer_name: str, report: bool) -> bool:
    unmet = _unmet(state, rule)
    if unmet is not None and report:
        where, why = unmet
        glog.info(where, "%s specified by a rule in layer %s", why, layer_name)
    return unmet is None


def _unmet(state: "caffe_pb2.NetState", rule: "caffe_pb2.NetStateRule") -> Optional[Tuple[str, str]]:
    """The first condition of ``rule`` that ``state`` breaks, as (Caffe's file:line, its words), or None."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return "net.cpp:296", f"The NetState phase ({state.phase}) differed from the phase ({rule.phase})"
    if rule.HasField("min_level") and state.level < rule.min_level:
        return "net.cpp:306", f"The NetState level ({state.level}) is above the min_level ({rule.min_level})"
    if rule.HasField("max_level") and state.level > rule.max_level:
        return "net.cpp:316", f"The NetState level ({state.level}) is above the max_level ({rule.max_level})"
    stages = set(state.stage)
    for stage in rule.stage:
        if stage not in stages:
            return "net.cpp:332", f"The NetState did not contain stage '{stage}'"
    for stage in rule.not_stage:
        if stage in stages:
            return "net.cpp:347", f"The NetState contained a not_stage '{stage}'"
    return None
