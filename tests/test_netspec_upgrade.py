"""Old nets (V0, V1, net inputs, three-param BatchNorm) must upgrade to exactly what Caffe's own
upgrade_net_proto_text / upgrade_net_proto_binary write."""
import glob
import json
import os

import numpy as np
import pytest
from caffe_cases import ROOT

from netspec import caffe_pb2
from netspec.caffemodel import load_caffemodel, read_caffemodel
from netspec.prototxt import parse_prototxt, read_prototxt
from netspec.upgrade import needs_upgrade, upgrade_net

UPGRADE = os.path.join(ROOT, "upgrade")
CURRENT_NETS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "**", "*.prototxt"),
                                                                  recursive=True)
                      if "solver" not in os.path.basename(p) and "v1_deploy" not in p)


def test_v1_deploy_prototxt_upgrades_to_caffes_output():
    v1 = read_prototxt(os.path.join(UPGRADE, "v1_deploy.prototxt"))
    want = read_prototxt(os.path.join(UPGRADE, "upgraded_deploy.prototxt"))
    assert needs_upgrade(v1) and not needs_upgrade(want)
    got = upgrade_net(v1)
    assert got == want
    with open(os.path.join(UPGRADE, "meta.json")) as f:
        layers = json.load(f)["layers_after_upgrade"]
    assert [{"name": layer.name, "type": layer.type} for layer in got.layer] == layers
    assert len(v1.layers) == len(layers) - 1 and not v1.layer  # the input was untouched


def test_v1_caffemodel_upgrades_to_caffes_output():
    got = upgrade_net(read_caffemodel(os.path.join(UPGRADE, "v1.caffemodel")))
    assert got == read_caffemodel(os.path.join(UPGRADE, "upgraded.caffemodel"))
    stripped, params = load_caffemodel(os.path.join(UPGRADE, "v1.caffemodel"))
    want_stripped, want_params = load_caffemodel(os.path.join(UPGRADE, "upgraded.caffemodel"))
    assert upgrade_net(stripped) == want_stripped
    assert params.keys() == want_params.keys()
    for name, arrays in params.items():
        for got_array, want_array in zip(arrays, want_params[name]):
            np.testing.assert_array_equal(got_array, want_array)


def test_legacy_arrays_hold_the_weights_caffe_loaded():
    _, params = load_caffemodel(os.path.join(UPGRADE, "v1.caffemodel"))
    with np.load(os.path.join(UPGRADE, "params_as_loaded.npz")) as loaded:
        for key in loaded.files:
            layer, index = key.split("/")
            array = params[layer][int(index)]
            want = loaded[key]
            assert array.shape == (1,) * (4 - want.ndim) + want.shape  # Caffe's legacy ShapeEquals
            np.testing.assert_array_equal(array.reshape(want.shape), want)


@pytest.mark.parametrize("relpath", CURRENT_NETS)
def test_current_nets_need_no_upgrade_and_stay_equal(relpath):
    net = read_prototxt(os.path.join(ROOT, relpath))
    assert not needs_upgrade(net)
    assert upgrade_net(net) == net


def test_v1_fields_map_to_current_ones():
    v1 = parse_prototxt("""
        name: "v1"
        layers { name: "data" type: DATA top: "data" top: "label" include { phase: TRAIN }
                 data_param { source: "db" batch_size: 2 scale: 0.00390625 mean_file: "mean" crop_size: 227
                              mirror: true } }
        layers { name: "up" type: DECONVOLUTION bottom: "data" top: "up" exclude { stage: "deploy" }
                 param: "w" param: "b" blob_share_mode: PERMISSIVE blobs_lr: 0 blobs_lr: 2 weight_decay: 1
                 convolution_param { num_output: 3 kernel_size: 4 stride: 2 } }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "up" bottom: "label" top: "loss" loss_weight: 2
                 loss_param { ignore_label: 255 normalize: false } }
        state { phase: TRAIN }
    """)
    want = parse_prototxt("""
        name: "v1"
        layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
                transform_param { scale: 0.00390625 mean_file: "mean" crop_size: 227 mirror: true }
                data_param { source: "db" batch_size: 2 } }
        layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" exclude { stage: "deploy" }
                param { name: "w" share_mode: PERMISSIVE lr_mult: 0 decay_mult: 1 }
                param { name: "b" lr_mult: 2 }
                convolution_param { num_output: 3 kernel_size: 4 stride: 2 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "up" bottom: "label" top: "loss" loss_weight: 2
                loss_param { ignore_label: 255 normalize: false } }
        state { phase: TRAIN }
    """)
    assert upgrade_net(v1) == want
    assert v1.layers[0].data_param.HasField("scale")  # the argument is not modified


