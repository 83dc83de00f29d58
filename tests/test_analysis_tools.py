"""The paper's analysis tools: IU upper bounds, shift-and-stitch = dilation, loss sampling and class
weights, augmentation, input masking, and the heavy-learning momentum rule. Small inputs only."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from data_layers.augment import Augmenter, translate
from data_layers.catalog import open_layer
from data_layers.masking import SHAPE_VALUE, mask_sample
from data_layers.synthetic import scenes, write_dataset
from data_layers.transforms import VOID
from fcn.cli import main
from netspec import caffe_pb2
from netspec.net_spec import L, NetSpec, P
from netspec.null_background import null_background_head
from runner.layers.losses import ClassWeights, LossSampling, SoftmaxWithLoss, set_cell_weighting
from runner.net import Net
from solvers.bounds import downsample, iu_bounds
from solvers.heavy import equivalent_momentum, fcn_accum, fcn_heavy, fcn_online
from surgery.dilation import remove_subsampling
from surgery.interp import interp
from surgery.shift_stitch import shift_and_stitch


# ----- upper bounds on IU (Section 6.3) -----

def test_mode_and_nearest_cells() -> None:
    label = np.array([[1, 1, 2, 2],
                      [1, 3, VOID, VOID],
                      [0, 0, 4, VOID],
                      [0, 5, VOID, VOID]], np.uint8)
    np.testing.assert_array_equal(downsample(label, 2, "mode"), [[1, 2], [0, 4]])
    np.testing.assert_array_equal(downsample(label, 2, "nearest"), [[3, VOID], [5, VOID]])
    np.testing.assert_array_equal(downsample(label, 3, "mode"), [[1, 2], [0, VOID]])  # a tie: lowest class


def test_bounds_are_100_at_factor_1_and_fall_with_the_factor() -> None:
    labels = [scene.label for _, scene in scenes("voc", "val", 3, size=(64, 64), seed=1)]
    for mode in ("mode", "nearest"):
        bounds = iu_bounds(labels, [1, 2, 8, 32], mode=mode)
        assert bounds[1] == 100.0
        assert bounds[1] > bounds[2] > bounds[8] > bounds[32]


def test_void_bound_over_real_truth_is_a_miss() -> None:
    label = np.array([[VOID, 1], [1, 1]], np.uint8)
    assert iu_bounds([label], [2], mode="nearest")[2] == 100.0  # the cell's centre (1, 1) is class 1 ...
    assert iu_bounds([label[::-1, ::-1]], [2], mode="nearest")[2] == 0.0  # ... here it is void: 3 misses


def test_bounds_command_reads_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_dataset("voc", tmp_path, n=2, size=(32, 32), seed=0)
    assert main(["bounds", "--data", str(tmp_path), "--factors", "1,8"]) == 0
    out = capsys.readouterr().out
    assert "2 images" in out and "factor    1: 100.00" in out


# ----- shift-and-stitch is filter dilation (Section 3.2) -----

def _strided_net() -> caffe_pb2.NetParameter:
    """Valid (unpadded) conv/pool layers of total stride 4, so the equivalence is exact everywhere."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 36, 36]))
    fill, bias = dict(type="gaussian", std=0.3), dict(type="gaussian", std=0.1)
    n.conv1 = L.Convolution(n.data, num_output=3, kernel_size=3, weight_filler=fill, bias_filler=bias)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, num_output=3, kernel_size=3, stride=2, weight_filler=fill, bias_filler=bias)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.score = L.Convolution(n.relu2, num_output=2, kernel_size=3, weight_filler=fill)
    return n.to_proto()


