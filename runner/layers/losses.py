"""Loss layers (SoftmaxWithLoss, SigmoidCrossEntropyLoss, EuclideanLoss) and Accuracy.

A loss layer returns its UNweighted loss as a 0-d tensor; the Net seeds backward with the loss weight,
which reaches the gradients as ``grad_output`` exactly where Caffe reads its top diff. Labels never get
a gradient (Caffe refuses to back-propagate into them), except EuclideanLoss's second bottom, which
Caffe treats as a prediction too.

Beyond Caffe, for the paper's experiments: SoftmaxWithLoss takes a Python-side ``cell_weighting``
(loss sampling, class weights; caffe.proto has no field for either). The Section 6.1 "null background"
mode needs nothing here: ``netspec.null_background`` writes it with Caffe's own layers.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from netspec import caffe_pb2
from runner.layers.base import Layer
from runner.layers.shape import canonical_axis
from runner.registry import register

_NORM = caffe_pb2.LossParameter
FLT_MIN = float(torch.finfo(torch.float32).tiny)


def normalization_mode(loss_param: Any, default: int) -> int:
    """``normalization`` when set, else the legacy ``normalize`` (true: VALID, false: BATCH_SIZE), else
    the layer's own default (VALID for SoftmaxWithLoss, BATCH_SIZE for SigmoidCrossEntropyLoss)."""
    if loss_param.HasField("normalization"):
        return int(loss_param.normalization)
    if loss_param.HasField("normalize"):
        return int(_NORM.VALID if loss_param.normalize else _NORM.BATCH_SIZE)
    return default


def normalizer(mode: int, outer: int, inner: int, valid: torch.Tensor) -> torch.Tensor:
    """What Caffe divides the summed loss by: ``max(1, n)`` with n the valid count (VALID), all
    predictions ``outer*inner`` (FULL), the batch ``outer`` (BATCH_SIZE) or 1 (NONE); a 0-d float32
    tensor, so that VALID needs no host synchronisation."""
    if mode == _NORM.VALID:
        return valid.sum().to(torch.float32).clamp_min(1.0)
    sizes = {_NORM.FULL: outer * inner, _NORM.BATCH_SIZE: outer, _NORM.NONE: 1}
    if mode not in sizes:
        raise ValueError(f"unknown loss normalization mode {mode}")
    return torch.tensor(float(max(1, sizes[mode])), dtype=torch.float32, device=valid.device)


def class_layout(layer: Layer, scores: torch.Tensor, labels: torch.Tensor, axis: int) -> Tuple[int, int, int]:
    """``(outer, classes, inner)`` of scores split at the class axis; the labels must hold exactly one
    value per ``outer*inner`` prediction."""
    shape = tuple(scores.shape)
    axis = canonical_axis(layer, axis, len(shape))
    outer, classes, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    if labels.numel() != outer * inner:
        raise ValueError(f"layer '{layer.name}' ({layer.type}): {labels.numel()} labels for scores of shape "
                         f"{shape} with class axis {axis}; need one label per prediction ({outer * inner})")
    return outer, classes, inner


def label_index(labels: torch.Tensor, ignore_label: Optional[int], outer: int,
                inner: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labels as Caffe reads them (``static_cast<int>``: truncated) shaped ``(outer, 1, inner)``, with
    ignored ones replaced by class 0, and the mask of the predictions that count."""
    as_int = labels.detach().reshape(outer, 1, inner).to(torch.int64)
    if ignore_label is None:
        return as_int, torch.ones_like(as_int, dtype=torch.bool)
    valid = as_int != ignore_label
    return torch.where(valid, as_int, 0), valid


def _ignore_label(loss_param: Any) -> Optional[int]:
    return int(loss_param.ignore_label) if loss_param.HasField("ignore_label") else None


class _SoftmaxLoss(torch.autograd.Function):
    """Softmax + multinomial log loss with Caffe's backward: ``(p - onehot) * top_diff / normalizer``
    at counted pixels, 0 at ignored ones."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, axis: int,
                layout: Tuple[int, int, int], mode: int,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        outer, classes, inner = layout
        prob = torch.softmax(scores, dim=axis)
        picked = prob.reshape(outer, classes, inner).gather(1, index)
        nll = -torch.log(torch.clamp_min(picked, FLT_MIN))
        if weight is not None:
            nll = nll * weight
        norm = normalizer(mode, outer, inner, valid)
        loss = torch.where(valid, nll, 0.0).sum() / norm
        ctx.save_for_backward(prob, index, valid, norm, weight)
        ctx.layout = layout
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> Tuple[Any, ...]:
        prob, index, valid, norm, weight = ctx.saved_tensors
        outer, classes, inner = ctx.layout
        diff = prob.reshape(outer, classes, inner).clone()
        diff.scatter_add_(1, index, torch.full_like(index, -1, dtype=diff.dtype))
        if weight is not None:
            diff = diff * weight
        diff = torch.where(valid, diff, 0.0) * (grad_loss / norm)
        return diff.reshape(prob.shape), None, None, None, None, None, None


CellWeighting = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, Optional[torch.Tensor]]]
"""A Python-side policy for SoftmaxWithLoss (caffe.proto has no field for one): given the labels
``index`` and the ``valid`` mask, both ``(outer, 1, inner)``, it returns the mask of cells that count
(the VALID normalizer counts these) and optional float weights for them."""


