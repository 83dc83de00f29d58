"""Caffe's FilterNet/StateMeetsRule: which layers a phase, level and stages keep."""
import pytest

from netspec import caffe_pb2
from netspec.filtering import filter_net
from netspec.prototxt import parse_prototxt

NET = parse_prototxt("""
    name: "rules"
    state { stage: "from_file" }
    layer { name: "always" type: "ReLU" }
    layer { name: "train_only" type: "ReLU" include { phase: TRAIN } }
    layer { name: "not_in_test" type: "ReLU" exclude { phase: TEST } }
    layer { name: "test_or_deploy" type: "ReLU" include { phase: TEST } include { stage: "deploy" } }
    layer { name: "deploy_and_fast" type: "ReLU" include { stage: "deploy" stage: "fast" } }
    layer { name: "unless_deploy" type: "ReLU" include { not_stage: "deploy" } }
    layer { name: "level_1_to_2" type: "ReLU" include { min_level: 1 max_level: 2 } }
    layer { name: "drop_from_level_3" type: "ReLU" exclude { min_level: 3 } }
    layer { name: "file_stage" type: "ReLU" include { stage: "from_file" } }
""")


def _kept(phase, level=0, stages=()):
    return [layer.name for layer in filter_net(NET, phase, level, stages).layer]


def test_phase_rules():
    assert _kept(caffe_pb2.TRAIN) == ["always", "train_only", "not_in_test", "unless_deploy",
                                      "drop_from_level_3", "file_stage"]
    assert _kept("TEST") == ["always", "test_or_deploy", "unless_deploy", "drop_from_level_3", "file_stage"]


def test_stage_rules_need_all_stages_and_any_include():
    assert _kept("TRAIN", stages=["deploy"]) == ["always", "train_only", "not_in_test", "test_or_deploy",
                                                 "drop_from_level_3", "file_stage"]
    assert "deploy_and_fast" in _kept("TRAIN", stages=["deploy", "fast"])
    assert "deploy_and_fast" not in _kept("TRAIN", stages=["fast"])


def test_level_rules():
    assert "level_1_to_2" not in _kept("TEST", level=0)
    assert "level_1_to_2" in _kept("TEST", level=1) and "level_1_to_2" in _kept("TEST", level=2)
    assert "level_1_to_2" not in _kept("TEST", level=3) and "drop_from_level_3" not in _kept("TEST", level=3)


def test_state_is_the_files_state_with_phase_level_and_added_stages():
    filtered = filter_net(NET, "TRAIN", 2, ["deploy"])
    assert filtered.state == caffe_pb2.NetState(phase=caffe_pb2.TRAIN, level=2, stage=["from_file", "deploy"])
    assert filtered.name == "rules" and len(NET.layer) == 9  # input untouched
    no_stage = caffe_pb2.NetParameter()
    no_stage.CopyFrom(NET)
    no_stage.ClearField("state")
    assert "file_stage" not in [layer.name for layer in filter_net(no_stage, "TRAIN").layer]


def test_include_and_exclude_together_is_an_error():
    net = parse_prototxt('layer { name: "both" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(ValueError, match="layer 'both': specify either include rules or exclude rules"):
        filter_net(net, "TRAIN")
