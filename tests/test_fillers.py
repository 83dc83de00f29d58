"""Fillers against real Caffe: bilinear bit for bit, the random ones by their distribution and, seeded as
Caffe was (``set_random_seed(1701)``), by Caffe's own numbers.

Unseeded (torch's generator) what must agree is the distribution (bounds, mean, spread, fan computation,
row sums), checked with generous statistical tolerances on 16800 draws, both against the filler's
definition and against Caffe's own statistics. Seeded, the net draws from Caffe's generator
(``runner.caffe_rng``): every random filler's minimum and maximum are Caffe's to the bit, and its mean
and spread Caffe's to float precision.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffe_cases import ROOT
from netspec import caffe_pb2
from runner.fillers import fill
from runner.registry import layer_class

FOLDER = os.path.join(ROOT, "fillers")
with open(os.path.join(FOLDER, "fillers.json")) as _f:
    STATS = json.load(_f)
with open(os.path.join(FOLDER, "net.prototxt")) as _f:
    NET = text_format.Parse(_f.read(), caffe_pb2.NetParameter())
LAYERS = {lp.name: lp for lp in NET.layer}
INPUT_SHAPES = {lp.top[0]: tuple(lp.input_param.shape[0].dim) for lp in NET.layer if lp.type == "Input"}


def _filled_params(name: str, seed: int = 0):
    """The layer's blobs as our runner would initialise them (param_specs + fill)."""
    lp = LAYERS[name]
    layer = layer_class(lp.type, lp.name)(lp, 1)
    generator = torch.Generator().manual_seed(seed)
    return [fill(torch.empty(spec.shape), spec.filler, generator) for spec in layer.param_specs([INPUT_SHAPES[lp.bottom[0]]])]


@pytest.mark.parametrize("name", sorted(STATS["bilinear"]))
def test_bilinear_equals_caffe_bitwise(name: str) -> None:
    with np.load(os.path.join(FOLDER, "bilinear.npz")) as archive:
        want = archive[name]
    (weights,) = _filled_params(name)
    np.testing.assert_array_equal(weights.numpy(), want)


def _expected_moments(case: dict):
    """(mean, std, low, high) of the filler's defining distribution; None where unbounded."""
    f, expected = case["filler"], case["expected"]
    kind = f["type"]
    if kind == "gaussian":
        return f.get("mean", 0.0), f["std"], None, None
    if kind == "uniform":
        return (f["min"] + f["max"]) / 2, (f["max"] - f["min"]) / math.sqrt(12), f["min"], f["max"]
    if kind == "xavier":
        return 0.0, expected["a"] / math.sqrt(3), -expected["a"], expected["a"]
    if kind == "msra":
        return 0.0, expected["std"], None, None
    raise AssertionError(kind)


@pytest.mark.parametrize("key", sorted(STATS["random_filler_stats"]))
def test_random_filler_distribution(key: str) -> None:
    case = STATS["random_filler_stats"][key]
    weights, bias = (t.numpy().astype(np.float64) for t in _filled_params(f"conv_{key}"))
    assert weights.shape == tuple(case["weight_shape"])
    np.testing.assert_array_equal(np.unique(bias), np.float32(case["bias_unique_values"]))
    kind = case["filler"]["type"]
    if kind == "constant":
        assert np.all(weights == np.float32(case["filler"]["value"]))
        return
    if kind == "positive_unitball":
        rows = weights.reshape(weights.shape[0], -1)
        assert rows.min() >= 0 and rows.max() <= 1
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
        assert abs(weights.std() - case["std"]) <= 0.1 * case["std"]
        return
    mean, std, low, high = _expected_moments(case)
    n = weights.size
    assert abs(weights.mean() - mean) <= 5 * std / math.sqrt(n), "mean"
    assert abs(weights.std() - std) <= 0.05 * std, "std vs the definition"
    assert abs(weights.std() - case["std"]) <= 0.05 * case["std"], "std vs Caffe's draw"
    assert abs(weights.mean() - case["mean"]) <= 10 * std / math.sqrt(n), "mean vs Caffe's draw"
    if low is not None:
        assert low <= weights.min() and weights.max() <= high, "bounds"
        assert weights.min() - low <= 0.01 * (high - low) and high - weights.max() <= 0.01 * (high - low)


def test_seeded_net_draws_caffes_very_numbers() -> None:
    from runner import caffe_rng
    from runner.device import set_random_seed
    from runner.net import Net
    set_random_seed(STATS["random_seed"])
    try:
        net = Net(os.path.join(FOLDER, "net.prototxt"), caffe_pb2.TEST)
    finally:
        caffe_rng.unseed()
    for key, want in STATS["random_filler_stats"].items():
        weights = net.params[f"conv_{key}"][0].data
        assert (weights.min(), weights.max()) == (np.float32(want["min"]), np.float32(want["max"])), key
        values = weights.astype(np.float64)
        assert math.isclose(values.std(), want["std"], rel_tol=1e-5, abs_tol=1e-7), key
        assert math.isclose(values.mean(), want["mean"], rel_tol=1e-5, abs_tol=1e-7), key


def test_fan_out_of_a_1d_blob_is_its_count() -> None:
    """Caffe's channels() of a 1-axis blob is 1, so fan_out = count (and fan_in = 1)."""
    p = caffe_pb2.FillerParameter(type="xavier", variance_norm=caffe_pb2.FillerParameter.FAN_OUT)
    t = fill(torch.empty(30000), p, torch.Generator().manual_seed(0))
    assert float(t.abs().max()) <= math.sqrt(3 / 30000)
    p.variance_norm = caffe_pb2.FillerParameter.FAN_IN
    assert float(fill(torch.empty(30000), p, torch.Generator().manual_seed(0)).abs().max()) > 0.5


def test_sparse_gaussian_keeps_sparse_over_num_outputs() -> None:
    p = caffe_pb2.FillerParameter(type="gaussian", std=1.0, sparse=5)
    t = fill(torch.empty(20, 2000), p, torch.Generator().manual_seed(0))
    assert abs(float((t != 0).float().mean()) - 5 / 20) < 0.01


def test_defaults_and_errors() -> None:
    assert torch.equal(fill(torch.ones(3), None), torch.zeros(3))
    assert torch.equal(fill(torch.ones(3), caffe_pb2.FillerParameter()), torch.zeros(3))
    with pytest.raises(ValueError, match="unknown filler type 'nope'"):
        fill(torch.empty(3), caffe_pb2.FillerParameter(type="nope"))
    with pytest.raises(ValueError, match="sparse"):
        fill(torch.empty(3), caffe_pb2.FillerParameter(type="uniform", sparse=2))
    with pytest.raises(ValueError, match="square"):
        fill(torch.empty(1, 1, 3, 4), caffe_pb2.FillerParameter(type="bilinear"))
    with pytest.raises(ValueError, match="4-D"):
        fill(torch.empty(3, 3), caffe_pb2.FillerParameter(type="bilinear"))
