"""Caffe's FilterNet: keep the layers whose include/exclude rules the NetState meets.

One train_val prototxt serves several nets: Data layers marked
``include { phase: TRAIN }``, an Accuracy layer only in TEST, deploy-only
layers under a ``stage``.  Building a net for one phase must drop exactly the
layers Caffe drops, or names, blob lists and weights stop lining up.
"""
from __future__ import annotations

from typing import Iterable, Union

from netspec import caffe_pb2

PhaseLike = Union[int, str]


def filter_net(net: "caffe_pb2.NetParameter", phase: PhaseLike, level: int = 0,
               stages: Iterable[str] = ()) -> "caffe_pb2.NetParameter":
    """A copy of ``net`` with only the layers Caffe would instantiate in this state.

    The state is built as pycaffe's ``Net(file, phase, level=, stages=)`` does:
    the net's own ``state`` with phase and level replaced and ``stages``
    appended; the returned net carries that state.  ``phase`` is
    caffe_pb2.TRAIN/TEST or "TRAIN"/"TEST".  A layer with include rules is kept
    if any rule is met; one with exclude rules is dropped if any is met; a layer
    with both raises ValueError, as Caffe refuses it.
    """
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net)
    filtered.state.phase = caffe_pb2.Phase.Value(phase) if isinstance(phase, str) else phase
    filtered.state.level = level
    filtered.state.stage.extend(stages)
    filtered.ClearField("layer")
    for layer in net.layer:
        if layer_included(layer, filtered.state):
            filtered.layer.add().CopyFrom(layer)
    return filtered


def layer_included(layer: "caffe_pb2.LayerParameter", state: "caffe_pb2.NetState") -> bool:
    """Whether Caffe keeps ``layer`` in a net with NetState ``state``."""
    if layer.include and layer.exclude:
        raise ValueError(f"layer {layer.name!r}: specify either include rules or exclude rules, not both")
    if layer.include:
        return any(state_meets_rule(state, rule) for rule in layer.include)
    return not any(state_meets_rule(state, rule) for rule in layer.exclude)


def state_meets_rule(state: "caffe_pb2.NetState", rule: "caffe_pb2.NetStateRule") -> bool:
    """Caffe's StateMeetsRule: every condition the rule sets must hold.

    phase equal; level >= min_level and <= max_level; every ``stage`` of the
    rule present in the state; no ``not_stage`` of the rule present.
    """
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(stage in stages for stage in rule.stage) and not any(stage in stages for stage in rule.not_stage)
