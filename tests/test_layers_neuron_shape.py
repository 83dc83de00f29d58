"""Neuron, element-wise, shape, softmax and DummyData layers, one layer at a time.

Fixture cases (real Caffe) are replayed layer by layer, without the Net: each non-Input layer of the
case's prototxt is built from its LayerParameter and run on the case's inputs; backward is autograd from
the loss layers seeded with their loss weights. Edge cases are checked against numpy or plain torch.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffe_cases import Case, assert_close
from netspec import caffe_pb2
from runner.layers.base import Layer
from runner.registry import layer_class

TRAIN, TEST = 0, 1


# ----- layer-level replay of a fixture case (shared with test_losses) -----

def layer_param(text: str) -> "caffe_pb2.LayerParameter":
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def build(text: str, phase: int = TEST) -> Layer:
    lp = layer_param(text)
    return layer_class(lp.type, lp.name)(lp, phase)


def replay(case: Case) -> Tuple[Dict[str, torch.Tensor], Dict[str, np.ndarray]]:
    """Run the case's layers in order on its inputs and params; backward from every loss top.
    Returns every blob's value and every blob's gradient (zeros where none arrives, as Caffe's diffs)."""
    net = text_format.Parse(open(case.prototxt).read(), caffe_pb2.NetParameter())
    params = case.arrays("params") or {}
    blobs = {k: torch.tensor(v, requires_grad=True) for k, v in case.arrays("inputs").items()}
    seeds: List[Tuple[torch.Tensor, float]] = []
    for lp in net.layer:
        if lp.type == "Input":
            continue
        layer = layer_class(lp.type, lp.name)(lp, case.phase)
        weights = [torch.tensor(params[f"{lp.name}/{i}"], requires_grad=True)
                   for i in range(len(layer.param_specs([tuple(blobs[b].shape) for b in lp.bottom])))]
        tops = layer.forward([blobs[b] for b in lp.bottom], weights)
        assert len(tops) == len(lp.top)
        for i, (name, tensor) in enumerate(zip(lp.top, tops)):
            assert name not in lp.bottom, "replay does not handle in-place layers"
            if tensor.requires_grad:
                tensor.retain_grad()
            blobs[name] = tensor
            weight = lp.loss_weight[i] if i < len(lp.loss_weight) else (layer.default_loss_weight if i == 0 else 0.0)
            if weight:
                seeds.append((tensor, weight))
    if seeds:
        torch.autograd.backward([t for t, _ in seeds], [torch.full_like(t, w) for t, w in seeds])
    grads = {k: (v.grad.numpy() if v.grad is not None else np.zeros(tuple(v.shape), np.float32))
             for k, v in blobs.items()}
    return blobs, grads


def _as_pycaffe(array: np.ndarray) -> np.ndarray:
    """pycaffe shows a 0-d blob (a loss or accuracy top) as an array of shape (1,)."""
    return array.reshape(1) if array.ndim == 0 else array


def check_case(case: Case) -> None:
    """Every blob forward and every blob diff against real Caffe's."""
    blobs, grads = replay(case)
    for name, want in case.arrays("forward").items():
        assert_close(_as_pycaffe(blobs[name].detach().numpy()), want, case.tolerance, f"{case.name}: '{name}' forward")
    for name, want in case.arrays("diffs").items():
        assert_close(_as_pycaffe(grads[name]), want, case.tolerance, f"{case.name}: '{name}' diff")


LAYER_CASES = ["relu", "relu_negative_slope", "sigmoid", "tanh", "dropout_test", "softmax_axis1",
               "eltwise_max", "eltwise_prod", "eltwise_sum3", "eltwise_sum_coeff", "concat_axis1",
               "concat_axis2", "flatten", "reshape"]


@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_case_matches_caffe(name: str) -> None:
    check_case(Case("layers", name))


def test_eltwise_max_case_has_gradient_on_one_bottom_only() -> None:
    _, grads = replay(Case("layers", "eltwise_max"))
    assert not np.any((grads["a"] != 0) & (grads["b"] != 0))


def test_split_of_fanout_case_sums_branch_gradients() -> None:
    """split_fanout's conv1 feeds two branches through a Split; the bottom's diff is their sum."""
    case = Case("layers", "split_fanout")
    split = build('name: "s" type: "Split" bottom: "conv1" top: "conv1_conv1_0_split_0" top: "conv1_conv1_0_split_1"')
    diffs = case.arrays("diffs")
    x = torch.tensor(case.arrays("forward")["conv1"], requires_grad=True)
    a, b = split.forward([x], [])
    assert a is not b and a is not x and torch.equal(a, x) and torch.equal(b, x)
    torch.autograd.backward([a, b], [torch.tensor(diffs["conv1_conv1_0_split_0"]),
                                     torch.tensor(diffs["conv1_conv1_0_split_1"])])
    assert_close(x.grad.numpy(), diffs["conv1"], 1e-5, "split_fanout: conv1 diff")


# ----- neurons -----

def _grad(layer: Layer, x: np.ndarray, params: List[np.ndarray] = ()) -> Tuple[np.ndarray, np.ndarray, List]:
    """Forward, then backward with a fixed top diff; returns top, bottom grad and param grads."""
    xt = torch.tensor(x, requires_grad=True)
    pt = [torch.tensor(p, requires_grad=True) for p in params]
    top = layer.forward([xt], pt)[0]
    g = torch.linspace(-1.0, 2.0, top.numel()).reshape(top.shape)
    top.backward(g)
    return top.detach().numpy(), (xt.grad.numpy() / g.numpy()), [p.grad.numpy() for p in pt]


def test_relu_gradient_at_zero_is_the_slope() -> None:
    x = np.array([-2.0, 0.0, 3.0], np.float32)
    top, local, _ = _grad(build('name: "r" type: "ReLU" relu_param { negative_slope: 0.25 }'), x)
    np.testing.assert_array_equal(top, [-0.5, 0.0, 3.0])
    np.testing.assert_allclose(local, [0.25, 0.25, 1.0])
    _, local, _ = _grad(build('name: "r" type: "ReLU"'), x)
    np.testing.assert_allclose(local, [0.0, 0.0, 1.0])


def test_prelu_per_channel_and_shared() -> None:
    layer = build('name: "p" type: "PReLU"')
    (spec,) = layer.param_specs([(2, 3, 4)])
    assert spec.shape == (3,) and spec.filler.type == "constant" and spec.filler.value == pytest.approx(0.25)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 4).astype(np.float32)
    x[0, 0, 0] = 0.0
    a = np.array([0.1, -0.2, 0.3], np.float32)
    top, local, (da,) = _grad(layer, x, [a])
    neg = x <= 0
    np.testing.assert_allclose(top, np.where(neg, x * a[None, :, None], x), rtol=1e-6)
    np.testing.assert_allclose(local, np.where(neg, a[None, :, None], 1.0), rtol=1e-6)
    g = np.linspace(-1.0, 2.0, x.size, dtype=np.float32).reshape(x.shape)
    np.testing.assert_allclose(da, (g * x * neg).sum(axis=(0, 2)), rtol=1e-5)

    shared = build('name: "p" type: "PReLU" '
                   'prelu_param { channel_shared: true filler { type: "constant" value: 0.5 } }')
    (spec,) = shared.param_specs([(2, 3, 4)])
    assert spec.shape == () and spec.filler.value == 0.5
    top, _, (da,) = _grad(shared, x, [np.array(0.5, np.float32)])
    np.testing.assert_allclose(top, np.where(neg, 0.5 * x, x), rtol=1e-6)
    assert da.shape == () and da == pytest.approx(float((g * x * neg).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="'p'"):
        layer.param_specs([(5,)])


def test_sigmoid_tanh_absval_match_numpy() -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.5, 4.0], np.float32)
    top, local, _ = _grad(build('name: "s" type: "Sigmoid"'), x)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(top, s, rtol=1e-6)
    np.testing.assert_allclose(local, s * (1 - s), rtol=1e-5)
    top, local, _ = _grad(build('name: "t" type: "TanH"'), x)
    np.testing.assert_allclose(local, 1 - np.tanh(x.astype(np.float64)) ** 2, rtol=1e-5, atol=1e-7)
    top, local, _ = _grad(build('name: "a" type: "AbsVal"'), x)
    np.testing.assert_array_equal(top, np.abs(x))
    np.testing.assert_array_equal(local, np.sign(x))