def test_dilated_net_equals_shift_and_stitch() -> None:
    param = _strided_net()
    dense_param = remove_subsampling(param, "pool1")
    layers = {layer.name: layer for layer in dense_param.layer}
    assert list(layers["conv2"].convolution_param.dilation) == [2]
    assert list(layers["score"].convolution_param.dilation) == [4]
    net, dense = Net(param, caffe_pb2.TEST), Net(dense_param, caffe_pb2.TEST)
    for name, blobs in net.params.items():
        for source, target in zip(blobs, dense.params[name]):
            target.data[...] = source.data
    image = np.random.default_rng(0).normal(size=(1, 2, 36, 36)).astype(np.float32)
    stitched = shift_and_stitch(net, image, 4)
    dense.blobs["data"].data[...] = image
    dense.forward()
    direct = dense.blobs["score"].data
    h, w = min(stitched.shape[2], direct.shape[2]), min(stitched.shape[3], direct.shape[3])
    assert h >= 20 and w >= 20
    np.testing.assert_allclose(stitched[..., :h, :w], direct[..., :h, :w], rtol=1e-5, atol=1e-5)


def test_remove_subsampling_refuses_what_caffe_cannot_express() -> None:
    param = _strided_net()
    with pytest.raises(ValueError, match="pooling 'pool1'.*cannot be dilated"):
        remove_subsampling(_with_strided_conv1(param), "conv1")
    with pytest.raises(ValueError, match="is a ReLU"):
        remove_subsampling(param, "relu1")
    with pytest.raises(ValueError, match="no layer"):
        remove_subsampling(param, "nope")


def _with_strided_conv1(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    copy = caffe_pb2.NetParameter()
    copy.CopyFrom(param)
    copy.layer[1].convolution_param.stride.append(2)
    return copy


# ----- loss sampling and class weights (Sections 3.4, 4.4) -----

def _softmax_loss() -> SoftmaxWithLoss:
    lp = text_format.Parse('name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "loss" '
                           'loss_param { ignore_label: 255 }', caffe_pb2.LayerParameter())
    return SoftmaxWithLoss(lp, caffe_pb2.TRAIN)


def _loss_and_grad(layer: SoftmaxWithLoss, scores: np.ndarray, labels: np.ndarray):
    x = torch.tensor(scores, requires_grad=True)
    (loss,) = layer.forward([x, torch.tensor(labels)], [])
    loss.backward()
    return loss.item(), x.grad.numpy()


def test_loss_sampling_keeps_the_expected_fraction_and_zeroes_dropped_gradients() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(1, 3, 100, 100)).astype(np.float32)
    labels = rng.integers(0, 3, size=(1, 1, 100, 100)).astype(np.float32)
    layer = _softmax_loss()
    layer.cell_weighting = LossSampling(keep=0.25, seed=3)
    _, grad = _loss_and_grad(layer, scores, labels)
    kept = np.abs(grad).sum(axis=1) > 0
    assert abs(kept.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / kept.size)  # 4 sigma
    _, full = _loss_and_grad(_softmax_loss(), scores, labels)
    np.testing.assert_allclose(grad * kept.sum(), full * kept[:, None] * kept.size, rtol=1e-4, atol=1e-7)
    again = _softmax_loss()
    again.cell_weighting = LossSampling(keep=0.25, seed=3)
    np.testing.assert_array_equal(_loss_and_grad(again, scores, labels)[1], grad)


def test_class_weights_scale_each_cell_by_its_class() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 1, 4, 5)).astype(np.float32)
    labels[0, 0, 0, 0] = 255
    weights = np.array([0.5, 2.0, 3.0], np.float32)
    layer = _softmax_loss()
    layer.cell_weighting = ClassWeights(weights)
    loss, grad = _loss_and_grad(layer, scores, labels)
    plain_loss, plain = _loss_and_grad(_softmax_loss(), scores, labels)
    index = np.where(labels == 255, 0, labels).astype(int)
    per_cell = np.where(labels == 255, 0.0, weights[index])
    np.testing.assert_allclose(grad, plain * per_cell, rtol=1e-5, atol=1e-7)
    e = np.exp(scores.astype(np.float64))
    nll = -np.log(np.take_along_axis(e / e.sum(1, keepdims=True), index, 1))
    assert loss == pytest.approx((nll * per_cell).sum() / (labels != 255).sum(), rel=1e-5)
    assert plain_loss != pytest.approx(loss)
    np.testing.assert_allclose(ClassWeights.inverse_frequency([10, 30, 0]).weights, [2.0, 2 / 3, 0.0], rtol=1e-6)


