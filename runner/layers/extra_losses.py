"""Caffe's other loss layers: HingeLoss, InfogainLoss, ContrastiveLoss, MultinomialLogisticLoss.

Like ``runner.layers.losses``, each returns its unweighted loss as a 0-d top and the net seeds backward
with the loss weight. Where Caffe's backward is not the derivative of its forward (a clamped log whose
gradient ignores the clamp, ContrastiveLoss's ``dist + 1e-4``), a custom autograd Function carries
Caffe's formula. Labels get no gradient; a backward asked for one is refused as Caffe aborts.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.caffemodel import blob_shape
from runner.layers.base import Layer, Shape
from runner.layers.losses import class_layout, label_index, normalizer
from runner.layers.shape import canonical_axis, legacy_shape
from runner.registry import register

#: Caffe's kLOG_THRESHOLD: probabilities are clamped up to it before the log.
LOG_THRESHOLD = 1e-20
_HINGE = caffe_pb2.HingeLossParameter


class _CaffeLoss(Layer):
    """Caffe's LossLayer: loss weight 1 by default, a 0-d top, data and labels with the same first axis;
    ``force_backward`` never asks for the labels' gradient (bottom 1), and a backward that needs it is
    refused."""

    default_loss_weight = 1.0

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        data, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if not data or not label or data[0] != label[0]:
            raise ValueError(f"layer '{self.name}' ({self.type}): the data and label should have the same "
                             f"first dimension, got shapes {data} and {label}")
        return [()]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        if propagate_down[1]:
            return f"{self.type} Layer cannot backpropagate to label inputs."
        return None

    def _first_labels(self, labels: torch.Tensor, num: int) -> torch.Tensor:
        """The first ``num`` label values, truncated to integers as Caffe's ``static_cast<int>``."""
        return labels.detach().reshape(-1)[:num].to(torch.int64)


@register("HingeLoss")
class HingeLoss(_CaffeLoss):
    """One-vs-all hinge loss on scores ``(N, ...)`` (flattened to N x K) and labels ``(N,)``: with t = +1
    at the label and -1 elsewhere, ``sum max(0, 1 - t*x) / N`` (norm L1) or the sum of its squares
    (norm L2)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.norm = int(layer_param.hinge_loss_param.norm)
        if self.norm not in (_HINGE.L1, _HINGE.L2):
            raise ValueError(f"layer '{self.name}' (HingeLoss): unknown norm {self.norm}")

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        num = bottoms[0].shape[0]
        scores = bottoms[0].reshape(num, -1)
        labels = self._first_labels(bottoms[1], num).unsqueeze(1)
        signs = torch.ones_like(scores).scatter(1, labels, -1.0)
        margins = torch.relu(1 + signs * scores)
        total = margins.sum() if self.norm == _HINGE.L1 else (margins * margins).sum()
        return [total / num]


class _InfogainLossFunction(torch.autograd.Function):
    """``-sum_l H[label, l] * log(max(p_l, 1e-20)) / normalizer`` over the counted predictions, p the
    softmax along the class axis; Caffe's backward ``p * rowsum(H)[label] - H[label]`` (ignoring the
    clamp). Also returns p, through which no gradient flows (as Caffe ignores that top's diff)."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor, axis: int,
                layout: Tuple[int, int, int], norm: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        outer, classes, inner = layout
        prob = torch.softmax(scores, dim=axis)
        logs = torch.log(prob.reshape(outer, classes, inner).clamp_min(LOG_THRESHOLD))
        loss = -torch.where(valid, rows * logs, 0.0).sum() / norm
        ctx.save_for_backward(prob, rows, valid, norm)
        ctx.layout = layout
        ctx.mark_non_differentiable(prob)
        return loss, prob

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, grad_prob: torch.Tensor) -> Tuple[Any, ...]:
        prob, rows, valid, norm = ctx.saved_tensors
        outer, classes, inner = ctx.layout
        diff = prob.reshape(outer, classes, inner) * rows.sum(dim=1, keepdim=True) - rows
        diff = torch.where(valid, diff, 0.0) * (grad_loss / norm)
        return diff.reshape(prob.shape), None, None, None, None, None