@pytest.mark.parametrize("power,scale,shift", [(3.0, 0.5, 1.0), (2.0, 1.5, -0.5), (0.5, 2.0, 0.0), (1.0, -2.0, 3.0),
                                               (1.5, 1.0, 2.0)])
def test_power_matches_numpy(power: float, scale: float, shift: float) -> None:
    x = np.array([0.25, 0.5, 1.0, 2.0, 3.0], np.float32)
    layer = build(f'name: "p" type: "Power" power_param {{ power: {power} scale: {scale} shift: {shift} }}')
    top, local, _ = _grad(layer, x)
    base = shift + scale * x.astype(np.float64)
    np.testing.assert_allclose(top, base ** power, rtol=1e-6)
    np.testing.assert_allclose(local, power * scale * base ** (power - 1), rtol=1e-5)


def test_power_constant_cases_have_zero_gradient() -> None:
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    top, local, _ = _grad(build('name: "p" type: "Power" power_param { power: 0 scale: 3 shift: 2 }'), x)
    np.testing.assert_array_equal(top, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(local, [0.0, 0.0, 0.0])
    top, local, _ = _grad(build('name: "p" type: "Power" power_param { power: 2 scale: 0 shift: 3 }'), x)
    np.testing.assert_array_equal(top, [9.0, 9.0, 9.0])
    np.testing.assert_array_equal(local, [0.0, 0.0, 0.0])


def test_power_gradient_uses_caffes_quotient_at_zero() -> None:
    """Caffe computes power*y/x when shift is 0, which is NaN at x = 0 (autograd would give 0 or inf)."""
    _, local, _ = _grad(build('name: "p" type: "Power" power_param { power: 3 }'), np.array([0.0, 2.0], np.float32))
    assert np.isnan(local[0]) and local[1] == pytest.approx(12.0)


def test_dropout_train_mask_scale_and_gradient() -> None:
    layer = build('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.25 }', TRAIN)
    x = torch.ones(20000, requires_grad=True)
    torch.manual_seed(3)
    top = layer.forward([x], [])[0]
    scale = np.float32(1 / 0.75)
    vals = top.detach().numpy()
    assert set(np.unique(vals)) <= {0.0, scale}
    assert abs((vals == 0).mean() - 0.25) < 0.02
    top.backward(torch.full_like(top, 2.0))
    np.testing.assert_allclose(x.grad.numpy(), np.where(vals == 0, 0.0, 2 * scale), rtol=1e-6)
    torch.manual_seed(3)
    np.testing.assert_array_equal(layer.forward([x], [])[0].detach().numpy(), vals)
    with pytest.raises(ValueError, match="dropout_ratio"):
        build('name: "d" type: "Dropout" dropout_param { dropout_ratio: 1.0 }', TRAIN)


def test_dropout_test_phase_copies() -> None:
    x = torch.randn(3, 4)
    top = build('name: "d" type: "Dropout"', TEST).forward([x], [])[0]
    assert torch.equal(top, x) and top.data_ptr() != x.data_ptr()


# ----- element-wise -----

def _eltwise_grads(text: str, arrays: List[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray]]:
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    top = build(text).forward(ts, [])[0]
    top.backward(torch.ones_like(top))
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(ts, arrays)]
    return top.detach().numpy(), grads


