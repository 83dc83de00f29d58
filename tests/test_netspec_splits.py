"""Caffe's InsertSplits: the Split layers, their names and the renamed bottoms must be Caffe's own."""
import glob

import pytest
from caffe_cases import Case, case_names

from netspec import caffe_pb2
from netspec.caffemodel import load_caffemodel
from netspec.filtering import filter_net
from netspec.prototxt import parse_prototxt, read_prototxt
from netspec.splits import insert_splits, split_blob_name, split_layer_name

CASES = [("layers", name) for name in case_names("layers")] + \
        [("losses", name) for name in case_names("losses")] + [("fcn", name) for name in case_names("fcn")]


def _wiring(net):
    return [(layer.name, layer.type, list(layer.bottom), list(layer.top)) for layer in net.layer]


@pytest.mark.parametrize("section,name", CASES)
def test_splits_equal_caffes_layer_list_and_saved_net(section, name):
    case = Case(section, name)
    got = insert_splits(filter_net(read_prototxt(case.prototxt), case.meta["phase"]))
    assert [{"name": layer.name, "type": layer.type} for layer in got.layer] == case.meta["caffe_layers_incl_auto_split"]
    saved, _ = load_caffemodel(glob.glob(case.path("net.caffemodel*"))[0])  # Net.save wrote the split net
    assert _wiring(got) == _wiring(saved)


def test_fcn8s_split_blob_names():
    case = Case("fcn", "tiny_fcn8s")
    got = insert_splits(filter_net(read_prototxt(case.prototxt), "TEST"))
    split = next(layer for layer in got.layer if layer.name == "upscore2_upscore2_0_split")
    assert list(split.top) == ["upscore2_upscore2_0_split_0", "upscore2_upscore2_0_split_1"]
    assert split_blob_name("upscore2", "upscore2", 0, 1) == "upscore2_upscore2_0_split_1"
    assert split_layer_name("data", "data", 0) == "data_data_0_split"
    assert insert_splits(got) == got  # every blob now has one reader


def test_in_place_layers_hand_the_blob_on():
    net = parse_prototxt("""
        layer { name: "conv" type: "Convolution" top: "conv" }
        layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
        layer { name: "a" type: "ReLU" bottom: "conv" top: "a" }
        layer { name: "b" type: "ReLU" bottom: "conv" top: "b" }
    """)
    got = insert_splits(net)
    assert _wiring(got) == [
        ("conv", "Convolution", [], ["conv"]),
        ("relu", "ReLU", ["conv"], ["conv"]),
        ("conv_relu_0_split", "Split", ["conv"], ["conv_relu_0_split_0", "conv_relu_0_split_1"]),
        ("a", "ReLU", ["conv_relu_0_split_0"], ["a"]),
        ("b", "ReLU", ["conv_relu_0_split_1"], ["b"]),
    ]


def test_explicit_loss_weight_counts_as_a_use_and_moves_to_split_top_0():
    net = parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" top: "y" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "l" loss_weight: 0.5 }
        layer { name: "after" type: "Power" bottom: "l" top: "p" }
    """)
    got = insert_splits(net)
    assert _wiring(got)[1:] == [
        ("loss", "EuclideanLoss", ["x", "y"], ["l"]),
        ("l_loss_0_split", "Split", ["l"], ["l_loss_0_split_0", "l_loss_0_split_1"]),
        ("after", "Power", ["l_loss_0_split_1"], ["p"]),
    ]
    assert list(got.layer[1].loss_weight) == [] and list(got.layer[2].loss_weight) == [0.5, 0.0]


def test_implicit_loss_weight_plays_no_part_as_in_caffe():
    net = parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" top: "y" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "l" }
        layer { name: "after" type: "Power" bottom: "l" top: "p" }
    """)
    assert insert_splits(net) == net


def test_second_top_and_legacy_inputs_are_indexed_by_position():
    net = parse_prototxt("""
        input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2
        layer { name: "slice" type: "Slice" bottom: "data" top: "s0" top: "s1" }
        layer { name: "a" type: "Eltwise" bottom: "s1" bottom: "s1" bottom: "data" top: "a" }
    """)
    got = insert_splits(net)
    assert _wiring(got) == [
        ("data_input_0_split", "Split", ["data"], ["data_input_0_split_0", "data_input_0_split_1"]),
        ("slice", "Slice", ["data_input_0_split_0"], ["s0", "s1"]),
        ("s1_slice_1_split", "Split", ["s1"], ["s1_slice_1_split_0", "s1_slice_1_split_1"]),
        ("a", "Eltwise", ["s1_slice_1_split_0", "s1_slice_1_split_1", "data_input_0_split_1"], ["a"]),
    ]
    assert list(got.input) == ["data"]


def test_unknown_bottom_names_layer_and_blob():
    net = parse_prototxt('layer { name: "in" type: "Input" top: "x" } '
                         'layer { name: "conv" type: "Convolution" bottom: "x" bottom: "y" top: "c" }')
    with pytest.raises(ValueError, match=r"layer 'conv' bottom 1: unknown blob 'y'"):
        insert_splits(net)
    assert isinstance(insert_splits(caffe_pb2.NetParameter()), caffe_pb2.NetParameter)
