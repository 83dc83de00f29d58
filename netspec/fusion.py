"""Fusing input modalities (NYUDv2's color, depth and HHA images) in FCN-VGG16.

Early fusion stacks the inputs' channels into one image for one VGG16. Late fusion runs one
VGG16 stream per input and averages their scores; each stream is a whole FCN body whose names
carry the modality as suffix (conv1_1color, score_frhha, ...), so that each one can be
initialised from its single-modality net. The release's FCN-32s averages the two streams'
coarse scores before one upsampling; the FCN-16s here (not released) runs an FCN-16s head per
stream and averages the cropped outputs, which is the same function (upsampling and cropping
are linear) with every stream's weights transferable from its own FCN-16s.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from netspec.backbones import VGG16_STRIDE, fcn_head, score_layer, softmax_loss, upsample, vgg16
from netspec.coord_map import crop
from netspec.net_spec import L, NetSpec, P, Top

__all__ = ["early_fusion_fcn32s", "late_fusion_fcn16s", "late_fusion_fcn32s"]


def _average(tops: list[Top]) -> Top:
    """The mean of equally shaped score maps."""
    return L.Eltwise(*tops, operation=P.Eltwise.SUM, coeff=[1 / len(tops)] * len(tops))


def early_fusion_fcn32s(n: NetSpec, inputs: Sequence[Top], first_conv: str,
                        label: Optional[Top] = None, num_classes: int = 40,
                        dropout: bool = True) -> Top:
    """FCN-32s on the inputs concatenated along channels (``data``); conv1_1 is renamed
    ``first_conv`` as its weights have more input channels than VGG16's. Returns ``score``."""
    n.data = data = L.Concat(*inputs)
    features = vgg16(n, data, dropout=dropout, first_conv=first_conv)
    return fcn_head(n, features, data, num_classes, label=label)


def late_fusion_fcn32s(n: NetSpec, streams: Mapping[str, Top], label: Optional[Top] = None,
                       num_classes: int = 40, dropout: bool = True) -> Top:
    """FCN-32s streams (``{suffix: input}``) whose score_fr maps are averaged (score_fused),
    then upsampled 32x once and cropped to the first input. Returns ``score``."""
    scores = []
    for suffix, data in streams.items():
        features = vgg16(n, data, dropout=dropout, suffix=suffix)
        n["score_fr" + suffix] = top = score_layer(features, num_classes)
        scores.append(top)
    n.score_fused = _average(scores)
    n.upscore = upsample(n.score_fused, num_classes, VGG16_STRIDE, 2 * VGG16_STRIDE)
    n.score = score = crop(n.upscore, next(iter(streams.values())))
    if label is not None:
        n.loss = softmax_loss(score, label)
    return score


def late_fusion_fcn16s(n: NetSpec, streams: Mapping[str, Top], label: Optional[Top] = None,
                       num_classes: int = 40, dropout: bool = True) -> Top:
    """One FCN-16s per stream (``{suffix: input}``), their cropped scores averaged into
    ``score``. Returns ``score``."""
    scores = []
    for suffix, data in streams.items():
        features = vgg16(n, data, dropout=dropout, suffix=suffix)
        scores.append(fcn_head(n, features, data, num_classes, skips=("pool4",), suffix=suffix))
    n.score = score = _average(scores)
    if label is not None:
        n.loss = softmax_loss(score, label)
    return score
