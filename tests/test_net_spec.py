"""NetSpec and the VGG16 FCN builders must write what real pycaffe wrote.

The references were produced by real ``caffe.NetSpec`` (tiny FCNs) and by the FCN
release's own net.py scripts run with real pycaffe; messages are compared, not text,
because float formatting differs between protobuf versions.
"""
import ast
import os

import pytest
from google.protobuf import text_format

from caffe_cases import ROOT
from netspec import backbones, caffe_pb2
from netspec.net_spec import (L, LayerParamError, NetSpec, P, Top, param_name_dict,
                              to_proto)
from netspec.prototxt import read_prototxt

VOC_MEAN = (104.00699, 116.66877, 122.67892)


def _tiny_net(builder, name):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 73, 101]))
    n.label = L.Input(shape=dict(dim=[1, 1, 73, 101]))
    builder(n, n.data, n.label, num_classes=21, widths=8, fc_width=16)
    net = n.to_proto()
    net.name = name
    return net


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_tiny_fcn_equals_real_netspec_output(variant):
    got = _tiny_net(getattr(backbones, "fcn" + variant), f"tiny-voc-fcn{variant}")
    want = read_prototxt(os.path.join(ROOT, "fcn", f"tiny_fcn{variant}", "net.prototxt"))
    assert got == want


def _voc_net(builder, split, data_root, **kwargs):
    """What the release's voc-fcn*/net.py writes, through our NetSpec and builders."""
    n = NetSpec()
    pydata_params = dict(split=split, mean=VOC_MEAN, seed=1337)
    if split == "train":
        pydata_params["sbdd_dir"] = data_root + "/sbdd/dataset"
        pylayer = "SBDDSegDataLayer"
    else:
        pydata_params["voc_dir"] = data_root + "/pascal/VOC2011"
        pylayer = "VOCSegDataLayer"
    n.data, n.label = L.Python(module="voc_layers", layer=pylayer, ntop=2,
                               param_str=str(pydata_params))
    builder(n, n.data, n.label, **kwargs)
    return n.to_proto()


def _without_param_str(net):
    """The param_str literals (compared as Python values) and a copy of net without them."""
    stripped = caffe_pb2.NetParameter()
    stripped.CopyFrom(net)
    literals = []
    for layer in stripped.layer:
        if layer.HasField("python_param"):
            literals.append(ast.literal_eval(layer.python_param.param_str))
            layer.python_param.ClearField("param_str")
    return literals, stripped


VOC_CASES = [
    ("voc-fcn32s", backbones.fcn32s, "../data", {}),
    ("voc-fcn16s", backbones.fcn16s, "../../data", {}),
    ("voc-fcn8s", backbones.fcn8s, "../data", {}),
    ("voc-fcn8s-atonce", backbones.fcn8s, "../data", dict(skip_scales=(0.01, 0.0001))),
]


@pytest.mark.parametrize("experiment,builder,data_root,kwargs", VOC_CASES,
                         ids=[case[0] for case in VOC_CASES])
@pytest.mark.parametrize("split,file", [("train", "train"), ("seg11valid", "val")])
def test_voc_nets_equal_release_net_py_output(experiment, builder, data_root, kwargs,
                                              split, file):
    got = _voc_net(builder, split, data_root, **kwargs)
    want = read_prototxt(os.path.join(ROOT, "netspec", experiment, file + ".prototxt"))
    got_literals, got_rest = _without_param_str(got)
    want_literals, want_rest = _without_param_str(want)
    assert got_literals == want_literals
    assert got_rest == want_rest


def test_deploy_equals_released_deploy_prototxt():
    want = read_prototxt(os.path.join(ROOT, "netspec", "voc-fcn8s", "deploy.prototxt"))
    assert backbones.deploy(backbones.fcn8s) == want


def test_vgg16_rejects_wrong_number_of_stage_widths():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    with pytest.raises(ValueError, match="5 stage widths"):
        backbones.vgg16(n, n.data, widths=(8, 8))


def test_vgg16_suffix_names_every_layer():
    n = NetSpec()
    n.color = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    backbones.vgg16(n, n.color, widths=4, fc_width=4, suffix="color")
    names = [layer.name for layer in n.to_proto().layer[1:]]
    assert names[0] == "conv1_1color" and names[-1] == "drop7color"
    assert all(name.endswith("color") for name in names)


# --- the DSL itself -------------------------------------------------------------------------

def _input(n, name="data", dims=(1, 3, 8, 8)):
    n[name] = L.Input(shape=dict(dim=list(dims)))
    return n[name]


def test_keywords_route_to_type_param_layer_fields_and_sub_messages():
    n = NetSpec()
    _input(n)
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=4, pad=[1], loss_weight=0.5,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2)],
                           weight_filler=dict(type="xavier"))
    layer = n.to_proto().layer[1]
    assert list(layer.convolution_param.kernel_size) == [3]  # repeated from a scalar
    assert list(layer.convolution_param.pad) == [1]  # repeated from a list
    assert layer.convolution_param.weight_filler.type == "xavier"
    assert list(layer.loss_weight) == [0.5]  # not a ConvolutionParameter field
    assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 1)]
    assert not layer.HasField("pooling_param")


def test_enums_come_from_params():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    with pytest.raises(AttributeError, match="NoSuchParameter"):
        P.NoSuch


