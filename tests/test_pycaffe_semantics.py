"""pycaffe API facts recorded from real BVLC pycaffe (fixtures/caffe_reference/pycaffe, README section 8).

A script written against fcn-caffe must behave the same on real Caffe and the other way round: blob
shapes (0-d losses), the order of ``net.outputs``, which tops count as losses, which nets are refused.
"""
import json
import os

import numpy as np
import pytest

import fcn.caffe as caffe
from caffe_cases import ROOT, Case, assert_close

PYCAFFE = os.path.join(ROOT, "pycaffe")


def _observed(name: str) -> dict:
    with open(os.path.join(PYCAFFE, name, "meta.json")) as f:
        return json.load(f)["observed"]


def _net(name: str, phase: int = caffe.TEST, prototxt: str = "net.prototxt") -> caffe.Net:
    return caffe.Net(os.path.join(PYCAFFE, name, prototxt), phase)


def test_loss_and_accuracy_tops_and_scalar_params_are_0d():
    seen = _observed("reported_shapes")
    net = _net("reported_shapes")
    net.forward()
    for blob in ("loss", "acc"):
        assert net.blobs[blob].data.shape == tuple(seen[f"blobs[{blob}].data.shape"])
        assert net.blobs[blob].shape == tuple(seen[f"blobs[{blob}].shape"])
    with pytest.raises(IndexError):
        net.blobs["loss"].data[0]  # as in real pycaffe: a 0-d array has no first element
    for layer in ("prelu_shared", "prelu", "scale0", "scale0_bias", "scale1"):
        assert [p.data.shape for p in net.params[layer]] == [tuple(s) for s in seen[f"params[{layer}]"]], layer
    assert float(net.params["prelu_shared"][0].data) == seen["params[prelu_shared][0] initial value (default filler constant 0.25)"]


def test_outputs_are_sorted_by_name_inputs_keep_definition_order():
    seen = _observed("outputs_order")
    net = _net("outputs_order")
    assert net.inputs == seen["net.inputs"]
    assert net.outputs == seen["net.outputs"]
    assert sorted(net.forward()) == seen["net.forward()_keys_sorted"]
    assert list(net.blobs) == seen["net.blobs_keys"]


def test_loss_weight_on_a_non_loss_top_makes_it_a_loss():
    """InnerProduct with ``loss_weight: 0.5``: Caffe back-propagates 0.5 from every element of its top."""
    case = Case("pycaffe", "loss_weight_innerproduct")
    seen = _observed("loss_weight_innerproduct")
    net = _net("loss_weight_innerproduct", caffe.TRAIN)
    for key, value in case.arrays("params").items():
        layer, index = key.rsplit("/", 1)
        net.params[layer][int(index)].data[...] = value
    for name, value in case.arrays("inputs").items():
        net.blobs[name].data[...] = value
    assert dict(net.blob_loss_weights) == seen["blob_loss_weights"]
    assert (net.blobs["ip"].diff == 0.5).all()  # Caffe writes the weight into the diff at construction
    assert net.outputs == seen["net.outputs"]
    out = net.forward()
    np.testing.assert_allclose(out["ip"], seen["net.forward()_returns"]["ip"], rtol=1e-5)
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_array_equal(net.blobs["ip"].diff, seen["ip_diff_after_backward"])
    for name, want in case.arrays("diffs").items():
        assert_close(net.blobs[name].diff, want, 1e-4, f"blob {name} diff")
    for key, want in case.arrays("param_diffs").items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].diff, want, 1e-4, f"param {key} diff")


@pytest.mark.parametrize("variant, prototxt", [("no_loss_weight", "net_no_loss_weight.prototxt"),
                                               ("loss_weight_1_0", "net_loss_weight_1_0.prototxt")])
def test_softmax_with_loss_refuses_a_second_top_as_caffe_does(variant, prototxt):
    seen = _observed("softmax_loss_two_tops")[variant]
    assert seen["returncode"] != 0 and "specified once per top blob" in seen["fatal_message"]
    with pytest.raises(ValueError, match="specified once per top blob"):
        _net("softmax_loss_two_tops", caffe.TRAIN, prototxt)


