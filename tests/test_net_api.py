"""The pycaffe Net API beyond one forward/backward: constructors, partial runs, batching, reshaping,
sharing, hooks, filtering, legacy nets, and the facade a pycaffe script imports."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from caffe_cases import ROOT, Case, assert_close
from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.net import Net

TEST, TRAIN = caffe_pb2.TEST, caffe_pb2.TRAIN
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _net_from_text(text: str, phase: int = TEST, **kwargs) -> Net:
    return Net(parse_prototxt(textwrap.dedent(text)), phase, **kwargs)


SMALL = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def test_split_fanout_names_like_pycaffe() -> None:
    case = Case("layers", "split_fanout")
    net = Net(case.prototxt, TEST)
    assert net.inputs == ["data", "target"]
    assert net.outputs == ["loss"]
    assert "conv1_conv1_0_split_0" in net._blob_names and "conv1_conv1_0_split" in net._layer_names
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["out"] == 0.0
    assert net.bottom_names["conv_a"] == ["conv1_conv1_0_split_0"]
    assert net.top_names["conv1_conv1_0_split"] == ["conv1_conv1_0_split_0", "conv1_conv1_0_split_1"]
    assert list(net.params) == ["conv1", "conv_a", "conv_b"]
    assert net.layer_dict["conv1"].type == "Convolution" and len(net.layer_dict["conv1"].blobs) == 2


def test_legacy_constructor_and_weights_keyword(tmp_path) -> None:
    case = Case("layers", "conv_k3_p1")
    model = tmp_path / "w.caffemodel"
    model.write_bytes(case.caffemodel_bytes())
    legacy = Net(case.prototxt, str(model), TEST)
    modern = Net(case.prototxt, TEST, weights=str(model))
    np.testing.assert_array_equal(legacy.params["out"][0].data, modern.params["out"][0].data)
    with pytest.raises(ValueError, match="phase"):
        Net(case.prototxt, 7)


def test_forward_kwargs_partial_runs_and_outputs() -> None:
    net = _net_from_text(SMALL)
    x = np.random.RandomState(0).randn(2, 3, 5, 6).astype(np.float32)
    full = net.forward(data=x)["pool"].copy()
    assert full.shape == (2, 4, 3, 3)
    # Re-running only the last layer from the stored conv blob gives the same pool.
    net.blobs["pool"].data[...] = 0
    out = net.forward(start="pool")
    np.testing.assert_array_equal(out["pool"], full)
    upto = net.forward(end="relu", data=x)  # ends after the in-place ReLU
    assert set(upto) == {"conv"} and (upto["conv"] >= 0).all()
    with pytest.raises(ValueError, match="not inputs"):
        net.forward(pixels=x)
    with pytest.raises(ValueError, match="batch size"):
        net.forward(data=x[:1])


def test_backward_from_user_output_diff_matches_autograd_reference() -> None:
    net = _net_from_text("force_backward: true\n" + SMALL)
    rng = np.random.RandomState(1)
    x = rng.randn(2, 3, 5, 6).astype(np.float32)
    net.forward(data=x)
    top_diff = rng.randn(2, 4, 3, 3).astype(np.float32)
    grads = net.backward(pool=top_diff)
    import torch
    w = torch.tensor(net.params["conv"][0].data, requires_grad=True)
    b = torch.tensor(net.params["conv"][1].data, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(xt, w, b, padding=1)), 2, 2, ceil_mode=True)
    y.backward(torch.tensor(top_diff))
    assert_close(grads["data"], xt.grad.numpy(), 1e-5, "data diff")
    assert_close(net.params["conv"][0].diff, w.grad.numpy(), 1e-5, "conv weight diff")
    # Param diffs accumulate over backward calls until cleared, as in Caffe.
    net.backward(pool=top_diff)
    assert_close(net.params["conv"][0].diff, 2 * w.grad.numpy(), 1e-5, "accumulated diff")
    net.clear_param_diffs()
    assert not net.params["conv"][0].diff.any()


def test_forward_all_batches_and_trims() -> None:
    net = _net_from_text(SMALL)
    x = np.random.RandomState(2).randn(5, 3, 5, 6).astype(np.float32)
    out = net.forward_all(data=x)["pool"]
    assert out.shape == (5, 4, 3, 3)
    single = np.concatenate([net.forward(data=x[i:i + 2] if i + 2 <= 5 else np.concatenate([x[4:], x[:1]]))["pool"][:min(2, 5 - i)]
                             for i in range(0, 5, 2)])
    np.testing.assert_allclose(out, single, rtol=1e-6)


def test_reshape_follows_new_input_size() -> None:
    net = _net_from_text(SMALL)
    net.blobs["data"].reshape(1, 3, 9, 11)
    net.reshape()
    assert net.blobs["pool"].shape == (1, 4, 5, 6)
    net.blobs["data"].data[...] = 1.0
    assert net.forward()["pool"].shape == (1, 4, 5, 6)


def test_share_with_uses_the_same_weights() -> None:
    train = _net_from_text(SMALL, TRAIN)
    test = _net_from_text(SMALL, TEST)
    test.share_with(train)
    train.params["conv"][0].data[...] = 0.5
    np.testing.assert_array_equal(test.params["conv"][0].data, 0.5)


def test_hooks_run_around_each_layer() -> None:
    net = _net_from_text(SMALL)
    calls = []
    net.before_forward(lambda i: calls.append(("before", i)))
    net.after_forward(lambda i: calls.append(("after", i)))
    net.forward()
    assert calls == [(k, i) for i in range(4) for k in ("before", "after")]


def test_phase_level_stage_filtering() -> None:
    text = SMALL + """
    layer { name: "train_only" type: "ReLU" bottom: "pool" top: "t" include { phase: TRAIN } }
    layer { name: "deep" type: "ReLU" bottom: "pool" top: "d" include { min_level: 2 } }
    layer { name: "staged" type: "ReLU" bottom: "pool" top: "s" include { stage: "viz" } }
    """
    assert "train_only" in _net_from_text(text, TRAIN)._layer_names
    assert "train_only" not in _net_from_text(text, TEST)._layer_names
    assert "deep" in _net_from_text(text, TEST, level=2)._layer_names
    assert "deep" not in _net_from_text(text, TEST)._layer_names
    assert "staged" in _net_from_text(text, TEST, stages=["viz"])._layer_names


def test_v1_net_and_legacy_caffemodel_run_like_caffe() -> None:
    folder = os.path.join(ROOT, "upgrade")
    forward = dict(np.load(os.path.join(folder, "forward.npz")))
    data = np.load(os.path.join(folder, "inputs.npz"))["data"]
    loaded = dict(np.load(os.path.join(folder, "params_as_loaded.npz")))
    for prototxt, model in (("v1_deploy.prototxt", "v1.caffemodel"),
                            ("upgraded_deploy.prototxt", "v1.caffemodel"),
                            ("upgraded_deploy.prototxt", "upgraded.caffemodel")):
        net = Net(os.path.join(folder, prototxt), TEST, weights=os.path.join(folder, model))
        for key, want in loaded.items():
            layer, index = key.rsplit("/", 1)
            np.testing.assert_array_equal(net.params[layer][int(index)].data, want)
        net.blobs["data"].data[...] = data
        net.forward()
        for name, want in forward.items():
            assert_close(net.blobs[name].data, want, 1e-5, f"{prototxt}: {name}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no CUDA device exists")
def test_set_mode_gpu_without_cuda_refuses_unless_fallback_is_asked(monkeypatch) -> None:
    """Real Caffe aborts a GPU forward without a GPU; a silent CPU run would hide it."""
    from runner import device
    monkeypatch.delenv(device.CPU_FALLBACK_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match="no CUDA device.*set_mode_cpu"):
        device.set_mode_gpu()
    monkeypatch.setenv(device.CPU_FALLBACK_VARIABLE, "1")
    try:
        with pytest.warns(RuntimeWarning, match="running on the CPU"):
            device.set_mode_gpu()
        net = _net_from_text(SMALL)
        net.forward()
        assert net.graph.blobs["pool"].device.type == "cpu"
    finally:
        device.set_mode_cpu()


PY_LAYERS = '''
import ast
import numpy as np
from fcn.caffe import Layer

class Ramp(Layer):
    """A data layer: fills its top with a ramp scaled by param_str's 'scale'."""
    def setup(self, bottom, top):
        self.scale = ast.literal_eval(self.param_str)["scale"]
        self.seen_phase = self.phase
    def reshape(self, bottom, top):
        top[0].reshape(2, 3, 4, 5)
    def forward(self, bottom, top):
        top[0].data[...] = self.scale * np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5) / 120
    def backward(self, top, propagate_down, bottom):
        pass