def test_net_inputs_become_one_input_layer_first():
    net = parse_prototxt("""
        input: "data" input_shape { dim: 1 dim: 3 dim: 5 dim: 5 }
        input: "im_info" input_shape { dim: 1 dim: 3 }
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
    """)
    assert needs_upgrade(net)
    want = parse_prototxt("""
        layer { name: "input" type: "Input" top: "data" top: "im_info"
                input_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } shape { dim: 1 dim: 3 } } }
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
    """)
    assert upgrade_net(net) == want


def test_bare_inputs_are_dropped_and_short_dims_rejected():
    bare = parse_prototxt('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert upgrade_net(bare) == parse_prototxt('layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    with pytest.raises(ValueError, match="2 inputs need 8 input_dim values, got 4"):
        upgrade_net(parse_prototxt('input: "a" input: "b" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1'))


def test_three_param_batchnorm_gets_zero_multipliers():
    net = parse_prototxt("""
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } param { lr_mult: 1 }
                param { lr_mult: 1 decay_mult: 3 } }
    """)
    assert needs_upgrade(net)
    upgraded = upgrade_net(net)
    assert [(p.lr_mult, p.decay_mult) for p in upgraded.layer[0].param] == [(0, 0)] * 3
    assert not needs_upgrade(upgraded) and upgrade_net(upgraded) == upgraded


def test_layer_and_layers_together_are_refused():
    net = parse_prototxt('name: "mixed" layer { name: "a" } layers { name: "b" type: RELU }')
    with pytest.raises(ValueError, match="both 'layer' and legacy 'layers'"):
        upgrade_net(net)


V0_NET = """
    name: "v0net"
    input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { layer { name: "data2" type: "data" source: "db" batchsize: 4 scale: 0.5 meanfile: "m.binaryproto"
                     cropsize: 5 mirror: true rand_skip: 2 }
             top: "d2" top: "l2" }
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 group: 1 biasterm: false
                     weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 blobs_lr: 2
                     weight_decay: 1 weight_decay: 0 }
             bottom: "pad1" top: "conv1" }
    layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
    layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
    layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "pool1" top: "pool1" }
    layers { layer { name: "ip" type: "innerproduct" num_output: 10 } bottom: "pool1" top: "ip" }
    layers { layer { name: "norm" type: "lrn" local_size: 3 alpha: 0.1 beta: 0.5 k: 2 } bottom: "ip" top: "norm" }
    layers { layer { name: "cat" type: "concat" concat_dim: 1 } bottom: "ip" bottom: "norm" top: "cat" }
"""
V0_UPGRADED = """
    name: "v0net"
    layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
    layer { name: "data2" type: "Data" top: "d2" top: "l2"
            transform_param { scale: 0.5 mean_file: "m.binaryproto" crop_size: 5 mirror: true }
            data_param { source: "db" batch_size: 4 rand_skip: 2 } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
            convolution_param { num_output: 4 bias_term: false pad: 2 kernel_size: 3 group: 1 stride: 1
                                weight_filler { type: "gaussian" std: 0.01 } } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
    layer { name: "drop" type: "Dropout" bottom: "pool1" top: "pool1" dropout_param { dropout_ratio: 0.3 } }
    layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip" inner_product_param { num_output: 10 } }
    layer { name: "norm" type: "LRN" bottom: "ip" top: "norm" lrn_param { local_size: 3 alpha: 0.1 beta: 0.5 k: 2 } }
    layer { name: "cat" type: "Concat" bottom: "ip" bottom: "norm" top: "cat" concat_param { concat_dim: 1 } }
"""


def test_v0_net_upgrades_through_v1_to_current():
    v0 = parse_prototxt(V0_NET)
    assert needs_upgrade(v0)
    assert upgrade_net(v0) == parse_prototxt(V0_UPGRADED)


def test_v0_misplaced_parameter_warns_and_bad_padding_raises():
    misplaced = parse_prototxt('input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 '
                               'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "y" }')
    with pytest.warns(UserWarning, match="parameter num_output does not apply to type 'relu'"):
        upgraded = upgrade_net(misplaced)
    assert upgraded.layer[1] == caffe_pb2.LayerParameter(name="r", type="ReLU", bottom=["x"], top=["y"])
    padded_relu = parse_prototxt('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }'
                                 ' layers { layer { name: "r" type: "relu" } bottom: "p" top: "y" }')
    with pytest.raises(ValueError, match="feed a single-bottom conv or pool layer, not 'r'"):
        upgrade_net(padded_relu)
    with pytest.raises(ValueError, match="unknown type 'convolution'"):
        upgrade_net(parse_prototxt('layers { layer { name: "c" type: "convolution" } }'))