def test_cell_weighting_reaches_a_net_layer() -> None:
    n = NetSpec()
    n.s = L.Input(shape=dict(dim=[1, 2, 3, 3]))
    n.l = L.Input(shape=dict(dim=[1, 1, 3, 3]))
    n.loss = L.SoftmaxWithLoss(n.s, n.l)
    net = Net(n.to_proto(), caffe_pb2.TRAIN)
    net.blobs["s"].data[...] = 1.0
    set_cell_weighting(net, "loss", ClassWeights([0.0, 0.0]))
    net.forward()
    assert net.blobs["loss"].data.item() == 0.0
    with pytest.raises(ValueError, match="not a SoftmaxWithLoss"):
        set_cell_weighting(net, "s", None)


# ----- augmentation and masking (Sections 4.4, 6.1) -----

def _tagged_sample(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """A label map and an image whose pixels carry their label + 1, so we can see they move together."""
    label = rng.integers(0, 5, size=(1, 10, 12)).astype(np.uint8)
    image = np.repeat(label.astype(np.float32) + 1, 3, axis=0)
    return {"data": image, "label": label}


def test_augmentation_moves_image_and_label_together() -> None:
    sample = _tagged_sample(np.random.default_rng(2))
    augment = Augmenter(mirror=True, jitter=4, seed=7)
    flips = set()
    for _ in range(20):
        out = augment(sample)
        seen = out["label"] != VOID
        np.testing.assert_array_equal(out["data"][0][seen[0]], out["label"][0][seen[0]] + 1.0)
        assert np.all(out["data"][:, ~seen[0]] == 0)
        flips.add(any(np.array_equal(out["label"], translate(sample["label"][..., ::-1], dy, dx))
                      for dy in range(-4, 5) for dx in range(-4, 5)))
    assert flips == {True, False}
    again = Augmenter(mirror=True, jitter=4, seed=7)
    np.testing.assert_array_equal(again(sample)["label"], Augmenter(True, 4, 7)(sample)["label"])


def _layer_outputs(root: Path, **keys: object) -> List[Dict[str, np.ndarray]]:
    params = dict(voc_dir=str(root / "pascal" / "VOC2011"), split="val", prefetch=0, **keys)
    layer, tops = open_layer("voc", params)
    out = []
    for _ in range(2):
        layer.reshape([], tops)
        layer.forward([], tops)
        # labels as the layer holds them (uint8), not as the float blob does, so translate() fills VOID
        out.append({"data": tops[0].data[0].copy(), "label": tops[1].data[0].astype(np.uint8)})
    return out


def test_data_layer_augments_and_masks(tmp_path: Path) -> None:
    write_dataset("voc", tmp_path, n=2, size=(24, 32), seed=0)
    plain = _layer_outputs(tmp_path)
    jittered = _layer_outputs(tmp_path, mirror=True, jitter=3, seed=1)
    assert any(not np.array_equal(base["label"], moved["label"]) for base, moved in zip(plain, jittered))
    for base, moved in zip(plain, jittered):
        matches = [(flip, dy, dx) for flip in (False, True) for dy in range(-3, 4) for dx in range(-3, 4)
                   if np.array_equal(moved["label"], translate(base["label"][..., ::-1] if flip else base["label"],
                                                               dy, dx))]
        assert matches
        flip, dy, dx = matches[0]
        np.testing.assert_array_equal(moved["data"], translate(base["data"][..., ::-1] if flip else base["data"],
                                                               dy, dx))
    for mode in ("foreground", "background", "shape"):
        for base, masked in zip(plain, _layer_outputs(tmp_path, mask=mode)):
            np.testing.assert_array_equal(masked["data"], mask_sample(base, mode)["data"])
    with pytest.raises(ValueError, match="mask must be one of"):
        _layer_outputs(tmp_path, mask="sky")


def test_masks_hit_the_right_pixels() -> None:
    label = np.array([[[0, 1, VOID], [2, 0, 0]]], np.uint8)
    image = np.full((3, 2, 3), 7.0, np.float32)
    sample = {"data": image, "label": label}
    fg = mask_sample(sample, "foreground")["data"][0]
    bg = mask_sample(sample, "background")["data"][0]
    shape = mask_sample(sample, "shape")["data"]
    np.testing.assert_array_equal(fg, [[7, 0, 7], [0, 7, 7]])
    np.testing.assert_array_equal(bg, [[0, 7, 7], [7, 0, 0]])
    np.testing.assert_array_equal(shape, np.broadcast_to([[0, SHAPE_VALUE, 0], [SHAPE_VALUE, 0, 0]], (3, 2, 3)))
    assert mask_sample(sample, "shape")["label"] is label


# ----- heavy learning (Table 2) -----

def test_momentum_batch_rule() -> None:
    assert equivalent_momentum(0.9, 20, 1) == pytest.approx(0.9 ** (1 / 20))
    assert equivalent_momentum(0.9, 20, 1) == pytest.approx(0.99475, abs=1e-5)
    assert equivalent_momentum(equivalent_momentum(0.99, 1, 20), 20, 1) == pytest.approx(0.99)
    assert equivalent_momentum(0.9, 5, 5) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        equivalent_momentum(1.0, 1, 2)


def test_table2_recipes_merge_into_a_solver() -> None:
    solver = caffe_pb2.SolverParameter(base_lr=1e-4, momentum=0.5)
    solver.MergeFrom(fcn_accum())
    assert (solver.iter_size, solver.momentum, solver.base_lr) == (20, pytest.approx(0.9), pytest.approx(1e-4))
    assert (fcn_online().iter_size, fcn_online().momentum) == (1, pytest.approx(0.9))
    assert (fcn_heavy().iter_size, fcn_heavy().momentum) == (1, pytest.approx(0.99))


def _null_background_net() -> Net:
    """A null-background head on a pooled 4-channel input standing in for a body's features: 3 classes,
    so the net scores 2 foreground classes and fixes the background's score at 0."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4, 8, 8]))
    n.label = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    null_background_head(n, n.pool, n.data, 3, label=n.label, stride=2)
    net = Net(n.to_proto(), caffe_pb2.TRAIN)
    rng = np.random.default_rng(4)
    net.params["score_fr_fg"][0].data[...] = rng.normal(size=net.params["score_fr_fg"][0].data.shape)
    interp(net, ["upscore_fg"])
    net.blobs["data"].data[...] = rng.normal(size=(1, 4, 8, 8))
    labels = rng.integers(0, 3, size=(1, 1, 8, 8)).astype(np.float32)
    labels[0, 0, :2, :3] = VOID
    net.blobs["label"].data[...] = labels
    return net


def test_null_background_head_trains_each_foreground_class_as_a_sigmoid_and_predicts_by_highest_score() -> None:
    net = _null_background_net()
    net.forward()
    net.backward()
    fg = net.blobs["score_fg"].data.astype(np.float64)
    labels = net.blobs["label"].data
    valid = labels != VOID
    target = (labels == np.array([1, 2]).reshape(1, 2, 1, 1)).astype(np.float64)
    want_loss = ((np.logaddexp(0, fg) - fg * target) * valid).sum()   # summed, as FCN's softmax loss
    np.testing.assert_allclose(net.blobs["loss"].data, [want_loss], rtol=1e-5)
    want_grad = (1 / (1 + np.exp(-fg)) - target) * valid
    np.testing.assert_allclose(net.blobs["score_fg"].diff, want_grad, rtol=1e-4, atol=1e-6)
    score = net.blobs["score"].data
    assert score.shape == (1, 3, 8, 8) and not score[:, 0].any()   # the background scores 0
    predicted = score.argmax(axis=1)
    np.testing.assert_array_equal(predicted, np.where(fg.max(axis=1) > 0, fg.argmax(axis=1) + 1, 0))
    assert 0 < (predicted == 0).mean() < 1


def test_null_background_zero_score_is_frozen_at_zero() -> None:
    net = _null_background_net()
    net.forward()
    net.backward()
    weights = net.layer_dict["score_bg"].blobs[0]
    assert weights.data.shape == (1, 2, 1, 1) and not weights.data.any()
    layer = next(layer for layer in net.to_proto().layer if layer.name == "score_bg")
    assert [(spec.lr_mult, spec.decay_mult) for spec in layer.param] == [(0, 0)]   # no update, no decay