class Cube(Layer):
    """y = x**3 with its own backward: gradients must flow through it."""
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 3
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 3 * bottom[0].data ** 2 * top[0].diff
'''


def test_python_layers_feed_and_backpropagate(tmp_path) -> None:
    (tmp_path / "my_layers.py").write_text(PY_LAYERS)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(textwrap.dedent("""
    layer { name: "data" type: "Python" top: "data" python_param { module: "my_layers" layer: "Ramp" param_str: "{'scale': 2.0}" } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "cube" type: "Python" bottom: "conv" top: "cubed" python_param { module: "my_layers" layer: "Cube" } }
    layer { name: "target" type: "DummyData" top: "target" dummy_data_param { shape { dim: 2 dim: 2 dim: 4 dim: 5 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "cubed" bottom: "target" top: "loss" }
    """))
    net = Net(str(prototxt), TRAIN)
    assert net.layers[0].seen_phase == TRAIN and net.layers[0].scale == 2.0
    net.forward()
    net.backward()
    import torch
    x = torch.tensor(net.blobs["data"].data)
    w = torch.tensor(net.params["conv"][0].data, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, torch.tensor(net.params["conv"][1].data)) ** 3
    loss = (y ** 2).sum() / (2 * 2)
    loss.backward()
    assert_close(net.blobs["loss"].data, loss.detach().numpy().reshape(1), 1e-5, "loss")
    assert_close(net.params["conv"][0].diff, w.grad.numpy(), 1e-4, "grad through the Python layer")


def test_pycaffe_script_runs_unmodified(tmp_path) -> None:
    case = Case("layers", "conv_relu_inplace")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
    import sys
    import caffe
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2
    caffe.set_mode_cpu()
    net = caffe.Net({case.prototxt!r}, caffe.TEST)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    assert isinstance(n.to_proto(), caffe_pb2.NetParameter)
    assert "Convolution" in caffe.layer_type_list()
    print("ok", sys.argv[1], net.blobs["conv"].data.shape)
    """))
    result = subprocess.run([sys.executable, "-m", "fcn", "pycaffe", str(script), "hello"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok hello (2, 4, 6, 7)"


def test_layer_type_list_covers_the_runner_contract() -> None:
    from fcn import caffe
    wanted = {"Input", "DummyData", "Python", "Convolution", "Deconvolution", "Pooling", "ReLU", "PReLU", "Sigmoid",
              "TanH", "Power", "AbsVal", "Dropout", "LRN", "BatchNorm", "Scale", "Bias", "Eltwise", "Concat",
              "Slice", "Split", "Crop", "InnerProduct", "Flatten", "Reshape", "Softmax", "SoftmaxWithLoss",
              "SigmoidCrossEntropyLoss", "EuclideanLoss", "Accuracy", "ArgMax", "Silence"}
    assert wanted <= set(caffe.layer_type_list())
