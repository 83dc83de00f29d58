"""The benchmark harness on toy sizes, and each runner speed option against plain float32 eager.

torch.compile is checked with the ``aot_eager`` backend: the same tracing, stretch planning and fallback
as with inductor, in seconds rather than minutes on a CPU; ``make bench`` holds inductor's output on the
full FCN-8s to 1e-5 of float32 eager.
"""
import json
import warnings

import numpy as np
import pytest
import torch

from bench import report
from bench.nets import fcn8s_deploy, fcn8s_train, random_image, randomize
from bench.run import CASES, fresh_demo_record, merged, run_cases, write
from bench.sizes import QUICK
from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.net import Net


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: toy-sized ops on one thread


def _net(param, seed=0):
    net = Net(param, caffe_pb2.TEST)
    randomize(net, seed)
    return net


def _forward(net, image, **outputs):
    with torch.no_grad():
        net.forward(data=image)
    return {name: net.blobs[name].tensor().clone() for name in outputs or net.outputs}


@pytest.fixture(scope="module")
def toy():
    """A small FCN-8s deploy net, its image and its float32 eager output."""
    torch.set_num_threads(1)
    net = _net(fcn8s_deploy(QUICK))
    image = random_image((1, 3, QUICK.image, QUICK.image)).numpy()
    return net, image, _forward(net, image)["score"]


def _relative_error(got, want):
    return float((got.float() - want).abs().max() / want.abs().max())


def test_quick_bench_runs_every_case_and_writes_the_report(tmp_path):
    results = run_cases(QUICK, threads=1)
    markdown, raw = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    write(results, str(markdown), str(raw))
    assert set(json.loads(raw.read_text())["cases"]) == set(CASES)
    text = markdown.read_text()
    for heading in ("## Targets", "## 1. Forward", "## 2. Training", "## 3. Amortization", "## 4. Loading",
                    "## 5. Data layers", "## 6. Scoring", "## 7. GPU", "## 8. Shift-and-stitch", "## 9. Model-zoo"):
        assert heading in text
    assert results["machine"]["commit"] in text
    forward = results["cases"]["forward"]
    assert forward["checks"]["plain_pytorch_relative_error"] < 1e-5
    assert forward["checks"]["opencv_dnn_direct_relative_error"] < 1e-4
    assert forward["checks"]["plain_bf16_weights_relative_error"] < 5e-2
    zoo = results["cases"]["zoo"]["nets"]["squeezenet_v1.1"]["threads"]["1"]
    assert zoo["relative_errors"]["opencv_dnn"] < 1e-4 and zoo["opencv_over_runner"] > 0
    assert results["cases"]["amortize"]["grid"] == [1, 1]
    assert results["cases"]["dilation"]["relative_error"] < 1e-5 and results["cases"]["dilation"]["dilated_speedup"] > 0
    loss = results["cases"]["training"]["first_loss"]
    assert loss["solver"] == pytest.approx(loss["plain_pytorch"], rel=1e-4)
    assert all(r["images_per_second"] > 0 for r in results["cases"]["data"]["delivery"])
    assert report.render(results, fresh_demo_record()) == text
    assert "## 10. `make demo` from a fresh clone" in text  # bench/demo_fresh_clone.json is committed


def test_a_merged_run_keeps_the_other_cases_and_says_when_they_ran(tmp_path):
    earlier = run_cases(QUICK, ["dilation"], threads=1)
    later = merged(earlier, run_cases(QUICK, ["scoring"], threads=1))
    assert set(later["cases"]) == {"dilation", "scoring"} and later["kept_cases"] == ["dilation"]
    again = merged(later, run_cases(QUICK, ["dilation"], threads=1))
    assert again["kept_cases"] == ["scoring"] and again["case_machines"]["scoring"] == later["machine"]
    text = report.render(again)
    assert "## 6. Scoring" in text and "## 8. Shift-and-stitch" in text
    assert f"Figures kept from earlier runs (`--merge`): scoring at commit `{later['machine']['commit']}" in text


def _nnpack_calls(fn):
    with torch.profiler.profile() as profile:
        fn()
    return sum(event.count for event in profile.key_averages() if event.key == "aten::_nnpack_spatial_convolution")


def test_winograd_matches_float32_and_runs_every_stride1_convolution_through_nnpack():
    # batch 2: convolved one image at a time; conv1_1 pads 100 (NNPACK pads less than the kernel only)
    param = fcn8s_deploy(QUICK, batch=2)
    net = _net(param)
    image = random_image((2, 3, QUICK.image, QUICK.image)).numpy()
    reference = _forward(net, image)["score"]
    convolutions = sum(layer.type == "Convolution" for layer in param.layer)
    net.set_speed(winograd=True)
    calls = _nnpack_calls(lambda: _forward(net, image))
    assert calls == 2 * convolutions
    got = _forward(net, image)["score"]
    assert not torch.equal(got, reference)          # a different algorithm did run...
    assert _relative_error(got, reference) < 1e-4   # ...to within its rounding
    net.set_speed()
    assert _nnpack_calls(lambda: _forward(net, image)) == 0
    assert torch.equal(_forward(net, image)["score"], reference)


def test_winograd_leaves_training_to_the_exact_convolutions():
    train = _net(fcn8s_train(QUICK))
    image = random_image((1, 3, QUICK.image, QUICK.image)).numpy()
    label = np.random.default_rng(0).integers(0, QUICK.classes, (1, 1, QUICK.image, QUICK.image)).astype(np.float32)

    def step():
        train.forward(data=image, label=label)
        train.clear_param_diffs()
        train.backward()
        return train.blobs["loss"].data.copy(), train.params["conv1_1"][0].diff.copy()

    want = step()
    train.set_speed(winograd=True)
    assert _nnpack_calls(step) == 0
    got = step()
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_winograd_is_refused_with_compile_or_autocast(toy):
    net, _, _ = toy
    with pytest.raises(ValueError, match="winograd.*compile"):
        net.set_speed(winograd=True, compile=True)
    with pytest.raises(ValueError, match="winograd.*autocast are alternatives"):
        net.set_speed(winograd=True, autocast=torch.bfloat16)