def test_loss_weights_must_be_one_per_top(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "x" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 } } }\n'
                    'layer { name: "s" type: "Slice" bottom: "a" top: "c" top: "d" loss_weight: 1 }\n')
    with pytest.raises(ValueError, match=r"layer 's' \(Slice\): 1 loss_weight value\(s\) for 2 top\(s\)"):
        caffe.Net(str(path), caffe.TRAIN)


def test_forward_start_end_runs_exactly_the_layers_caffe_runs():
    """full forward(x1); data=x2; forward(end=conv1); forward(start=relu1); data=x1; forward(start=ip, end=ip):
    the keys each call returns, the blobs it changes, and every blob after the first three calls."""
    seen = _observed("forward_start_end")
    case = Case("pycaffe", "forward_start_end")
    after = case.arrays("blobs_after_each_call")
    x = case.arrays("inputs")
    net = caffe.Net(case.prototxt, caffe.TEST, weights=case.path("net.caffemodel"))

    def snapshot():
        return {name: blob.data.copy() for name, blob in net.blobs.items()}

    def changed(before):
        return sorted(name for name, blob in net.blobs.items() if not np.array_equal(blob.data, before[name]))

    def check(stage):
        for name in net.blobs:
            assert_close(net.blobs[name].data, after[f"{stage}/{name}"], 1e-5, f"{stage}: {name}")

    net.blobs["data"].data[...] = x["x1"]
    assert sorted(net.forward()) == seen["forward()_keys"]
    check("full_x1")
    before = snapshot()
    net.blobs["data"].data[...] = x["x2"]
    assert sorted(net.forward(end="conv1")) == seen['forward(end="conv1")_keys']
    assert changed(before) == sorted(seen['forward(end="conv1")_changed_blobs'])
    check("end_conv1_x2")
    before = snapshot()
    assert sorted(net.forward(start="relu1")) == seen['forward(start="relu1")_keys']
    assert changed(before) == sorted(seen['forward(start="relu1")_changed_blobs'])
    check("start_relu1")
    before = snapshot()
    net.blobs["data"].data[...] = x["x1"]
    assert sorted(net.forward(start="ip", end="ip")) == seen['forward(start="ip", end="ip")_keys']
    assert changed(before) == sorted(seen['forward(start="ip", end="ip")_changed_blobs'])
    assert sorted(net.forward(data=x["x2"], end="relu1")) == seen['forward(data=x2, end="relu1")_keys']


def test_fan_out_split_names_and_wiring():
    seen = _observed("fanout_names")
    net = _net("fanout_names")
    assert list(net.blobs) == seen["net.blobs_keys"]
    assert list(net._layer_names) == seen["net._layer_names"] == list(net.layer_dict)
    assert [layer.type for layer in net.layers] == seen["layer_types"]
    assert list(net.params) == seen["net.params_keys"]
    assert dict(net.top_names) == seen["net.top_names"]
    assert dict(net.bottom_names) == seen["net.bottom_names"]
    assert (net.inputs, net.outputs) == (seen["net.inputs"], seen["net.outputs"])


@pytest.mark.parametrize("experiment, prototxt, kind", [("siftflow-fcn32s", "trainval.prototxt", "siftflow"),
                                                       ("voc-fcn32s", "val.prototxt", "voc"),
                                                       ("voc-fcn32s", "train.prototxt", "sbd")])
def test_the_releases_python_data_layer_modules_resolve(experiment, prototxt, kind, tmp_path, monkeypatch):
    """``module: "siftflow_layers"`` in the release's own prototxt runs without the release's files."""
    from data_layers.synthetic import write_dataset
    from netspec import caffe_pb2
    from netspec.prototxt import read_prototxt, write_prototxt
    released = read_prototxt(os.path.join(ROOT, "netspec", experiment, prototxt), caffe_pb2.NetParameter)
    data_layer = released.layer[0]
    assert data_layer.python_param.module.endswith("_layers")
    write_dataset(kind, tmp_path / "data", n=2, size=(24, 32))
    only_data = caffe_pb2.NetParameter()
    only_data.layer.add().CopyFrom(data_layer)
    (tmp_path / "run").mkdir()
    write_prototxt(tmp_path / "run" / "data.prototxt", only_data)
    monkeypatch.chdir(tmp_path / "run")  # the release's paths are relative to where solve.py runs
    net = caffe.Net("data.prototxt", caffe.TRAIN)
    net.forward()
    assert net.blobs["data"].data.shape[:2] == (1, 3) and net.blobs["data"].data.any()
