"""``set_speed(compile=True)`` freezes the parameters into inductor's code (runner.graph._CompiledStretch) and
compiles afresh after any change a pycaffe script can make: numpy writes through ``.data`` (which torch's
version counter does not see), torch writes, ``copy_from``; while a parameter's numpy array is alive the
layers run uncompiled. Layers that write their own parameters in forward keep them as inputs."""
import warnings

import numpy as np
import pytest
import torch

from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.net import Net

NET = """
input: "data" input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: toy-sized ops on one thread


def _nets():
    """A compiled net and an uncompiled twin sharing its parameters."""
    compiled = Net(parse_prototxt(NET), caffe_pb2.TEST)
    eager = Net(parse_prototxt(NET), caffe_pb2.TEST)
    eager.share_with(compiled)
    image = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    compiled.set_speed(compile=True)
    return compiled, eager, image


def _out(net, image):
    return net.forward(data=image)["conv2"].copy()


def _assert_close(got, want):
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_frozen_parameters_follow_every_change_a_script_makes(tmp_path):
    compiled, eager, image = _nets()
    first = _out(compiled, image)
    _assert_close(first, _out(eager, image))
    stretch = compiled.graph._plan()[1][2]
    assert stretch.freezable and stretch._compiled
    assert compiled.blobs["pool1"].tensor().is_contiguous(memory_format=torch.channels_last)  # oneDNN's layout
    _assert_close(compiled.blobs["pool1"].data, eager.blobs["pool1"].data)                  # NCHW to Python
    # a write neither torch's version counter nor .data sees does not reach the frozen constants...
    with torch.no_grad():
        compiled.params["conv2"][0].tensor().data.mul_(2)
    assert np.array_equal(_out(compiled, image), first)
    # ...every write a pycaffe script makes does
    compiled.params["conv2"][0].data[...] *= 1
    _assert_close(_out(compiled, image), _out(eager, image))
    compiled.params["conv1"][1].data[...] = 0.5
    _assert_close(_out(compiled, image), _out(eager, image))
    with torch.no_grad():
        compiled.params["conv1"][0].tensor().neg_()
    _assert_close(_out(compiled, image), _out(eager, image))
    other = Net(parse_prototxt(NET), caffe_pb2.TEST)
    other.save(str(tmp_path / "other.caffemodel"))
    compiled.copy_from(str(tmp_path / "other.caffemodel"))
    _assert_close(_out(compiled, image), _out(eager, image))
    assert not np.allclose(_out(compiled, image), first)


def test_a_live_parameter_array_keeps_its_layers_uncompiled():
    compiled, eager, image = _nets()
    compiled.set_speed(compile="aot_eager")  # the planning is the same for every backend
    held = compiled.params["conv2"][0].data
    with pytest.warns(RuntimeWarning, match="run uncompiled while a numpy array of their parameters"):
        _out(compiled, image)
    assert not compiled.graph._plan()[1][2]._compiled
    held[...] *= -1  # written after the forward, through the array handed out before it
    _assert_close(_out(compiled, image), _out(eager, image))
    del held
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _assert_close(_out(compiled, image), _out(eager, image))
    assert compiled.graph._plan()[1][2]._compiled  # compiled again once the array is gone


def test_batch_statistics_are_inputs_not_constants():
    """TRAIN-phase BatchNorm updates its running averages in every forward: a compiled stretch must update
    them as the plain loop does, so it may not freeze them."""
    spec = """
    input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }
    layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
    """
    compiled = Net(parse_prototxt(spec), caffe_pb2.TRAIN)
    eager = Net(parse_prototxt(spec), caffe_pb2.TRAIN)
    compiled.set_speed(compile="aot_eager")
    image = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    for _ in range(2):
        with torch.no_grad():
            compiled.forward(data=image)
            eager.forward(data=image)
    assert not compiled.graph._plan()[1][2].freezable and compiled.graph._plan()[1][2]._compiled
    for mine, theirs in zip(compiled.params["bn"], eager.params["bn"]):
        np.testing.assert_allclose(mine.data, theirs.data, rtol=1e-6)
    assert compiled.params["bn"][2].data[0] > 1  # the moving-average factor did grow
