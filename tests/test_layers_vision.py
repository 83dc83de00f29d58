"""Vision layers (convolution, pooling, LRN, crop, inner product, BatchNorm/Scale/Bias) one by one.

Each fixture case's layers are built straight from its prototxt and run on Caffe's inputs and weights;
forward blobs, blob diffs (via the case's EuclideanLoss) and param diffs must match real Caffe. Edge
cases the fixtures do not reach are checked against direct numpy transcriptions of Caffe's loops.
"""
from __future__ import annotations

import itertools
from typing import Dict, List

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffe_cases import Case, assert_close, case_names
from netspec import caffe_pb2
from runner.layers.base import Layer
from runner.registry import layer_class

PREFIXES = ("conv_k", "conv_dilation", "conv_group", "deconv_", "pool_", "lrn_", "crop_",
            "innerproduct_", "batchnorm_", "scale_")
CASES = [Case("layers", n) for n in case_names("layers") if n.startswith(PREFIXES)]
TEST, TRAIN = 1, 0


def _net(case: Case) -> caffe_pb2.NetParameter:
    with open(case.prototxt) as f:
        return text_format.Parse(f.read(), caffe_pb2.NetParameter())


def _run_case(case: Case, device: str = "cpu"):
    """Walk the case's net by hand: Inputs from inputs.npz, our layers, Caffe's EuclideanLoss."""
    net = _net(case)
    inputs = case.arrays("inputs")
    all_params = case.arrays("params")
    blobs: Dict[str, torch.Tensor] = {}
    params: Dict[str, List[torch.Tensor]] = {}
    loss = None
    for lp in net.layer:
        if lp.type == "Input":
            blobs[lp.top[0]] = torch.tensor(inputs[lp.top[0]], device=device, requires_grad=True)
        elif lp.type == "EuclideanLoss":
            a, b = (blobs[n] for n in lp.bottom)
            loss = ((a - b) ** 2).sum() / (2 * a.shape[0])
        else:
            layer = layer_class(lp.type, lp.name)(lp, case.phase)
            bottoms = [blobs[n] for n in lp.bottom]
            specs = layer.param_specs([tuple(b.shape) for b in bottoms])
            params[lp.name] = [torch.tensor(all_params[f"{lp.name}/{i}"], device=device, requires_grad=True)
                               for i in range(len(specs))]
            assert [tuple(p.shape) for p in params[lp.name]] == [tuple(s.shape) for s in specs]
            for top, value in zip(lp.top, layer.forward(bottoms, params[lp.name])):
                if value.requires_grad:
                    value.retain_grad()
                blobs[top] = value
    return net, blobs, params, loss


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer_matches_caffe(case: Case) -> None:
    net, blobs, params, loss = _run_case(case)
    tol = case.tolerance
    for name, want in case.arrays("forward").items():
        got = loss.detach() if name == "loss" else blobs[name].detach()
        assert_close(got.reshape(want.shape).numpy(), want, tol, f"{case.name}: forward '{name}'")
    for key, want in (case.arrays("params_after_forward") or {}).items():
        layer, i = key.rsplit("/", 1)
        assert_close(params[layer][int(i)].detach().numpy(), want, tol, f"{case.name}: {key} after forward")
    loss.backward()
    inputs = {lp.top[0] for lp in net.layer if lp.type == "Input"}
    for name, want in case.arrays("diffs").items():
        if name == "loss" or (name in inputs and not net.force_backward):
            continue  # without force_backward Caffe computes no Input diffs; the Net handles that
        grad = blobs[name].grad
        got = np.zeros_like(want) if grad is None else grad.numpy()
        assert_close(got, want, tol, f"{case.name}: diff '{name}'")
    lr_mults = {lp.name: [p.lr_mult for p in lp.param] for lp in net.layer}
    for key, want in case.arrays("param_diffs").items():
        layer, i = key.rsplit("/", 1)
        mults = lr_mults[layer]
        if not net.force_backward and int(i) < len(mults) and mults[int(i)] == 0:
            continue  # lr_mult-0 params without force_backward: the Net leaves their diff at 0
        grad = params[layer][int(i)].grad
        got = np.zeros_like(want) if grad is None else grad.numpy()
        assert_close(got, want, tol, f"{case.name}: param diff {key}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_top_shapes_from_meta_tensors(case: Case) -> None:
    """The Net infers top shapes by running forward on meta tensors: that must work and agree."""
    net, blobs, _, _ = _run_case(case, device="meta")
    for name, shape in case.meta["blob_shapes"].items():
        if name != "loss":
            assert tuple(blobs[name].shape) == tuple(shape), name


# ----------------------------------------------------------------------------------------------
# Building layers from text, and independent numpy references for cases the fixtures do not cover.

def _layer(text: str, phase: int = TEST) -> Layer:
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class(lp.type, lp.name)(lp, phase)


def _grad_check(layer: Layer, x: np.ndarray, params: List[np.ndarray], reference, seed: int = 0) -> None:
    """Forward equals ``reference(x, params)[0]``; gradients of a random linear loss match its
    ``reference(...)[1](top_diff) -> (bottom_diff, [param diffs])``."""
    xt = torch.tensor(x, requires_grad=True)
    pt = [torch.tensor(p, requires_grad=True) for p in params]
    top = layer.forward([xt], pt)[0]
    want_top, backward = reference(x.astype(np.float64), [p.astype(np.float64) for p in params])
    assert_close(top.detach().numpy(), want_top, 1e-5, "forward")
    dtop = np.random.RandomState(seed).randn(*want_top.shape).astype(np.float32)
    top.backward(torch.tensor(dtop))
    want_dx, want_dp = backward(dtop.astype(np.float64))
    assert_close(xt.grad.numpy(), want_dx, 1e-5, "bottom diff")
    for got, want in zip(pt, want_dp):
        assert_close(got.grad.numpy(), want, 1e-5, "param diff")


def _caffe_pool_reference(x, kernel, stride, pad, method, ceil=True):
    """Caffe's PoolingLayer::Forward_cpu/Backward_cpu loops, transcribed literally (float64)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = np.ceil if ceil else np.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        oh -= (oh - 1) * sh >= h + ph
        ow -= (ow - 1) * sw >= w + pw
    top = np.zeros((n, c, oh, ow))
    mask = -np.ones((n, c, oh, ow), dtype=np.int64)
    for i, j in itertools.product(range(oh), range(ow)):
        hs, ws = i * sh - ph, j * sw - pw
        he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
        size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        for b, ch in itertools.product(range(n), range(c)):
            if method == "MAX":
                best, arg = -np.finfo(np.float32).max, -1
                for r, q in itertools.product(range(hs, he), range(ws, we)):
                    if x[b, ch, r, q] > best:
                        best, arg = x[b, ch, r, q], r * w + q
                top[b, ch, i, j], mask[b, ch, i, j] = best, arg
            else:
                top[b, ch, i, j] = x[b, ch, hs:he, ws:we].sum() / size

    def backward(dtop):
        dx = np.zeros_like(x)
        for i, j in itertools.product(range(oh), range(ow)):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            for b, ch in itertools.product(range(n), range(c)):
                if method == "MAX":
                    if mask[b, ch, i, j] >= 0:
                        dx[b, ch].flat[mask[b, ch, i, j]] += dtop[b, ch, i, j]
                else:
                    dx[b, ch, hs:he, ws:we] += dtop[b, ch, i, j] / size
        return dx, []
    return top, backward, mask


POOL_EDGE_CASES = [
    # (height, width, pooling_param text): pad over half the kernel (torch refuses it),
    ("pad_over_half_kernel", 7, 8, "kernel_size: 3 stride: 2 pad: 2"),
    # pad 0 and stride > kernel: with ceil the last window starts past the image (Caffe keeps it),
    ("empty_last_window", 5, 7, "kernel_size: 1 stride: 3"),
    # pad_h only: Caffe's clip rule then also applies to the width,
    ("pad_h_only_clips_width", 7, 5, "kernel_h: 3 kernel_w: 1 stride_h: 3 stride_w: 3 pad_h: 1 pad_w: 0"),
    ("floor_with_pad", 9, 10, "kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR"),
    ("k2_s2_odd_pad1", 9, 11, "kernel_size: 2 stride: 2 pad: 1"),
    ("rect_kernel_stride", 8, 9, "kernel_h: 2 kernel_w: 3 stride_h: 3 stride_w: 2 pad_h: 1 pad_w: 1"),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("name,h,w,text", POOL_EDGE_CASES, ids=[c[0] for c in POOL_EDGE_CASES])
def test_pooling_edge_cases_match_caffe_loops(method, name, h, w, text) -> None:
    layer = _layer(f'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {method} {text} }}')
    p = layer.layer_param.pooling_param
    kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
    stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
    # Small integers make many ties, so the argmax rule is exercised.
    x = np.random.RandomState(1).randint(-3, 3, size=(2, 2, h, w)).astype(np.float32)
    ceil = p.round_mode == caffe_pb2.PoolingParameter.CEIL
    if name == "pad_h_only_clips_width":  # 5 wide, k1 s3: the 3rd column would start past the image
        assert layer.forward([torch.tensor(x)], [])[0].shape[3] == 2
    _grad_check(layer, x, [], lambda xx, _: _caffe_pool_reference(xx, kernel, stride, pad, method, ceil)[:2])


def test_max_pooling_mask_top() -> None:
    text = 'name: "p" type: "Pooling" bottom: "x" top: "y" top: "mask" pooling_param { pool: MAX %s }'
    for params in ("kernel_size: 3 stride: 2", "kernel_size: 3 stride: 2 pad: 2", "kernel_size: 1 stride: 3"):
        layer = _layer(text % params)
        p = layer.layer_param.pooling_param
        x = np.random.RandomState(2).randint(-3, 3, size=(1, 2, 7, 8)).astype(np.float32)
        _, mask = layer.forward([torch.tensor(x)], [])
        want = _caffe_pool_reference(x, (p.kernel_size,) * 2, (p.stride,) * 2, (p.pad,) * 2, "MAX")[2]
        np.testing.assert_array_equal(mask.numpy(), want.astype(np.float32))


def test_empty_max_window_is_minus_flt_max() -> None:
    layer = _layer('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 1 stride: 3 }')
    y = layer.forward([torch.zeros(1, 1, 5, 5)], [])[0]
    assert y.shape == (1, 1, 3, 3)
    assert float(y[0, 0, 2, 2]) == -np.finfo(np.float32).max


@pytest.mark.parametrize("text,error", [
    ("pool: STOCHASTIC kernel_size: 2", "STOCHASTIC"),
    ("global_pooling: true kernel_size: 2", "global_pooling"),
    ("kernel_h: 2", "kernel_h"),
    ("kernel_size: 3 pad: 3", "smaller than kernel"),
    ("kernel_size: 3 pad_h: 1", "pad_h and pad_w"),
])
def test_pooling_parameter_errors(text, error) -> None:
    with pytest.raises(ValueError, match=error):
        _layer(f'name: "bad" type: "Pooling" pooling_param {{ {text} }}')


def test_ave_pooling_rejects_mask_top() -> None:
    with pytest.raises(ValueError, match="mask"):
        _layer('name: "p" type: "Pooling" top: "a" top: "b" pooling_param { pool: AVE kernel_size: 2 }')


def _conv_reference(x, w, b, stride, pad, dilation, group):
    """Direct Caffe convolution (cross-correlation with zero padding), float64."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + 2 * pad - (dilation * (kh - 1) + 1)) // stride + 1
    ow = (wd + 2 * pad - (dilation * (kw - 1) + 1)) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.zeros((n, c, kh, kw, oh, ow))
    for i, j in itertools.product(range(kh), range(kw)):
        r, q = i * dilation, j * dilation
        cols[:, :, i, j] = xp[:, :, r:r + stride * oh:stride, q:q + stride * ow:stride]
    og = o // group
    top = np.zeros((n, o, oh, ow))
    for g in range(group):
        top[:, g * og:(g + 1) * og] = np.einsum("ncijhw,ocij->nohw", cols[:, g * cg:(g + 1) * cg],
                                                w[g * og:(g + 1) * og])
    return top + (0 if b is None else b[None, :, None, None])


def _deconv_reference(x, w, stride, pad, dilation, group):
    """Caffe's deconvolution as a scatter: input pixel (i, j) adds w * x at (i*s - p + k*d)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    ext_h, ext_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    oh, ow = stride * (h - 1) + ext_h - 2 * pad, stride * (wd - 1) + ext_w - 2 * pad
    full = np.zeros((n, og * group, stride * (h - 1) + ext_h, stride * (wd - 1) + ext_w))
    cg = c // group
    for ci, i, j, ki, kj in itertools.product(range(c), range(h), range(wd), range(kh), range(kw)):
        g = ci // cg
        full[:, g * og:(g + 1) * og, i * stride + ki * dilation, j * stride + kj * dilation] += \
            x[:, ci, i, j][:, None] * w[ci, :, ki, kj][None, :]
    return full[:, :, pad:pad + oh, pad:pad + ow]


def test_convolution_stride_dilation_group_against_numpy() -> None:
    layer = _layer('name: "c" type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 '
                   'stride: 2 pad: 2 dilation: 2 group: 3 }')
    rs = np.random.RandomState(3)
    x = rs.randn(2, 3, 9, 8).astype(np.float32)
    w = rs.randn(6, 1, 3, 3).astype(np.float32)
    b = rs.randn(6).astype(np.float32)
    assert [s.shape for s in layer.param_specs([x.shape])] == [(6, 1, 3, 3), (6,)]
    y = layer.forward([torch.tensor(x)], [torch.tensor(w), torch.tensor(b)])[0]
    assert_close(y.numpy(), _conv_reference(x.astype(np.float64), w, b, 2, 2, 2, 3), 1e-5, "conv")


def test_deconvolution_dilation_pad_group_against_numpy() -> None:
    layer = _layer('name: "d" type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 '
                   'stride: 3 pad: 1 dilation: 2 group: 2 bias_term: false }')
    rs = np.random.RandomState(4)
    x = rs.randn(2, 2, 4, 5).astype(np.float32)
    w = rs.randn(2, 2, 3, 3).astype(np.float32)
    assert [s.shape for s in layer.param_specs([x.shape])] == [(2, 2, 3, 3)]
    y = layer.forward([torch.tensor(x)], [torch.tensor(w)])[0]
    assert y.shape == (2, 4, 3 * 3 + 5 - 2, 3 * 4 + 5 - 2)
    assert_close(y.numpy(), _deconv_reference(x.astype(np.float64), w, 3, 1, 2, 2), 1e-5, "deconv")


def test_convolution_axis2_and_several_bottoms() -> None:
    """Axes before ``axis`` are batch axes; each bottom gets its own top from the same weights."""
    layer = _layer('name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 '
                   'kernel_size: 2 axis: 2 }')
    rs = np.random.RandomState(5)
    xs = [rs.randn(2, 3, 4, 5, 6).astype(np.float32) for _ in range(2)]
    specs = layer.param_specs([xs[0].shape])
    assert [s.shape for s in specs] == [(2, 4, 1, 2), (2,)]
    w, b = rs.randn(2, 4, 1, 2).astype(np.float32), rs.randn(2).astype(np.float32)
    tops = layer.forward([torch.tensor(x) for x in xs], [torch.tensor(w), torch.tensor(b)])
    for x, top in zip(xs, tops):
        assert top.shape == (2, 3, 2, 5, 5)
        want = _conv_reference(x.reshape(6, 4, 5, 6).astype(np.float64), w, b, 1, 0, 1, 1)
        assert_close(top.numpy(), want.reshape(2, 3, 2, 5, 5), 1e-5, "conv axis 2")


@pytest.mark.parametrize("text,error", [
    ("num_output: 4", "kernel_size"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3", "once per spatial axis"),
    ("num_output: 3 kernel_size: 3 group: 2", "multiple of group"),
    ("num_output: 4 kernel_size: 3 stride: 0", "stride"),
])
def test_convolution_parameter_errors(text, error) -> None:
    with pytest.raises(ValueError, match=error):
        layer = _layer(f'name: "bad" type: "Convolution" convolution_param {{ {text} }}')
        layer.forward([torch.zeros(1, 2, 5, 5)], [torch.zeros(4, 2, 3, 3), torch.zeros(4)])


def test_convolution_rejects_wrong_channels() -> None:
    layer = _layer('name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 }')
    with pytest.raises(ValueError, match="incompatible"):
        layer.forward([torch.zeros(1, 3, 2, 2)], [torch.zeros(2, 4, 1, 1), torch.zeros(2)])


def _lrn_reference(x, size, alpha, beta, k, across):
    half = (size - 1) // 2
    sq = x ** 2
    if across:
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        window = sum(padded[:, i:i + x.shape[1]] for i in range(size))
        return x * (k + alpha / size * window) ** -beta
    padded = np.pad(sq, ((0, 0), (0, 0), (half, half), (half, half)))
    window = sum(padded[:, :, i:i + x.shape[2], j:j + x.shape[3]] for i in range(size) for j in range(size))
    return x * (1 + alpha / size ** 2 * window) ** -beta


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_against_numpy(region) -> None:
    layer = _layer(f'name: "n" type: "LRN" lrn_param {{ local_size: 3 alpha: 0.3 beta: 0.6 k: 2 '
                   f'norm_region: {region} }}')
    x = (2 * np.random.RandomState(6).randn(2, 4, 5, 6)).astype(np.float32)
    y = layer.forward([torch.tensor(x)], [])[0]
    assert_close(y.numpy(), _lrn_reference(x.astype(np.float64), 3, 0.3, 0.6, 2.0, region == "ACROSS_CHANNELS"),
                 1e-5, "lrn")


def test_lrn_even_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="odd"):
        _layer('name: "n" type: "LRN" lrn_param { local_size: 4 }')


def test_crop_negative_axis_and_errors() -> None:
    layer = _layer('name: "c" type: "Crop" crop_param { axis: -1 offset: 2 }')
    x = torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(2, 3, 6)
    top = layer.forward([x, torch.zeros(1, 1, 3)], [])[0]
    assert torch.equal(top, x[:, :, 2:5])
    with pytest.raises(ValueError, match="out of range"):
        layer.forward([x, torch.zeros(1, 1, 5)], [])
    two = _layer('name: "c" type: "Crop" crop_param { axis: 0 offset: 1 offset: 2 }')
    with pytest.raises(ValueError, match="offsets given"):
        two.forward([x, torch.zeros(1, 1, 1)], [])


def test_crop_sends_no_gradient_to_reference() -> None:
    layer = _layer('name: "c" type: "Crop" crop_param { offset: 1 }')
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    ref = torch.randn(1, 2, 3, 3, requires_grad=True)
    layer.forward([x, ref], [])[0].sum().backward()
    assert ref.grad is None
    assert float(x.grad.sum()) == 2 * 9


def test_inner_product_transpose_and_axis() -> None:
    layer = _layer('name: "ip" type: "InnerProduct" inner_product_param { num_output: 3 axis: 2 transpose: true }')
    rs = np.random.RandomState(7)
    x = rs.randn(2, 4, 5, 2).astype(np.float32)
    assert [s.shape for s in layer.param_specs([x.shape])] == [(10, 3), (3,)]
    w, b = rs.randn(10, 3).astype(np.float32), rs.randn(3).astype(np.float32)
    y = layer.forward([torch.tensor(x)], [torch.tensor(w), torch.tensor(b)])[0]
    assert y.shape == (2, 4, 3)
    assert_close(y.numpy(), (x.reshape(8, 10).astype(np.float64) @ w + b).reshape(2, 4, 3), 1e-5, "ip")
    with pytest.raises(ValueError, match="incompatible"):
        layer.forward([torch.zeros(2, 4, 3)], [torch.tensor(w), torch.tensor(b)])


def test_batchnorm_global_stats_zero_factor_and_param_specs() -> None:
    layer = _layer('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true eps: 0.5 }')
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]  # Caffe pins the stats
    x = np.random.RandomState(8).randn(2, 3, 4).astype(np.float32)
    assert [s.shape for s in layer.param_specs([x.shape])] == [(3,), (3,), (1,)]
    stats = [torch.ones(3), torch.ones(3), torch.zeros(1)]
    y = layer.forward([torch.tensor(x)], stats)[0]
    assert_close(y.numpy(), x / np.sqrt(0.5), 1e-6, "factor 0 means mean 0, var 0")


def test_batchnorm_refuses_learned_stats() -> None:
    with pytest.raises(ValueError, match="lr_mult"):
        _layer('name: "bn" type: "BatchNorm" param { lr_mult: 1 }')


def test_batchnorm_train_2d_bottom_updates_stats() -> None:
    layer = _layer('name: "bn" type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 }', TRAIN)
    x = np.random.RandomState(9).randn(6, 3).astype(np.float32)
    stats = [torch.full((3,), 2.0), torch.full((3,), 4.0), torch.ones(1)]
    y = layer.forward([torch.tensor(x)], stats)[0]
    mean, var = x.mean(0), x.var(0)
    assert_close(y.numpy(), (x - mean) / np.sqrt(var + 1e-5), 1e-5, "train forward")
    assert_close(stats[0].numpy(), 1.0 + mean, 1e-6, "mean sum")
    assert_close(stats[1].numpy(), 2.0 + var * 6 / 5, 1e-6, "var sum")
    assert float(stats[2]) == 1.5


def test_scale_scalar_to_end_and_bias_specs() -> None:
    rs = np.random.RandomState(10)
    x = rs.randn(2, 3, 4).astype(np.float32)
    scalar = _layer('name: "s" type: "Scale" scale_param { num_axes: 0 bias_term: true }')
    specs = scalar.param_specs([x.shape])
    assert [s.shape for s in specs] == [(), ()]
    assert (specs[0].filler.type, specs[0].filler.value) == ("constant", 1.0)
    assert (specs[1].filler.type, specs[1].filler.value) == ("constant", 0.0)
    y = scalar.forward([torch.tensor(x)], [torch.tensor(2.0), torch.tensor(0.5)])[0]
    assert_close(y.numpy(), 2 * x + 0.5, 1e-6, "scalar scale")
    to_end = _layer('name: "s" type: "Scale" scale_param { axis: -2 num_axes: -1 }')
    assert [s.shape for s in to_end.param_specs([x.shape])] == [(3, 4)]
    s = rs.randn(3, 4).astype(np.float32)
    assert_close(to_end.forward([torch.tensor(x)], [torch.tensor(s)])[0].numpy(), x * s, 1e-6, "scale to end")
    two = _layer('name: "s" type: "Scale" scale_param { axis: 0 bias_term: true }')
    assert [sp.shape for sp in two.param_specs([x.shape, (2, 3)])] == [(2, 3)]
    with pytest.raises(ValueError, match="does not match"):
        two.forward([torch.tensor(x), torch.zeros(3)], [torch.zeros(3)])


def test_bias_layer_param_and_bottom() -> None:
    rs = np.random.RandomState(11)
    x = rs.randn(2, 3, 4).astype(np.float32)
    b = rs.randn(3).astype(np.float32)
    layer = _layer('name: "b" type: "Bias"')
    assert [s.shape for s in layer.param_specs([x.shape])] == [(3,)]
    assert_close(layer.forward([torch.tensor(x)], [torch.tensor(b)])[0].numpy(), x + b[:, None], 1e-6, "bias")
    assert layer.param_specs([x.shape, (3,)]) == []
    assert_close(layer.forward([torch.tensor(x), torch.tensor(b)], [])[0].numpy(), x + b[:, None], 1e-6, "bias bottom")