def test_eltwise_max_tie_rule() -> None:
    a = np.array([1.0, 2.0, 5.0, 3.0], np.float32)
    b = np.array([1.0, 3.0, 5.0, 3.0], np.float32)
    c = np.array([0.0, 3.0, 6.0, 3.0], np.float32)
    top, (ga, gb) = _eltwise_grads('name: "e" type: "Eltwise" eltwise_param { operation: MAX }', [a, b])
    np.testing.assert_array_equal(top, [1, 3, 5, 3])
    np.testing.assert_array_equal(ga, [0, 0, 0, 0])  # ties between bottoms 0 and 1 go to bottom 1
    np.testing.assert_array_equal(gb, [1, 1, 1, 1])
    top, (ga, gb, gc) = _eltwise_grads('name: "e" type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    np.testing.assert_array_equal(top, [1, 3, 6, 3])
    np.testing.assert_array_equal(gb, [1, 1, 0, 1])  # a later bottom must be strictly larger
    np.testing.assert_array_equal(gc, [0, 0, 1, 0])
    np.testing.assert_array_equal(ga + gb + gc, [1, 1, 1, 1])


def test_eltwise_sum_prod() -> None:
    rng = np.random.RandomState(1)
    a, b, c = (rng.randn(2, 3).astype(np.float32) for _ in range(3))
    top, (ga, gb, gc) = _eltwise_grads('name: "e" type: "Eltwise" eltwise_param { coeff: 2 coeff: -1 coeff: 0.5 }',
                                       [a, b, c])
    np.testing.assert_allclose(top, 2 * a - b + 0.5 * c, rtol=1e-6)
    assert np.all(ga == 2) and np.all(gb == -1) and np.all(gc == 0.5)
    for stable in ("true", "false"):
        text = f'name: "e" type: "Eltwise" eltwise_param {{ operation: PROD stable_prod_grad: {stable} }}'
        top, (ga, gb, gc) = _eltwise_grads(text, [a, b, c])
        np.testing.assert_allclose(top, a * b * c, rtol=1e-6)
        np.testing.assert_allclose(ga, b * c, rtol=1e-5)
        np.testing.assert_allclose(gc, a * b, rtol=1e-5)


def test_eltwise_errors_name_the_layer() -> None:
    with pytest.raises(ValueError, match="'e'.*coeff"):
        build('name: "e" type: "Eltwise" eltwise_param { coeff: 1 }').forward([torch.zeros(2), torch.zeros(2)], [])
    with pytest.raises(ValueError, match="'e'.*coeff"):
        build('name: "e" type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 1 }')
    with pytest.raises(ValueError, match="'e'.*shape"):
        build('name: "e" type: "Eltwise"').forward([torch.zeros(2, 3), torch.zeros(3, 2)], [])
    with pytest.raises(ValueError, match="'e'"):
        build('name: "e" type: "Eltwise"').forward([torch.zeros(2)], [])


def test_silence_has_no_tops() -> None:
    assert build('name: "s" type: "Silence"').forward([torch.zeros(2), torch.zeros(3)], []) == []


# ----- shape -----

def test_concat_axes_and_legacy_concat_dim() -> None:
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 1)
    assert torch.equal(build('name: "c" type: "Concat" concat_param { axis: -1 }').forward([a, b], [])[0],
                       torch.cat([a, b], 2))
    assert torch.equal(build('name: "c" type: "Concat" concat_param { concat_dim: 2 }').forward([a, b], [])[0],
                       torch.cat([a, b], 2))
    with pytest.raises(ValueError, match="'c'.*not both"):
        build('name: "c" type: "Concat" concat_param { axis: 1 concat_dim: 1 }')
    with pytest.raises(ValueError, match="'c'"):
        build('name: "c" type: "Concat"').forward([a, b], [])
    with pytest.raises(ValueError, match="'c'.*axis 3"):
        build('name: "c" type: "Concat" concat_param { axis: 3 }').forward([a, b], [])