class LossSampling:
    """Keep each final-layer cell in the loss with probability ``keep`` (the paper's Sections 3.4/4.4:
    sampling the loss instead of patchwise training); dropped cells count as ignored. Seeded, so a run
    draws the same masks again; the draws advance once per forward."""

    def __init__(self, keep: float, seed: int = 0) -> None:
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"LossSampling: keep must be in (0, 1], got {keep}")
        self.keep = keep
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, index: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, None]:
        draw = torch.rand(valid.shape, generator=self.generator).to(valid.device)
        return valid & (draw < self.keep), None


class ClassWeights:
    """Per-class loss weights (class balancing, Section 4.4): cell loss and gradient are multiplied by
    the weight of the cell's true class; the normalizer is unchanged."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    @classmethod
    def inverse_frequency(cls, counts: Sequence[int]) -> "ClassWeights":
        """Weights ``total / (present * count)`` over the ``present`` classes seen (0 for the others),
        so the mean weight per pixel is 1 and a balanced dataset keeps weight 1 everywhere."""
        counts = torch.as_tensor(counts, dtype=torch.float64)
        scaled = counts.sum() / ((counts > 0).sum() * counts.clamp_min(1.0))
        return cls(torch.where(counts > 0, scaled, 0.0).tolist())

    def __call__(self, index: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if int(index.max()) >= len(self.weights):
            raise ValueError(f"ClassWeights: label {int(index.max())} but only {len(self.weights)} weights")
        return valid, self.weights.to(index.device)[index]


def set_cell_weighting(net: Any, layer_name: str, policy: Optional[CellWeighting]) -> None:
    """Give the SoftmaxWithLoss layer ``layer_name`` of a runner Net a CellWeighting (None removes it)."""
    for slot in net.graph.slots:
        if slot.name == layer_name:
            if not isinstance(slot.impl, SoftmaxWithLoss):
                raise ValueError(f"set_cell_weighting: layer '{layer_name}' is not a SoftmaxWithLoss")
            slot.impl.cell_weighting = policy
            return
    raise ValueError(f"set_cell_weighting: net has no layer '{layer_name}'")


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    """``-sum log(max(p[label], FLT_MIN)) / normalizer`` over non-ignored predictions, softmax along
    ``softmax_param.axis``. ``cell_weighting`` (set from Python, see ``set_cell_weighting``) may drop or
    weight cells; shape inference skips it. One top only: real Caffe refuses a second (probability) top at
    construction, because its inner Softmax layer inherits the loss_weight list and fails Caffe's "once per
    top blob" check whatever the prototxt says; a net that ran here would abort there."""

    default_loss_weight = 1.0
    cell_weighting: Optional[CellWeighting] = None

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        if len(layer_param.top) > 1:
            raise ValueError(f"layer '{self.name}' (SoftmaxWithLoss): {len(layer_param.top)} tops; Caffe allows one "
                             f"(its inner Softmax fails 'loss_weight must be unspecified or specified once per top "
                             f"blob'): take the probabilities from a separate Softmax layer")
        self.ignore_label = _ignore_label(layer_param.loss_param)
        self.mode = normalization_mode(layer_param.loss_param, _NORM.VALID)
        self.axis = int(layer_param.softmax_param.axis)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        scores, labels = bottoms
        layout = class_layout(self, scores, labels, self.axis)
        index, valid = label_index(labels, self.ignore_label, layout[0], layout[2])
        axis = canonical_axis(self, self.axis, scores.dim())
        weight = None
        if self.cell_weighting is not None and not scores.is_meta:
            valid, weight = self.cell_weighting(index, valid)
        return [_SoftmaxLoss.apply(scores, index, valid, axis, layout, self.mode, weight)]


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Layer):
    """Cross-entropy of ``sigmoid(x)`` against targets in [0, 1], in the overflow-free form
    ``x*(1 - t) + log(1 + exp(-x))`` (torch's fused op; its gradient ``(sigmoid(x) - t) * top_diff`` is
    Caffe's), summed over targets whose ``int(t)`` is not ``ignore_label``, divided by the normalizer
    (default BATCH_SIZE = the first axis)."""

    default_loss_weight = 1.0

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.ignore_label = _ignore_label(layer_param.loss_param)
        self.mode = normalization_mode(layer_param.loss_param, _NORM.BATCH_SIZE)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        x, target = bottoms
        if x.numel() != target.numel():
            raise ValueError(f"layer '{self.name}' (SigmoidCrossEntropyLoss): scores {tuple(x.shape)} and "
                             f"targets {tuple(target.shape)} must have the same count")
        outer = x.shape[0] if x.dim() else 1
        inner = x.numel() // max(outer, 1)
        t = target.detach().reshape(x.shape)
        _, valid = label_index(t, self.ignore_label, outer, inner)
        valid = valid.reshape(x.shape)
        terms = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        return [torch.where(valid, terms, 0.0).sum() / normalizer(self.mode, outer, inner, valid)]


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """``sum((a - b)^2) / (2N)`` with N the first axis of ``a``; both bottoms get gradients
    (``±(a - b) / N`` times the top diff), as in Caffe."""

    default_loss_weight = 1.0

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        a, b = bottoms
        if a.dim() == 0 or b.dim() == 0 or a.shape[0] != b.shape[0] or a.numel() != b.numel():
            raise ValueError(f"layer '{self.name}' (EuclideanLoss): bottoms {tuple(a.shape)} and "
                             f"{tuple(b.shape)} must have the same first axis and count")
        diff = a - b.reshape(a.shape)
        return [(diff * diff).sum() / a.shape[0] / 2.0]


