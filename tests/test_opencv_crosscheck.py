"""Our runner against OpenCV's dnn module, a second and independent implementation of Caffe's layers.

The real-Caffe fixtures pin each layer on the cases Caffe was run on; this test adds nets nobody ran
through Caffe (an FCN-8s with random weights at sizes that exercise every crop, and odd layer
settings) and asks whether two implementations written from the same spec agree. The files OpenCV
reads are the ones we write (prototxt via NetSpec, caffemodel via ``Net.save``), so the formats are
checked along the way. Where OpenCV is known to read Caffe differently, the net avoids that field
and the comment says why; what OpenCV lacks entirely (ArgMax, Bias, losses, BatchNorm with batch
statistics) is left to the real-Caffe fixtures.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch

from netspec import backbones, caffe_pb2
from netspec.net_spec import L, NetSpec, P
from netspec.prototxt import write_prototxt
from runner.fillers import fill
from runner.net import Net
from surgery.interp import interp

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("this OpenCV has no Caffe importer (removed in OpenCV 5)", allow_module_level=True)

RTOL = 1e-4  # of the largest magnitude in the compared blob


def _assert_close(name: str, theirs: np.ndarray, ours: np.ndarray) -> None:
    assert theirs.shape == ours.shape, f"{name}: OpenCV shape {theirs.shape}, ours {ours.shape}"
    scale = max(float(np.abs(ours).max()), 1e-30)
    error = float(np.abs(theirs - ours).max()) / scale
    assert error <= RTOL, f"{name}: max |OpenCV - ours| is {error:.2e} of max |ours| ({scale:.3g})"


def _opencv_outputs(tmp_path, proto: "caffe_pb2.NetParameter", net: Net, inputs: Dict[str, np.ndarray],
                    layer_names: List[str]) -> List[np.ndarray]:
    """Save our net, load both files into OpenCV, run it on ``inputs`` and fetch those layers' outputs."""
    prototxt, caffemodel = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    write_prototxt(prototxt, proto)
    net.save(str(caffemodel))
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    for name, array in inputs.items():
        cv_net.setInput(array, name)
    return cv_net.forward(layer_names)


# ----- FCN-8s -----

FCN_WIDTHS = dict(num_classes=21, widths=(8, 16, 16, 32, 32), fc_width=32)


def _randomise_fcn(net: Net, seed: int) -> None:
    """He-normal convolutions, small random scorers, bilinear upsampling: a net whose every path matters.

    The release leaves scorers at zero (they are learned); zero would hide a wrong crop or skip, so
    they get small random values here, and biases too.
    """
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        if name.startswith("upscore"):
            continue
        weight = torch.empty(blobs[0].shape)
        if name.startswith("score"):
            weight.normal_(0.0, 0.05, generator=generator)
        else:
            fill(weight, caffe_pb2.FillerParameter(type="msra"), generator)
        blobs[0].data[...] = weight.numpy()
        if len(blobs) > 1:
            blobs[1].data[...] = rng.normal(0.0, 0.1, blobs[1].shape)
    interp(net, ["upscore2", "upscore_pool4", "upscore8"])


@pytest.mark.parametrize("height, width", [(64, 80), (67, 93)])
def test_fcn8s_deploy_matches_opencv(tmp_path, height, width):
    proto = backbones.deploy(backbones.fcn8s, shape=(1, 3, height, width), **FCN_WIDTHS)
    net = Net(proto, caffe_pb2.TEST)
    _randomise_fcn(net, seed=height * width)
    image = np.random.default_rng(7).standard_normal((1, 3, height, width)).astype(np.float32)
    ours = net.forward(data=image, blobs=["upscore2", "fuse_pool4", "fuse_pool3"])
    assert ours["score"].shape == (1, 21, height, width)
    names = ["upscore2", "fuse_pool4", "fuse_pool3", "score"]
    for name, theirs in zip(names, _opencv_outputs(tmp_path, proto, net, {"data": image}, names)):
        _assert_close(name, theirs, ours[name])


# ----- other layer types -----
# Each case adds layers on ``n.data`` (2x6x9x11); every blob it names is compared, fetched from OpenCV
# by the name of the last layer that wrote it (OpenCV addresses outputs by layer, Caffe by blob).

ZOO_SHAPE = (2, 6, 9, 11)
Builder = Callable[[NetSpec], None]


def _pool(**kwargs) -> Builder:
    return lambda n: setattr(n, "out", L.Pooling(n.data, **kwargs))


def _conv(**kwargs) -> Builder:
    return lambda n: setattr(n, "out", L.Convolution(n.data, **kwargs))