def test_slice_points_equal_split_and_gradient() -> None:
    x = torch.arange(24.0).reshape(2, 6, 2).requires_grad_(True)
    tops = build('name: "s" type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 1 slice_point: 4 }'
                 ).forward([x], [])
    assert [t.shape[1] for t in tops] == [1, 3, 2]
    assert torch.equal(torch.cat(tops, 1), x)
    (tops[0].sum() + 2 * tops[2].sum()).backward()
    np.testing.assert_array_equal(x.grad[0, :, 0].numpy(), [1, 0, 0, 0, 2, 2])
    tops = build('name: "s" type: "Slice" top: "a" top: "b" slice_param { slice_dim: 2 }').forward([x], [])
    assert [tuple(t.shape) for t in tops] == [(2, 6, 1), (2, 6, 1)]
    tops = build('name: "s" type: "Slice" top: "a" top: "b" top: "c"').forward([x], [])
    assert [t.shape[1] for t in tops] == [2, 2, 2]
    with pytest.raises(ValueError, match="'s'.*evenly"):
        build('name: "s" type: "Slice" top: "a" top: "b" top: "c" top: "d"').forward([x], [])
    with pytest.raises(ValueError, match="'s'.*slice_point"):
        build('name: "s" type: "Slice" top: "a" top: "b" slice_param { slice_point: 6 }').forward([x], [])
    with pytest.raises(ValueError, match="'s'.*slice_point"):
        build('name: "s" type: "Slice" top: "a" top: "b" slice_param { slice_point: 1 slice_point: 2 }'
              ).forward([x], [])