def test_winograd_leaves_an_empty_batch_to_torch():
    net = Net(parse_prototxt("""
    input: "data" input_shape { dim: 0 dim: 2 dim: 6 dim: 6 }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }"""), caffe_pb2.TEST)
    net.set_speed(winograd=True)
    with torch.no_grad():
        net.forward()
    assert net.blobs["conv"].shape == (0, 3, 6, 6)


def test_bf16_autocast_keeps_outputs_and_losses_float32():
    train = _net(fcn8s_train(QUICK))
    image = random_image((1, 3, QUICK.image, QUICK.image)).numpy()
    label = np.random.default_rng(0).integers(0, QUICK.classes, (1, 1, QUICK.image, QUICK.image)).astype(np.float32)
    with torch.no_grad():
        want_loss = float(train.forward(data=image, label=label)["loss"])
        want_score = train.blobs["score"].tensor().clone()
    train.set_speed(autocast=torch.bfloat16)
    with torch.no_grad():
        got_loss = train.forward(data=image, label=label)["loss"]
    assert train.blobs["conv1_1"].tensor().dtype == torch.bfloat16      # the convolutions did run in bf16
    assert train.blobs["loss"].tensor().dtype == torch.float32
    assert _relative_error(train.blobs["score"].tensor(), want_score) < 3e-2
    assert float(got_loss) == pytest.approx(want_loss, rel=3e-2)


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_autocast_deploy_output_is_float32(toy, dtype, tolerance):
    net, image, reference = toy
    fast = Net(fcn8s_deploy(QUICK), caffe_pb2.TEST)
    fast.share_with(net)
    fast.set_speed(autocast=dtype)
    out = fast.forward(data=image)["score"]
    assert fast.blobs["conv1_1"].tensor().dtype == dtype
    assert out.dtype == np.float32
    assert 0 < _relative_error(torch.from_numpy(out), reference) < tolerance


def test_compile_matches_float32_and_keeps_every_blob(toy):
    net, image, reference = toy
    fast = Net(fcn8s_deploy(QUICK), caffe_pb2.TEST)
    fast.share_with(net)
    fast.set_speed(compile="aot_eager")
    got = _forward(fast, image, score=1, pool3=1)
    plan = fast.graph._plan()
    assert [stretch is None for _, _, stretch in plan] == [True, False]  # Input, then one compiled stretch
    assert plan[1][2].failure is None and plan[1][2]._compiled
    assert _relative_error(got["score"], reference) < 1e-5
    assert got["pool3"].shape == net.blobs["pool3"].shape
    assert fast.blobs["pool3"].data.flags.c_contiguous  # NCHW to Python, whatever layout the compiled code chose
    fast.blobs["data"].reshape(1, 3, QUICK.image + 8, QUICK.image + 8)   # a new shape: traced again
    fast.reshape()
    with torch.no_grad():
        fast.forward()
    assert len(plan[1][2]._compiled) == 2


def test_compile_falls_back_to_eager_when_a_layer_cannot_be_traced(toy):
    net, image, reference = toy
    fast = Net(fcn8s_deploy(QUICK), caffe_pb2.TEST)
    fast.share_with(net)
    pool = next(s for s in fast.graph.slots if s.name == "pool3")
    plain_forward = pool.impl.forward
    pool.impl.forward = lambda bottoms, params: plain_forward(bottoms, params) if float(bottoms[0].max()) > -1e30 \
        else []  # a value read on the host: fake tensors have none, so tracing fails
    fast.set_speed(compile="aot_eager")
    with pytest.warns(RuntimeWarning, match="run without torch.compile"):
        got = _forward(fast, image, score=1)
    assert _relative_error(got["score"], reference) < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; later forwards go straight to eager
        _forward(fast, image)


PYTHON_IN_THE_MIDDLE = """
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "double" type: "Python" bottom: "conv1" top: "doubled"
        python_param { module: "double_layer" layer: "Double" } }
layer { name: "score" type: "Convolution" bottom: "doubled" top: "score"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""

DOUBLE_LAYER = """
from fcn.caffe import Layer
class Double(Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
"""


def test_python_layers_stay_eager_and_see_float32(tmp_path):
    (tmp_path / "double_layer.py").write_text(DOUBLE_LAYER)
    (tmp_path / "net.prototxt").write_text(PYTHON_IN_THE_MIDDLE)
    net = Net(str(tmp_path / "net.prototxt"), caffe_pb2.TRAIN)  # the module is found next to the prototxt
    image = random_image((1, 3, 16, 16)).numpy()
    label = np.random.default_rng(0).integers(0, 4, (1, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = float(net.forward(data=image, label=label)["loss"])
    net.set_speed(compile="aot_eager", autocast=torch.bfloat16)
    with torch.no_grad():
        got = float(net.forward(data=image, label=label)["loss"])
    assert [(net.graph.slots[first].name, stretch is None) for first, _, stretch in net.graph._plan()] == \
        [("input", True), ("conv1", False), ("double", True), ("score", False)]
    assert net.blobs["conv1"].tensor().dtype == torch.float32  # what the Python layer reads
    assert got == pytest.approx(want, rel=3e-2)
    net.forward(data=image, label=label)  # gradients on: the plain loop runs, so backward works
    net.backward()
    assert net.params["conv1"][0].diff.any()