@register("InfogainLoss")
class InfogainLoss(_CaffeLoss):
    """Multinomial logistic loss of ``softmax(scores)`` along ``infogain_loss_param.axis`` weighted by the
    row of the infogain matrix H (C x C) for each label: H is the third bottom, or the binary BlobProto
    file ``infogain_loss_param.source``. ``loss_param`` gives ignore_label and normalization (default
    VALID; the legacy ``normalize`` is refused, as Caffe refuses it here). Optional second top: the
    probabilities. H gets no gradient: a backward that asks for one is refused, as Caffe aborts."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        loss_param = layer_param.loss_param
        if loss_param.HasField("normalize"):
            raise ValueError(f"layer '{self.name}' (InfogainLoss): normalize is deprecated, use normalization")
        self.mode = int(loss_param.normalization)
        self.ignore_label = int(loss_param.ignore_label) if loss_param.HasField("ignore_label") else None
        self.axis = int(layer_param.infogain_loss_param.axis)
        self.stored: Optional[torch.Tensor] = None
        if len(layer_param.bottom) < 3:
            self.stored = self._read_matrix(layer_param.infogain_loss_param)

    def _read_matrix(self, param: Any) -> torch.Tensor:
        """H from the BlobProto file ``source`` (values in file order, as Caffe's Blob::FromProto)."""
        if not param.HasField("source"):
            raise ValueError(f"layer '{self.name}' (InfogainLoss): with two bottoms the infogain matrix source "
                             f"(infogain_loss_param.source) must be given")
        try:
            with open(param.source, "rb") as f:
                proto = caffe_pb2.BlobProto.FromString(f.read())
        except (OSError, ValueError) as err:
            raise ValueError(f"layer '{self.name}' (InfogainLoss): cannot read the infogain matrix "
                             f"{os.path.abspath(param.source)}: {err}") from err
        values = np.asarray(proto.double_data if len(proto.double_data) else proto.data, dtype=np.float32)
        if values.size != int(np.prod(blob_shape(proto))):
            raise ValueError(f"layer '{self.name}' (InfogainLoss): {param.source} declares shape "
                             f"{blob_shape(proto)} but holds {values.size} values")
        return torch.from_numpy(values)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(2, 3, bottom_shapes)
        scores = tuple(bottom_shapes[0])
        classes = scores[canonical_axis(self, self.axis, len(scores))]
        matrix = tuple(bottom_shapes[2]) if len(bottom_shapes) == 3 else tuple(self.stored.shape)
        if int(np.prod(matrix)) != classes * classes:
            raise ValueError(f"layer '{self.name}' (InfogainLoss): H of shape {matrix} must hold {classes}x{classes} "
                             f"values for {classes} classes on axis {self.axis}")
        tops = super().top_shapes(bottom_shapes, param_shapes)
        return tops + [scores] if len(self.layer_param.top) > 1 else tops

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        scores, labels = bottoms[0], bottoms[1]
        layout = class_layout(self, scores, labels, self.axis)
        outer, classes, inner = layout
        index, valid = label_index(labels, self.ignore_label, outer, inner)
        matrix = bottoms[2].detach() if len(bottoms) == 3 else self.stored.to(scores.device)
        rows = matrix.reshape(classes, classes)[index.reshape(-1)].reshape(outer, inner, classes).transpose(1, 2)
        norm = normalizer(self.mode, outer, inner, valid)
        axis = canonical_axis(self, self.axis, scores.dim())
        loss, prob = _InfogainLossFunction.apply(scores, rows, valid, axis, layout, norm)
        return [loss, prob] if len(self.layer_param.top) > 1 else [loss]

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        if len(propagate_down) > 2 and propagate_down[2]:
            return "InfogainLoss Layer cannot backpropagate to infogain inputs."
        return super().backward_refusal(propagate_down)


class _ContrastiveFunction(torch.autograd.Function):
    """Contrastive loss of pairs (rows of a and b) with Caffe's backward: for a dissimilar pair inside the
    margin the gradient divides by ``dist + 1e-4`` (legacy form: the plain derivative); b's is a's negated."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor, margin: float,
                legacy: bool) -> torch.Tensor:
        diff = a - b
        dist_sq = (diff * diff).sum(dim=1)
        if legacy:
            apart = margin - dist_sq
            dissimilar = torch.relu(apart)
        else:
            dist = dist_sq.sqrt()
            apart = margin - dist
            dissimilar = torch.relu(apart) ** 2
        ctx.save_for_backward(diff, similar, apart, dist_sq)
        ctx.legacy = legacy
        return torch.where(similar, dist_sq, dissimilar).sum() / a.shape[0] / 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        diff, similar, apart, dist_sq = ctx.saved_tensors
        alpha = grad / diff.shape[0]
        beta = -alpha if ctx.legacy else -alpha * apart / (dist_sq.sqrt() + 1e-4)
        scale = torch.where(similar, alpha, torch.where(apart > 0, beta, 0.0)).unsqueeze(1)
        return diff * scale, -diff * scale, None, None, None


@register("ContrastiveLoss")
class ContrastiveLoss(_CaffeLoss):
    """``sum_n (y_n ? d_n^2 : max(margin - d_n, 0)^2) / (2N)`` for feature pairs a, b ``(N, C, 1, 1)`` and
    similarity labels y ``(N, 1, 1, 1)`` (``int(y) != 0``: similar), d the Euclidean distance; with
    ``legacy_version`` the dissimilar term is ``max(margin - d^2, 0)``. Both a and b get gradients; y
    none (Caffe's force_backward skips it, bottom 2, rather than the usual label bottom 1)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.contrastive_loss_param
        self.margin, self.legacy = float(param.margin), bool(param.legacy_version)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(3, 3, bottom_shapes)
        a, b, y = (legacy_shape(self, s) for s in bottom_shapes)
        if a[1] != b[1] or a[2:] != (1, 1) or b[2:] != (1, 1) or y[1:] != (1, 1, 1) or not a[0] == b[0] == y[0]:
            raise ValueError(f"layer '{self.name}' (ContrastiveLoss): bottoms must be a and b (N, C, 1, 1) and "
                             f"y (N, 1, 1, 1); got shapes {[tuple(s) for s in bottom_shapes]}")
        return [()]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        num = bottoms[0].shape[0]
        similar = bottoms[2].detach().reshape(num).to(torch.int64) != 0
        return [_ContrastiveFunction.apply(bottoms[0].reshape(num, -1), bottoms[1].reshape(num, -1), similar,
                                           self.margin, self.legacy)]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        return None  # Caffe never computes y's gradient, and never refuses


class _PickedLog(torch.autograd.Function):
    """``-log(max(p, 1e-20))`` of picked probabilities with Caffe's gradient ``-1 / max(p, 1e-20)``,
    which, unlike autograd's, does not vanish where the clamp applies."""

    @staticmethod
    def forward(ctx: Any, picked: torch.Tensor) -> torch.Tensor:
        clamped = picked.clamp_min(LOG_THRESHOLD)
        ctx.save_for_backward(clamped)
        return -torch.log(clamped)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor]:
        (clamped,) = ctx.saved_tensors
        return (-grad / clamped,)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_CaffeLoss):
    """``-sum_n log(max(p[n, label_n], 1e-20)) / N`` on probabilities ``(N, C, 1, 1)`` (a softmax's output)
    and labels ``(N, 1, 1, 1)``."""

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(2, 2, bottom_shapes)
        if legacy_shape(self, bottom_shapes[1])[1:] != (1, 1, 1):
            raise ValueError(f"layer '{self.name}' (MultinomialLogisticLoss): labels must be (N, 1, 1, 1), got "
                             f"shape {tuple(bottom_shapes[1])}")
        return super().top_shapes(bottom_shapes, param_shapes)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        num = bottoms[0].shape[0]
        prob = bottoms[0].reshape(num, -1)
        picked = prob.gather(1, self._first_labels(bottoms[1], num).unsqueeze(1))
        return [_PickedLog.apply(picked).sum() / num]