def test_flatten_axis_range() -> None:
    x = torch.randn(2, 3, 4, 5)
    def flat(param: str) -> Tuple[int, ...]:
        return tuple(build(f'name: "f" type: "Flatten" flatten_param {{ {param} }}').forward([x], [])[0].shape)
    assert flat("") == (2, 60)
    assert flat("axis: 1 end_axis: 2") == (2, 12, 5)
    assert flat("axis: 0 end_axis: -3") == (6, 4, 5)
    with pytest.raises(ValueError, match="'f'"):
        build('name: "f" type: "Flatten" flatten_param { axis: 4 }').forward([x], [])


@pytest.mark.parametrize("param,want", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 0 dim: -1 }", (2, 3, 20)),
    ("shape { dim: 1 } axis: 1 num_axes: 0", (2, 1, 3, 4, 5)),
    ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1)),
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 12, 5)),
    ("shape { dim: 0 dim: 2 dim: -1 } axis: 1", (2, 3, 2, 10)),
])
def test_reshape_rules(param: str, want: Tuple[int, ...]) -> None:
    top = build(f'name: "r" type: "Reshape" reshape_param {{ {param} }}').forward([torch.randn(2, 3, 4, 5)], [])[0]
    assert tuple(top.shape) == want


@pytest.mark.parametrize("param", ["shape { dim: -1 dim: -1 }", "shape { dim: 7 dim: -1 }", "shape { dim: 5 }",
                                   "shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "shape { dim: 2 } axis: 5",
                                   "shape { dim: -2 dim: -60 }"])
def test_reshape_errors_name_the_layer(param: str) -> None:
    with pytest.raises(ValueError, match="'r'"):
        build(f'name: "r" type: "Reshape" reshape_param {{ {param} }}').forward([torch.zeros(2, 3, 4, 5)], [])


