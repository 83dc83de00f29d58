"""In-place layers overwrite their bottom only where nothing else can see it (runner.in_place): without a
gradient, a ReLU runs in place, or inside the convolution before it (runner.fusion), and every net gives the
same blobs either way (up to the rounding of oneDNN's convolutions)."""
import textwrap

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.net import Net

TEST = caffe_pb2.TEST

# relu runs inside conv before a Split hands conv (as views) to the Eltwise, whose fresh top relu_sum overwrites;
# r is a view of conv2 (Reshape) that an in-place ReLU then works on; the Python layer keep holds on to its
# top, kept, which relu_kept works on
NET = """
input: "data" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "conv" top: "sum" }
layer { name: "relu_sum" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "conv2" type: "Convolution" bottom: "sum" top: "conv2"
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "r" type: "Reshape" bottom: "conv2" top: "r" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }
layer { name: "relu_r" type: "ReLU" bottom: "r" top: "r" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
        convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "keep" type: "Python" bottom: "conv3" top: "kept" python_param { module: "holder" layer: "Holder" } }
layer { name: "relu_kept" type: "ReLU" bottom: "kept" top: "kept" }
layer { name: "conv4" type: "Convolution" bottom: "kept" top: "conv4"
        convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" relu_param { negative_slope: 0.1 } }
"""

HOLDER = '''
from fcn.caffe import Layer
class Holder(Layer):
    def setup(self, bottom, top):
        self.held = None
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
        self.held = top[0].data
'''


def _calls(fn, op):
    with torch.profiler.profile() as profile:
        fn()
    return sum(event.count for event in profile.key_averages() if event.key == op)


def _blobs(net, grad):
    with torch.set_grad_enabled(grad):
        net.forward(data=np.random.default_rng(1).standard_normal(net.blobs["data"].shape).astype(np.float32))
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def _assert_close(got, want, what):
    """Equal up to float rounding: oneDNN's fused convolutions do not round as torch's plain one does."""
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(float(np.abs(want).max()), 1.0), err_msg=what)


def test_without_a_gradient_only_unshared_bottoms_are_overwritten(tmp_path, monkeypatch):
    (tmp_path / "holder.py").write_text(HOLDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)  # fillers draw from torch's generator: weights for which the kept top has negatives
    net = Net(parse_prototxt(textwrap.dedent(NET)), TEST)
    want = _blobs(net, grad=True)
    held_with_grad = net.layers[list(net._layer_names).index("keep")].held.copy()
    # relu and relu4 (leaky) run inside their convolutions; relu_sum overwrites the Eltwise's fresh top;
    # relu_r (r is a view of conv2) and relu_kept (a Python layer's top) compute new tensors
    assert _calls(lambda: _blobs(net, grad=False), "mkldnn::_convolution_pointwise") == 4
    assert _calls(lambda: _blobs(net, grad=False), "aten::relu_") == 1
    assert _calls(lambda: _blobs(net, grad=False), "aten::relu") == 2
    got = _blobs(net, grad=False)
    assert want.keys() == got.keys()
    for name in want:
        _assert_close(got[name], want[name], name)
    held = net.layers[list(net._layer_names).index("keep")].held
    _assert_close(held, held_with_grad, "held")      # ReLU did not reach what the layer kept
    assert (held < 0).any() and (got["kept"] >= 0).all()
    assert (got["conv2"] < 0).any()                  # nor the blob r is a view of


def test_fcn_relus_run_in_place_without_a_gradient_and_give_the_same_blobs():
    """A deploy net has no loss and no force_backward: Caffe back-propagates nothing there, so a plain
    ``net.forward()`` records no gradient and its ReLUs run inside the convolutions before them, wrapper or
    not. The same net with force_backward records one, keeps every ReLU out of place, and gives the same
    blobs."""
    from bench.nets import fcn8s_deploy, randomize
    from bench.sizes import QUICK
    deploy = fcn8s_deploy(QUICK)
    convolutions = sum(layer.type == "Convolution" for layer in deploy.layer)
    net = Net(deploy, TEST)
    randomize(net)
    recording = caffe_pb2.NetParameter()
    recording.CopyFrom(deploy)
    recording.force_backward = True
    backward_net = Net(recording, TEST)
    backward_net.share_with(net)
    want = _blobs(backward_net, grad=True)
    assert _calls(lambda: _blobs(backward_net, grad=True), "aten::relu_") == 0
    for grad in (True, False):
        assert _calls(lambda: _blobs(net, grad=grad), "aten::relu") == 0
        assert _calls(lambda: _blobs(net, grad=grad), "mkldnn::_convolution_pointwise") == convolutions
    got = _blobs(net, grad=True)
    for name in want:
        _assert_close(got[name], want[name], name)


def test_tops_a_layer_keeps_between_passes_are_not_overwritten():
    # DummyData makes a constant top once and hands it out every pass: a ReLU on it must not write into it
    net = Net(parse_prototxt(textwrap.dedent("""
    layer { name: "d" type: "DummyData" top: "d"
            dummy_data_param { shape { dim: 1 dim: 2 dim: 3 } data_filler { type: "constant" value: -1 } } }
    layer { name: "relu" type: "ReLU" bottom: "d" top: "d" }
    """)), TEST)
    with torch.no_grad():
        assert _calls(net.forward, "aten::relu_") == 0
        net.forward()
    assert not net.blobs["d"].data.any()