def test_ntop_zero_one_many_and_auto_names():
    n = NetSpec()
    _input(n)
    first, second = L.Slice(n.data, ntop=2, slice_point=[1])
    assert isinstance(first, Top) and isinstance(second, Top)
    n.silence = L.Silence(first, second, ntop=0)
    n.out = L.ReLU(L.ReLU(second))
    layers = n.to_proto().layer
    assert [(x.name, list(x.top)) for x in layers] == [
        ("data", ["data"]),
        ("Slice1", ["Slice1", "Slice2"]),  # pycaffe names the layer after its first top
        ("silence", []),
        ("ReLU1", ["ReLU1"]),
        ("out", ["out"]),
    ]
    assert list(layers[2].bottom) == ["Slice1", "Slice2"]
    assert [x.name for x in to_proto(L.Silence(first, ntop=0)).layer] == [
        "Input1", "Slice1", "Silence1"]


def test_in_place_tops_keep_the_bottom_name():
    n = NetSpec()
    _input(n)
    n.conv = L.Convolution(n.data, kernel_size=1, num_output=2)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.drop = L.Dropout(n.relu, in_place=True, dropout_ratio=0.5)
    n.pool = L.Pooling(n.drop, pool=P.Pooling.MAX, kernel_size=2)
    layers = n.to_proto().layer
    assert [(x.name, list(x.bottom), list(x.top)) for x in layers[2:]] == [
        ("relu", ["conv"], ["conv"]),
        ("drop", ["conv"], ["conv"]),
        ("pool", ["conv"], ["pool"]),
    ]


def test_layers_follow_their_bottoms_in_assignment_order():
    n = NetSpec()
    data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.b = L.ReLU(L.TanH(data))
    n.a = L.Sigmoid(data)
    assert [x.name for x in n.to_proto().layer] == ["Input1", "TanH1", "b", "a"]


def test_name_keyword_overrides_the_assigned_name_as_in_pycaffe():
    n = NetSpec()
    n.data = L.Input(name="input", shape=dict(dim=[1]))
    layer = n.to_proto().layer[0]
    assert (layer.name, list(layer.top)) == ("input", ["data"])


def test_deconvolution_accepts_flat_convolution_keywords():
    n = NetSpec()
    _input(n)
    flat = L.Deconvolution(n.data, num_output=3, kernel_size=4, stride=2, bias_term=False)
    nested = L.Deconvolution(n.data, convolution_param=dict(
        num_output=3, kernel_size=4, stride=2, bias_term=False))
    assert flat.fn.fields == nested.fn.fields


def test_borrowed_param_messages_never_shadow_layer_fields():
    """Flat keywords of types that borrow a message cannot change what pycaffe would write."""
    layer_fields = set(caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name)
    names = param_name_dict()
    assert names["Convolution"] == "convolution" and names["TanH"] == "tanh"
    for type_name in ("Deconvolution", "Im2col", "LSTM", "RNN"):
        message = getattr(caffe_pb2.LayerParameter(), names[type_name] + "_param")
        assert not layer_fields & set(message.DESCRIPTOR.fields_by_name)


@pytest.mark.parametrize("call,words", [
    (lambda d: L.Convolution(d, num_output=1, kernal_size=3),
     ["L.Convolution", "kernal_size", "ConvolutionParameter"]),
    (lambda d: L.Split(d, bogus=1), ["L.Split", "bogus", "LayerParameter"]),
    (lambda d: L.Convolution(d, weight_filler=dict(tipe="xavier")),
     ["L.Convolution", "convolution_param.weight_filler", "tipe"]),
    (lambda d: L.Convolution(d, param=[dict(lr_mult=1), dict(lr_mul=2)]),
     ["L.Convolution", "param[1]", "lr_mul"]),
    (lambda d: L.Convolution(d, num_output="many"), ["convolution_param.num_output", "many"]),
    (lambda d: L.Convolution(d, weight_filler="xavier"), ["weight_filler", "dict"]),
    (lambda d: L.ReLU(d, ntop=-1), ["L.ReLU", "ntop"]),
    (lambda d: L.ReLU(in_place=True), ["L.ReLU", "in_place"]),
])
def test_bad_keywords_fail_at_the_call_naming_layer_and_keyword(call, words):
    data = L.Input(shape=dict(dim=[1]))
    with pytest.raises(LayerParamError) as error:
        call(data)
    assert isinstance(error.value, TypeError)
    for word in words:
        assert word in str(error.value)


def test_bottoms_must_be_tops():
    pair = L.Python(module="m", layer="l", ntop=2)
    with pytest.raises(TypeError, match="bottom 0 is a tuple"):
        L.ReLU(pair)
    n = NetSpec()
    with pytest.raises(TypeError, match="unpack"):
        n.pair = pair
    with pytest.raises(AttributeError, match="nothing"):
        n.nothing


def test_text_output_parses_back_to_the_same_message():
    n = NetSpec()
    _input(n)
    backbones.fcn8s(n, n.data, widths=2, fc_width=2, num_classes=3)
    net = n.to_proto()
    net.layer.add(name="lrn", type="LRN").lrn_param.alpha = 1e-4  # a float32 that prints oddly
    assert text_format.Parse(str(net), caffe_pb2.NetParameter()) == net


def test_deep_nets_do_not_hit_the_recursion_limit():
    top = L.Input(shape=dict(dim=[1]))
    for _ in range(3000):
        top = L.ReLU(top)
    assert len(to_proto(top).layer) == 3001