def _argmax_numpy(rows: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Caffe's order: descending (value, index) pairs, so equal values put the higher index first."""
    idx = np.array([sorted(range(len(r)), key=lambda j: (r[j], j), reverse=True)[:k] for r in rows])
    return idx, np.take_along_axis(rows, idx, 1)


def test_argmax_without_axis() -> None:
    rng = np.random.RandomState(2)
    x = rng.randint(0, 4, size=(3, 2, 2, 3)).astype(np.float32)  # many ties
    idx, val = _argmax_numpy(x.reshape(3, -1), 3)
    top = build('name: "a" type: "ArgMax" argmax_param { top_k: 3 }').forward([torch.tensor(x)], [])[0]
    assert tuple(top.shape) == (3, 1, 3, 1)
    np.testing.assert_array_equal(top.numpy().reshape(3, 3), idx)
    top = build('name: "a" type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }'
                ).forward([torch.tensor(x)], [])[0]
    assert tuple(top.shape) == (3, 2, 3, 1)
    np.testing.assert_array_equal(top.numpy()[:, 0, :, 0], idx)
    np.testing.assert_array_equal(top.numpy()[:, 1, :, 0], val)
    assert build('name: "a" type: "ArgMax"').forward([torch.zeros(4, 5)], [])[0].shape == (4, 1, 1)


def test_argmax_with_axis() -> None:
    rng = np.random.RandomState(4)
    x = rng.randint(0, 3, size=(2, 5, 3, 2)).astype(np.float32)
    rows = np.moveaxis(x, 1, -1).reshape(-1, 5)
    idx, val = _argmax_numpy(rows, 2)
    top = build('name: "a" type: "ArgMax" argmax_param { top_k: 2 axis: 1 }').forward([torch.tensor(x)], [])[0]
    assert tuple(top.shape) == (2, 2, 3, 2)
    np.testing.assert_array_equal(np.moveaxis(top.numpy(), 1, -1).reshape(-1, 2), idx)
    top = build('name: "a" type: "ArgMax" argmax_param { top_k: 2 axis: -3 out_max_val: true }'
                ).forward([torch.tensor(x)], [])[0]
    np.testing.assert_array_equal(np.moveaxis(top.numpy(), 1, -1).reshape(-1, 2), val)
    with pytest.raises(ValueError, match="'a'.*top_k"):
        build('name: "a" type: "ArgMax" argmax_param { top_k: 6 axis: 1 }').forward([torch.tensor(x)], [])


def test_softmax_negative_axis() -> None:
    x = torch.randn(2, 3, 4)
    top = build('name: "s" type: "Softmax" softmax_param { axis: -1 }').forward([x], [])[0]
    e = np.exp(x.numpy().astype(np.float64))
    np.testing.assert_allclose(top.numpy(), e / e.sum(-1, keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="'s'.*axis 3"):
        build('name: "s" type: "Softmax" softmax_param { axis: 3 }').forward([x], [])


@pytest.mark.parametrize("text,bottoms", [
    ('name: "x" type: "ReLU"', [(2, 3)]), ('name: "x" type: "Power" power_param { power: 2 }', [(2, 3)]),
    ('name: "x" type: "Dropout" phase: TRAIN', [(2, 3)]), ('name: "x" type: "Eltwise" eltwise_param { operation: MAX }',
                                                           [(2, 3), (2, 3)]),
    ('name: "x" type: "Concat"', [(2, 3), (2, 1)]), ('name: "x" type: "Slice" top: "a" top: "b"', [(2, 4)]),
    ('name: "x" type: "Flatten"', [(2, 3, 4)]), ('name: "x" type: "Reshape" reshape_param { shape { dim: -1 } }',
                                                 [(2, 3)]),
    ('name: "x" type: "ArgMax" argmax_param { top_k: 2 }', [(2, 3, 4)]), ('name: "x" type: "Softmax"', [(2, 3)]),
    ('name: "x" type: "Split" top: "a" top: "b"', [(2, 3)]),
])
def test_forward_runs_on_meta_tensors(text: str, bottoms: List[Tuple[int, ...]]) -> None:
    layer = build(text, TRAIN)
    real = layer.forward([torch.randn(s) for s in bottoms], [])
    meta = layer.forward([torch.empty(s, device="meta") for s in bottoms], [])
    assert [tuple(t.shape) for t in meta] == [tuple(t.shape) for t in real]


# ----- DummyData -----

def test_dummy_data_shapes_fillers_and_refill() -> None:
    layer = build('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { shape { dim: 2 dim: 3 } '
                  'shape { dim: 4 } data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" } }')
    a1, b1 = layer.forward([], [])
    a2, b2 = layer.forward([], [])
    assert a1.shape == (2, 3) and b1.shape == (4,) and torch.all(a1 == 7)
    assert a1 is a2  # constant tops are filled once and kept, as in Caffe
    assert not torch.equal(b1, b2)  # other fillers draw again at every forward
    (zeros,) = build('name: "d" type: "DummyData" top: "z" dummy_data_param { num: 1 channels: 2 height: 3 width: 4 }'
                     ).forward([], [])
    assert zeros.shape == (1, 2, 3, 4) and not torch.any(zeros)
    tops = build('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { num: 1 num: 2 channels: 3 '
                 'height: 1 width: 5 }').forward([], [])
    assert [tuple(t.shape) for t in tops] == [(1, 3, 1, 5), (2, 3, 1, 5)]


@pytest.mark.parametrize("param", ["shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1",
                                   "shape { dim: 1 } shape { dim: 2 } shape { dim: 3 }",
                                   "shape { dim: 1 } data_filler { } data_filler { } data_filler { }",
                                   "num: 1 num: 2 num: 3 channels: 1 height: 1 width: 1"])
def test_dummy_data_errors_name_the_layer(param: str) -> None:
    with pytest.raises(ValueError, match="'d'"):
        build(f'name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param {{ {param} }}')