@register("Accuracy")
class Accuracy(Layer):
    """Fraction of counted predictions whose true class is among the ``top_k`` scores along ``axis``.
    A prediction counts as correct when fewer than ``top_k`` OTHER classes score ``>=`` the true class
    (ties count against it, as Caffe). Labels equal to ``ignore_label`` are skipped; with no counted
    prediction the accuracy is 0. An optional second top holds per-class accuracy (0 for classes never
    seen). No gradient: Caffe has no backward for this layer."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.accuracy_param
        self.top_k = int(param.top_k)
        self.axis = int(param.axis)
        self.ignore_label = int(param.ignore_label) if param.HasField("ignore_label") else None

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        if any(propagate_down):
            return "Not Implemented Yet: Caffe has no backward for Accuracy (accuracy_layer.cpp)"
        return None

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        scores, labels = bottoms[0].detach(), bottoms[1].detach()
        outer, classes, inner = class_layout(self, scores, labels, self.axis)
        if self.top_k > classes:
            raise ValueError(f"layer '{self.name}' (Accuracy): top_k {self.top_k} exceeds the {classes} classes")
        index, valid = label_index(labels, self.ignore_label, outer, inner)
        scores = scores.reshape(outer, classes, inner)
        true_score = scores.gather(1, index)
        at_least = (scores >= true_score).sum(dim=1, keepdim=True)
        hit = (at_least <= self.top_k) & valid
        count = valid.sum().to(scores.dtype)
        hits = hit.sum().to(scores.dtype)
        accuracy = torch.where(count > 0, hits / count.clamp_min(1.0), 0.0)
        if len(self.layer_param.top) < 2:
            return [accuracy]
        flat = index.reshape(-1)
        seen = torch.zeros(classes, dtype=scores.dtype, device=scores.device)
        seen = seen.scatter_add(0, flat, valid.reshape(-1).to(scores.dtype))
        right = torch.zeros_like(seen).scatter_add(0, flat, hit.reshape(-1).to(scores.dtype))
        per_class = torch.where(seen > 0, right / seen.clamp_min(1.0), 0.0)
        return [accuracy, per_class]
