"""Inference runs a convolution with the affine layers and ReLU in place after it as one oneDNN call, and an
affine chain as one pass (runner.fusion): the same blobs as Caffe's layer-by-layer loop, the parameters'
changes followed through torch and through numpy, hooks and partial forwards respected. Also the layers'
inference forms (MAX pooling through oneDNN, LRN by shifted sums) and channels-last blobs read as NCHW."""
import itertools

import numpy as np
import pytest
import torch

from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.fusion import AFFINE, CONVOLUTION, LAYER
from runner.layers.lrn import LRN
from runner.layers.pooling import Pooling
from runner.net import Net

TEST = caffe_pb2.TEST

# in place after conv1: BatchNorm, Scale, ReLU (ResNet's form); bn2 writes a new top, then Scale and ReLU in
# place on it (MobileNet v2's form), so conv2's own top stays a blob of its own
NET = """
input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 1 group: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "scale2" type: "Scale" bottom: "bn2" top: "bn2" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "bn2" top: "bn2" relu_param { negative_slope: 0.1 } }
layer { name: "pool" type: "Pooling" bottom: "bn2" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
"""


def _randomize(net, seed=0):
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.uniform(0.5, 1.5, blob.shape) if blob.shape == (1,) else rng.normal(0, 1, blob.shape)
    for name in ("bn1", "bn2"):  # a positive variance
        net.params[name][1].data[...] = np.abs(net.params[name][1].data) + 0.1


def _nets():
    """The net, and a copy sharing its weights that records gradients (force_backward): Caffe's plain loop."""
    fused = Net(parse_prototxt(NET), TEST)
    _randomize(fused)
    recording = parse_prototxt(NET)
    recording.force_backward = True
    plain = Net(recording, TEST)
    plain.share_with(fused)
    image = np.random.default_rng(1).standard_normal(fused.blobs["data"].shape).astype(np.float32)
    return fused, plain, image


def _blobs(net, image, **kwargs):
    net.forward(data=image, **kwargs)
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def _assert_same_blobs(got, want):
    assert got.keys() == want.keys()
    for name in want:
        scale = max(float(np.abs(want[name]).max()), 1e-6)
        assert np.abs(got[name] - want[name]).max() <= 1e-5 * scale, name


def _calls(fn, op):
    with torch.profiler.profile() as profile:
        fn()
    return sum(event.count for event in profile.key_averages() if event.key == op)


def test_fused_steps_give_caffes_blobs():
    fused, plain, image = _nets()
    steps = fused.graph._fusion.steps(fused.graph.slots, 0, len(fused.graph.slots) - 1)
    names = [[fused.graph.slots[i].name for i in range(s.first, s.last + 1)] + [s.kind] for s in steps]
    assert names == [["input", LAYER], ["conv1", "bn1", "scale1", "relu1", CONVOLUTION], ["conv2", CONVOLUTION],
                     ["bn2", "scale2", "relu2", AFFINE], ["pool", LAYER]]
    want = _blobs(plain, image)
    assert _calls(lambda: _blobs(fused, image), "mkldnn::_convolution_pointwise") == 2
    assert _calls(lambda: _blobs(fused, image), "aten::native_batch_norm") == 1  # bn2 + scale2 in one pass
    _assert_same_blobs(_blobs(fused, image), want)
    assert fused.blobs["conv2"].data.flags.c_contiguous  # channels-last inside, NCHW to Python


@pytest.mark.parametrize("write", ["numpy", "live array", "torch", "copy_from"])
def test_parameter_changes_reach_the_next_forward(write, tmp_path):
    fused, plain, image = _nets()
    _blobs(fused, image)  # folds and packs
    other = Net(parse_prototxt(NET), TEST)
    _randomize(other, seed=5)
    if write == "numpy":
        for name, blobs in other.params.items():
            for mine, theirs in zip(fused.params[name], blobs):
                mine.data[...] = theirs.data
    elif write == "live array":
        held = [blob.data for blobs in fused.params.values() for blob in blobs]
        _blobs(fused, image)
        for array, blob in zip(held, [b for blobs in other.params.values() for b in blobs]):
            array[...] = blob.data  # written after the forward through arrays handed out before it
    elif write == "torch":
        with torch.no_grad():
            for name, blobs in other.params.items():
                for mine, theirs in zip(fused.params[name], blobs):
                    mine.tensor().copy_(theirs.tensor())
    else:
        other.save(str(tmp_path / "other.caffemodel"))
        fused.copy_from(str(tmp_path / "other.caffemodel"))
    _assert_same_blobs(_blobs(fused, image), _blobs(plain, image))
    if write == "live array":  # and again, with the arrays still alive
        held[0][...] *= -1
        _assert_same_blobs(_blobs(fused, image), _blobs(plain, image))