def _deconv(**kwargs) -> Builder:
    return lambda n: setattr(n, "out", L.Deconvolution(n.data, convolution_param=kwargs))


def _slices(n: NetSpec) -> None:
    # OpenCV answers only a multi-top layer's first top by name, so each slice goes through an
    # identity Power layer that names it.
    tops = L.Slice(n.data, ntop=3, slice_point=[2, 7], axis=2)
    for i, top in enumerate(tops):
        n[f"slice{i}"] = L.Power(top)


def _in_place(n: NetSpec) -> None:
    n.conv = L.Convolution(n.data, num_output=5, kernel_size=1)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.after = L.TanH(n.conv)


def _skips(n: NetSpec) -> None:
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.out = L.Crop(n.data, n.pool, axis=1, offset=[0, 2, 3])


ZOO: Dict[str, Builder] = {
    # LRN's k is left at its default 1: OpenCV's importer reads it from a field named "bias" and so
    # ignores Caffe's "k" (ours is checked against Caffe's formula in the layer tests).
    "lrn_across": lambda n: setattr(n, "out", L.LRN(n.data, local_size=5, alpha=0.3, beta=0.75)),
    "lrn_within": lambda n: setattr(n, "out", L.LRN(n.data, local_size=3, alpha=0.4, beta=0.6,
                                                      norm_region=P.LRN.WITHIN_CHANNEL)),
    "pool_max_ceil": _pool(pool=P.Pooling.MAX, kernel_size=3, stride=2),
    "pool_max_pad_clip": _pool(pool=P.Pooling.MAX, kernel_size=3, stride=3, pad=1),
    "pool_max_rect": _pool(pool=P.Pooling.MAX, kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=0),
    "pool_ave_pad": _pool(pool=P.Pooling.AVE, kernel_size=3, stride=2, pad=1),
    "pool_ave_pad_clip": _pool(pool=P.Pooling.AVE, kernel_size=3, stride=3, pad=1),
    "pool_ave_global": _pool(pool=P.Pooling.AVE, global_pooling=True),
    "pool_max_global": _pool(pool=P.Pooling.MAX, global_pooling=True),
    "conv_dilated_grouped": _conv(num_output=6, kernel_size=3, dilation=2, pad=2, group=2),
    "conv_stride_pad": _conv(num_output=5, kernel_size=3, stride=2, pad=1),
    # pad_h is spelled out: OpenCV takes pad_h/pad_w only as a pair, Caffe defaults the missing one to 0.
    "conv_rect": _conv(num_output=3, kernel_h=3, kernel_w=5, stride_h=2, stride_w=1, pad_h=0, pad_w=2),
    "conv_no_bias": _conv(num_output=5, kernel_size=1, bias_term=False),
    "deconv_grouped": _deconv(num_output=6, kernel_size=4, stride=2, pad=1, group=2),
    "deconv_bias": _deconv(num_output=4, kernel_size=3, stride=2),
    "deconv_fcn_style": _deconv(num_output=6, kernel_size=16, stride=8, pad=4, group=6, bias_term=False),
    "inner_product": lambda n: setattr(n, "out", L.InnerProduct(n.data, num_output=7)),
    "inner_product_axis2": lambda n: setattr(n, "out", L.InnerProduct(n.data, num_output=3, axis=2,
                                                                       bias_term=False)),
    "softmax": lambda n: setattr(n, "out", L.Softmax(n.data)),
    "softmax_axis2": lambda n: setattr(n, "out", L.Softmax(n.data, axis=2)),
    "concat": lambda n: setattr(n, "out", L.Concat(n.data, L.AbsVal(n.data))),
    "concat_axis2": lambda n: setattr(n, "out", L.Concat(n.data, L.TanH(n.data), axis=2)),
    "eltwise_sum_coeff": lambda n: setattr(n, "out", L.Eltwise(n.data, L.TanH(n.data), coeff=[0.5, -2])),
    "eltwise_sum3": lambda n: setattr(n, "out", L.Eltwise(n.data, L.TanH(n.data), L.Sigmoid(n.data))),
    "eltwise_prod": lambda n: setattr(n, "out", L.Eltwise(n.data, L.TanH(n.data), operation=P.Eltwise.PROD)),
    "eltwise_max": lambda n: setattr(n, "out", L.Eltwise(n.data, L.TanH(n.data), operation=P.Eltwise.MAX)),
    "scale_bias": lambda n: setattr(n, "out", L.Scale(n.data, bias_term=True)),
    "scale_axis2": lambda n: setattr(n, "out", L.Scale(n.data, axis=2, num_axes=1)),
    "scale_two_bottoms": lambda n: setattr(n, "out", L.Scale(n.data, L.AbsVal(n.data), axis=0)),
    "batch_norm_global": lambda n: setattr(n, "out", L.BatchNorm(n.data, use_global_stats=True)),
    "sigmoid": lambda n: setattr(n, "out", L.Sigmoid(n.data)),
    "tanh": lambda n: setattr(n, "out", L.TanH(n.data)),
    "relu_leaky": lambda n: setattr(n, "out", L.ReLU(n.data, negative_slope=0.1)),
    "absval": lambda n: setattr(n, "out", L.AbsVal(n.data)),
    "power": lambda n: setattr(n, "out", L.Power(L.AbsVal(n.data), power=1.5, scale=0.5, shift=0.25)),
    "prelu": lambda n: setattr(n, "out", L.PReLU(n.data)),
    "dropout_test": lambda n: setattr(n, "out", L.Dropout(n.data, dropout_ratio=0.3)),
    "flatten": lambda n: setattr(n, "out", L.Flatten(n.data)),
    "flatten_axis2": lambda n: setattr(n, "out", L.Flatten(n.data, axis=2)),
    "reshape": lambda n: setattr(n, "out", L.Reshape(n.data, shape=dict(dim=[0, -1, 11]))),
    "reshape_axis_num_axes": lambda n: setattr(n, "out", L.Reshape(n.data, shape=dict(dim=[3, 2]), axis=1,
                                                                    num_axes=1)),
    "slice": _slices,
    "crop_per_axis_offsets": _skips,
    "crop_axis2": lambda n: setattr(n, "out", L.Crop(L.Deconvolution(
        n.data, convolution_param=dict(num_output=6, kernel_size=4, stride=2, pad=1, group=6)),
        n.data, axis=2, offset=[1, 3])),
    "in_place_relu": _in_place,
}


