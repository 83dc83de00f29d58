"""Loss layers and Accuracy against real Caffe (losses/ fixtures, layer by layer) and numpy edge cases."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffe_cases import Case, case_names
from netspec import caffe_pb2
from runner.layers.losses import normalization_mode, normalizer
from test_layers_neuron_shape import TRAIN, build, check_case, replay

# replay differentiates every input, as force_backward does; the InfogainLoss cases ran without it
LOSS_CASES = case_names("losses") + [n for n in case_names("losses", "index_ext.json")
                                     if "same_net_with_force_backward_true" not in Case("losses", n).meta]
_MODE_NAMES = {getattr(caffe_pb2.LossParameter, n): n for n in ("FULL", "VALID", "BATCH_SIZE", "NONE")}


@pytest.mark.parametrize("name", LOSS_CASES)
def test_loss_case_matches_caffe(name: str) -> None:
    check_case(Case("losses", name))


@pytest.mark.parametrize("name", [n for n in LOSS_CASES if n.startswith(("softmax", "sigmoid"))])
def test_normalizer_is_caffes(name: str) -> None:
    case = Case("losses", name)
    check = case.meta["loss_check"]
    lp = next(layer for layer in _net(case).layer if layer.type != "Input")
    default = caffe_pb2.LossParameter.VALID if lp.type == "SoftmaxWithLoss" else caffe_pb2.LossParameter.BATCH_SIZE
    mode = normalization_mode(lp.loss_param, default)
    assert _MODE_NAMES[mode] == check["normalization_mode"]
    labels = torch.tensor(case.arrays("inputs")["label"])
    valid = torch.ones_like(labels, dtype=torch.bool)
    if lp.loss_param.HasField("ignore_label"):
        valid = labels != lp.loss_param.ignore_label
    scores_shape = case.meta["input_shapes"]["scores"]
    inner = int(np.prod(scores_shape[2:])) * (scores_shape[1] if lp.type != "SoftmaxWithLoss" else 1)
    assert float(normalizer(mode, scores_shape[0], inner, valid)) == check["normalizer"]


def _net(case: Case) -> "caffe_pb2.NetParameter":
    return text_format.Parse(open(case.prototxt).read(), caffe_pb2.NetParameter())


def test_loss_weight_scales_diffs_not_the_loss() -> None:
    plain_blobs, plain = replay(Case("losses", "softmax_normalize_false"))
    double_blobs, double = replay(Case("losses", "softmax_loss_weight2"))
    assert float(double_blobs["loss"].detach()) == float(plain_blobs["loss"].detach())
    np.testing.assert_allclose(double["scores"], 2 * plain["scores"], rtol=1e-6)
    assert not np.any(double["label"])


def test_euclidean_back_propagates_into_both_bottoms() -> None:
    _, grads = replay(Case("losses", "euclidean_loss_weight_half"))
    np.testing.assert_allclose(grads["label"], -grads["scores"], rtol=1e-6)
    assert np.any(grads["label"])


def test_accuracy_values_of_caffe() -> None:
    blobs, _ = replay(Case("losses", "accuracy_ignore_top1"))
    assert float(blobs["accuracy"]) == pytest.approx(0.179245278, rel=1e-6)
    np.testing.assert_allclose(blobs["per_class_accuracy"].numpy(),
                               [0.166667, 0.04, 0.217391, 0.277778, 0.227273], atol=1e-6)


# ----- SoftmaxWithLoss edge cases -----

def _run(text: str, arrays: List[np.ndarray]) -> Tuple[List[torch.Tensor], torch.Tensor]:
    scores = torch.tensor(arrays[0], requires_grad=True)
    tops = build(text, TRAIN).forward([scores] + [torch.tensor(a) for a in arrays[1:]], [])
    tops[0].backward(torch.tensor(1.0))
    return tops, scores.grad


def test_softmax_loss_clamps_at_flt_min() -> None:
    scores = np.array([[0.0, -200.0]], np.float32)
    (loss,), grad = _run('name: "l" type: "SoftmaxWithLoss"', [scores, np.array([1.0], np.float32)])
    assert loss.item() == pytest.approx(-np.log(np.finfo(np.float32).tiny), rel=1e-6)
    np.testing.assert_allclose(grad.numpy(), [[1.0, -1.0]], atol=1e-7)


def test_softmax_loss_on_axis_2() -> None:
    rng = np.random.RandomState(5)
    x = rng.randn(2, 3, 4, 2).astype(np.float32)
    label = rng.randint(0, 4, size=(2, 3, 1, 2)).astype(np.float32)
    label[0, 0, 0, 0] = 9
    text = ('name: "l" type: "SoftmaxWithLoss" top: "loss" softmax_param { axis: 2 } '
            'loss_param { ignore_label: 9 normalization: FULL normalize: true }')
    (loss,), grad = _run(text, [x, label])
    e = np.exp(x.astype(np.float64))
    p = e / e.sum(2, keepdims=True)
    lab = label.astype(np.int64)
    valid = lab != 9
    picked = np.take_along_axis(p, np.where(valid, lab, 0), 2)
    assert loss.item() == pytest.approx(-np.log(picked)[valid].sum() / 12, rel=1e-6)  # FULL wins over normalize
    onehot = np.arange(4)[None, None, :, None] == lab
    np.testing.assert_allclose(grad.numpy(), (p - onehot) * valid / 12, rtol=1e-5, atol=1e-7)


def test_softmax_loss_errors() -> None:
    with pytest.raises(ValueError, match="'l'.*labels"):
        build('name: "l" type: "SoftmaxWithLoss"').forward([torch.zeros(2, 3, 4), torch.zeros(2, 3)], [])


@pytest.mark.parametrize("mode,want", [("FULL", 12.0), ("VALID", 5.0), ("BATCH_SIZE", 2.0), ("NONE", 1.0)])
def test_normalizer_modes(mode: str, want: float) -> None:
    valid = torch.tensor([True] * 5 + [False] * 7)
    assert float(normalizer(getattr(caffe_pb2.LossParameter, mode), 2, 6, valid)) == want
    assert float(normalizer(caffe_pb2.LossParameter.VALID, 2, 6, torch.zeros(12, dtype=torch.bool))) == 1.0


def test_normalization_mode_precedence() -> None:
    lp = caffe_pb2.LossParameter()
    assert normalization_mode(lp, caffe_pb2.LossParameter.BATCH_SIZE) == caffe_pb2.LossParameter.BATCH_SIZE
    lp.normalize = True
    assert normalization_mode(lp, caffe_pb2.LossParameter.BATCH_SIZE) == caffe_pb2.LossParameter.VALID
    lp.normalize = False
    assert normalization_mode(lp, caffe_pb2.LossParameter.VALID) == caffe_pb2.LossParameter.BATCH_SIZE
    lp.normalization = caffe_pb2.LossParameter.NONE
    assert normalization_mode(lp, caffe_pb2.LossParameter.VALID) == caffe_pb2.LossParameter.NONE


# ----- SigmoidCrossEntropyLoss / EuclideanLoss edge cases -----

def test_sigmoid_ce_ignores_by_truncated_target() -> None:
    x = np.array([[3.0, -2.0, 0.5, -40.0, 50.0]], np.float32)
    t = np.array([[1.0, -1.5, -0.9, 0.0, 1.0]], np.float32)  # int(-1.5) == -1 is ignored, int(-0.9) == 0 is not
    (loss,), grad = _run('name: "l" type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 }', [x, t])
    xd, td = x.astype(np.float64), t.astype(np.float64)
    valid = np.trunc(td) != -1
    terms = np.maximum(xd, 0) - xd * td + np.log1p(np.exp(-np.abs(xd)))
    assert loss.item() == pytest.approx(terms[valid].sum() / 1, rel=1e-6)  # default BATCH_SIZE, N = 1
    np.testing.assert_allclose(grad.numpy(), (1 / (1 + np.exp(-xd)) - td) * valid, rtol=1e-5, atol=1e-7)


def test_euclidean_loss_flattens_second_bottom_and_checks_counts() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((3, 2, 2), np.float32)
    (loss,), grad = _run('name: "l" type: "EuclideanLoss"', [a, b])
    assert loss.item() == pytest.approx(((a - 1) ** 2).sum() / 6)
    np.testing.assert_allclose(grad.numpy(), (a - 1) / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="'l'"):
        build('name: "l" type: "EuclideanLoss"').forward([torch.zeros(3, 4), torch.zeros(4, 3)], [])


# ----- Accuracy edge cases -----

def test_accuracy_ties_axis_and_empty() -> None:
    scores = torch.tensor([[1.0, 2.0, 2.0], [3.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([1.0, 0.0, 1.0, 255.0])
    acc, per_class = build('name: "a" type: "Accuracy" top: "a" top: "p" accuracy_param { ignore_label: 255 axis: -1 }'
                           ).forward([scores, labels], [])
    assert float(acc) == pytest.approx(1 / 3)  # rows 0 and 1 tie with another class: not correct at top 1
    np.testing.assert_allclose(per_class.numpy(), [0.0, 0.5, 0.0])
    (acc2,) = build('name: "a" type: "Accuracy" accuracy_param { top_k: 2 }').forward([scores[:3], labels[:3]], [])
    assert float(acc2) == 1.0
    (none,) = build('name: "a" type: "Accuracy" accuracy_param { ignore_label: 255 }').forward(
        [scores, torch.full((4,), 255.0)], [])
    assert float(none) == 0.0
    with pytest.raises(ValueError, match="'a'.*top_k"):
        build('name: "a" type: "Accuracy" accuracy_param { top_k: 4 }').forward([scores, labels], [])


@pytest.mark.parametrize("text,shapes,want", [
    ('name: "l" type: "SoftmaxWithLoss" top: "l"', [(2, 3, 4), (2, 1, 4)], [()]),
    ('name: "l" type: "SigmoidCrossEntropyLoss"', [(2, 3), (2, 3)], [()]),
    ('name: "l" type: "EuclideanLoss"', [(2, 3), (2, 3)], [()]),
    ('name: "l" type: "Accuracy" top: "a" top: "p"', [(2, 3, 4), (2, 4)], [(), (3,)]),
])
def test_loss_forward_on_meta(text: str, shapes: List[Tuple[int, ...]], want: List[Tuple[int, ...]]) -> None:
    tops = build(text, TRAIN).forward([torch.empty(s, device="meta") for s in shapes], [])
    assert [tuple(t.shape) for t in tops] == want