def test_hooks_and_partial_forwards_see_every_layer():
    fused, plain, image = _nets()
    seen = {}
    fused.after_forward(lambda index: seen.setdefault(fused.graph.slots[index].name, fused.blobs["conv1"].data.copy()))
    _blobs(fused, image)
    plain.forward(data=image, end="conv1")
    np.testing.assert_allclose(seen["conv1"], plain.blobs["conv1"].data, rtol=1e-5, atol=1e-5)  # before bn1
    fresh, _, _ = _nets()
    fresh.share_with(fused)
    fresh.blobs["data"].data[...] = image
    with torch.no_grad():
        fresh.forward(end="scale1")  # the chain cut before relu1: conv1 holds scale1's output, negatives too
    plain.forward(data=image, end="scale1")
    np.testing.assert_allclose(fresh.blobs["conv1"].data, plain.blobs["conv1"].data, rtol=1e-5, atol=1e-5)
    assert (fresh.blobs["conv1"].data < 0).any()


def test_packed_weights_follow_the_input_shape_and_threads():
    fused, plain, image = _nets()
    _blobs(fused, image)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for shape in [(1, 3, 5, 7), (3, 3, 12, 4)]:
            for net in (fused, plain):
                net.blobs["data"].reshape(*shape)
                net.reshape()
            small = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
            _assert_same_blobs(_blobs(fused, small), _blobs(plain, small))
    finally:
        torch.set_num_threads(before)


def _pooling(kernel, stride, pad, round_mode):
    lp = caffe_pb2.LayerParameter(name="p", type="Pooling", bottom=["x"], top=["y"])
    p = lp.pooling_param
    p.kernel_size, p.stride, p.pad, p.round_mode = kernel, stride, pad, round_mode
    return Pooling(lp, TEST)


def test_max_pooling_inference_form_is_exact():
    rng = torch.Generator().manual_seed(0)
    for size, kernel, stride, pad, round_mode in itertools.product([5, 8, 13], [1, 2, 3], [1, 2, 3], [0, 1], [0, 1]):
        if pad >= kernel:
            continue
        layer = _pooling(kernel, stride, pad, round_mode)
        x = torch.randn(2, 3, size, size + 1, generator=rng)
        want = layer.forward([x], [])[0]
        # NCHW through oneDNN; channels-last of a batch of one, strided as a convolution leaves it
        last = x[:1].contiguous(memory_format=torch.channels_last).as_strided((1, 3, size, size + 1), (3, 1, 3 * (size + 1), 3))
        for bottom, expected in ((x, want), (last, want[:1])):
            got = layer.forward_inference([bottom], [])[0]
            assert got.shape == expected.shape and torch.equal(got, expected), (size, kernel, stride, pad, round_mode)


@pytest.mark.parametrize("size, channels, beta", [(5, 7, 0.75), (3, 4, 0.6), (9, 3, 0.75)])
def test_lrn_inference_form_matches(size, channels, beta):
    lp = caffe_pb2.LayerParameter(name="n", type="LRN", bottom=["x"], top=["y"])
    lp.lrn_param.local_size, lp.lrn_param.alpha, lp.lrn_param.beta, lp.lrn_param.k = size, 0.3, beta, 2.0
    layer = LRN(lp, TEST)
    x = 3 * torch.randn(2, channels, 6, 5, generator=torch.Generator().manual_seed(0))
    want = layer.forward([x], [])[0]
    got = layer.forward_inference([x], [])[0]
    assert (got - want).abs().max() <= 1e-6 * want.abs().max()


def test_channels_last_blob_reads_as_nchw_and_writes_reach_it():
    net = Net(parse_prototxt(NET), TEST)
    blob = net.blobs["conv1"]
    blob.set_tensor(torch.randn(2, 6, 9, 8).contiguous(memory_format=torch.channels_last))
    values = blob.tensor().clone()
    array = blob.data
    assert array.flags.c_contiguous and np.array_equal(array, values.numpy())
    array[0, 1, 2, 3] = 42.0
    assert float(blob.tensor()[0, 1, 2, 3]) == 42.0