def _randomise_params(net: Net, seed: int) -> None:
    """Random values in every parameter blob; BatchNorm gets a positive variance and a scale factor."""
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        if net.layer_dict[name].type == "BatchNorm":
            blobs[0].data[...] = rng.normal(0.0, 1.0, blobs[0].shape)
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].shape)
            blobs[2].data[...] = 2.5  # Caffe divides mean and variance by this moving-average factor
        else:
            for blob in blobs:
                blob.data[...] = rng.normal(0.0, 0.5, blob.shape)


def _compared(proto: "caffe_pb2.NetParameter") -> List[Tuple[str, str]]:
    """(OpenCV layer name, our blob name) for each blob the net names: its last writer's output."""
    last_writer: Dict[str, str] = {}
    for layer in proto.layer:
        if layer.type != "Input":
            last_writer[layer.top[0]] = layer.name
    return [(layer_name, blob) for blob, layer_name in last_writer.items()]


@pytest.mark.parametrize("case", sorted(ZOO))
def test_layer_matches_opencv(tmp_path, case):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=list(ZOO_SHAPE)))
    ZOO[case](n)
    proto = n.to_proto()
    net = Net(proto, caffe_pb2.TEST)
    _randomise_params(net, seed=len(case))
    data = np.random.default_rng(3).standard_normal(ZOO_SHAPE).astype(np.float32)
    net.forward(data=data)
    pairs = _compared(proto)
    for (layer_name, blob), theirs in zip(pairs, _opencv_outputs(tmp_path, proto, net, {"data": data},
                                                                 [layer for layer, _ in pairs])):
        _assert_close(f"{case}: {blob}", theirs, net.blobs[blob].data)


def test_lrn_window_wider_than_channels_matches_opencv(tmp_path):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 4, 5]))
    n.out = L.LRN(n.data, local_size=5, alpha=0.3, beta=0.75)
    proto = n.to_proto()
    net = Net(proto, caffe_pb2.TEST)
    data = np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32)
    ours = net.forward(data=data)["out"]
    (theirs,) = _opencv_outputs(tmp_path, proto, net, {"data": data}, ["out"])
    _assert_close("out", theirs, ours)


def test_in_place_last_layer_output_is_a_net_output(tmp_path):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 3, 3]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=1)
    n.relu = L.ReLU(n.conv, in_place=True)
    proto = n.to_proto()
    prototxt = tmp_path / "net.prototxt"
    write_prototxt(prototxt, proto)
    assert cv2.dnn.readNetFromCaffe(str(prototxt)).getUnconnectedOutLayersNames() == ("relu",)
    assert Net(proto, caffe_pb2.TEST).outputs == ["conv"]
