"""Network bodies and FCN heads shared by every experiment's net.py.

The builders write layers into a NetSpec with the names, parameters and order of the FCN
release's net.py scripts, so the prototxts they make parse equal to the released ones
(checked against real pycaffe output in tests). Widths are arguments so that tests and
demos can build the same topology small.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from netspec import caffe_pb2
from netspec.coord_map import crop
from netspec.net_spec import L, NetSpec, P, Top

__all__ = [
    "FROZEN",
    "LEARNED",
    "VGG16_DEPTHS",
    "VGG16_WIDTHS",
    "conv_relu",
    "deploy",
    "fcn16s",
    "fcn32s",
    "fcn8s",
    "fcn_head",
    "max_pool",
    "softmax_loss",
    "vgg16",
]

# FCN's learned layers: weights at the base rate with decay, biases at twice it without.
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
# Fixed layers (bilinear upsampling, skip scales): never updated.
FROZEN = [dict(lr_mult=0)]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_STRIDE = 32  # five 2x2 poolings

Widths = Union[int, Sequence[int]]


def conv_relu(bottom: Top, nout: int, ks: int = 3, stride: int = 1,
              pad: int = 1) -> tuple[Top, Top]:
    """A learned convolution and the ReLU that overwrites it in place."""
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                         param=LEARNED)
    return conv, L.ReLU(conv, in_place=True)


def max_pool(bottom: Top, ks: int = 2, stride: int = 2) -> Top:
    """MAX pooling (Caffe rounds the output size up)."""
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def vgg16(n: NetSpec, data: Top, widths: Widths = VGG16_WIDTHS, fc_width: int = 4096,
          dropout: bool = True, suffix: str = "") -> Top:
    """VGG16 as an FCN body: conv1_1 … pool5, then fc6 (7x7) and fc7 (1x1) as convolutions.

    conv1_1 pads by 100 so that any input size yields at least one fc6 output. ``widths``
    gives the five stages' channels (one int for all), ``fc_width`` fc6/fc7's; ``dropout``
    adds drop6/drop7 (in place, ratio 0.5) as training nets do; ``suffix`` is appended to
    every name (NYUD's two-stream nets). Returns fc7's output, the input of a score layer.
    """
    stage_widths = [widths] * len(VGG16_DEPTHS) if isinstance(widths, int) else list(widths)
    if len(stage_widths) != len(VGG16_DEPTHS):
        raise ValueError(f"vgg16 needs {len(VGG16_DEPTHS)} stage widths, got {widths!r}")
    top = data
    for stage, (depth, width) in enumerate(zip(VGG16_DEPTHS, stage_widths), start=1):
        for i in range(1, depth + 1):
            conv, top = conv_relu(top, width, pad=100 if (stage, i) == (1, 1) else 1)
            n[f"conv{stage}_{i}{suffix}"], n[f"relu{stage}_{i}{suffix}"] = conv, top
        n[f"pool{stage}{suffix}"] = top = max_pool(top)
    for layer, ks in ((6, 7), (7, 1)):
        fc, top = conv_relu(top, fc_width, ks=ks, pad=0)
        n[f"fc{layer}{suffix}"], n[f"relu{layer}{suffix}"] = fc, top
        if dropout:
            n[f"drop{layer}{suffix}"] = top = L.Dropout(top, dropout_ratio=0.5, in_place=True)
    return top


def _score(bottom: Top, num_classes: int) -> Top:
    """A learned 1x1 classifier: one score per class and pixel."""
    return L.Convolution(bottom, num_output=num_classes, kernel_size=1, pad=0, param=LEARNED)


def _upsample(bottom: Top, num_classes: int, factor: int, kernel: int) -> Top:
    """Fixed (lr_mult 0) bias-free Deconvolution; surgery fills it with bilinear weights."""
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=num_classes, kernel_size=kernel, stride=factor, bias_term=False),
        param=FROZEN)


def softmax_loss(score: Top, label: Top) -> Top:
    """FCN's loss: summed over pixels (normalize false = divide by batch size), 255 ignored."""
    return L.SoftmaxWithLoss(score, label, loss_param=dict(normalize=False, ignore_label=255))


def fcn_head(n: NetSpec, features: Top, data: Top, num_classes: int,
             skips: Sequence[str] = (), label: Optional[Top] = None, suffix: str = "",
             skip_scales: Optional[Sequence[float]] = None,
             stride: int = VGG16_STRIDE) -> Top:
    """Score, upsample, fuse skips and crop to the input: the FCN-32s/16s/8s decoders.

    ``skips`` names the pooling tops in ``n`` to fuse, coarse to fine, each one 2x step
    finer than the last (``('pool4', 'pool3')`` makes FCN-8s). Without skips the scores
    are upsampled ``stride``x at once (``upscore``, kernel 2*stride); with skips each fuse
    is ``upscore2``/``upscore_<skip>`` + cropped ``score_<skip>`` and the last one is
    upsampled by what remains (``upscore16``, ``upscore8``). ``skip_scales`` puts a fixed
    Scale layer before each skip's scorer (the "at once" nets). Crops come from coordinate
    maps. With a ``label``, adds ``loss``. ``suffix`` is appended to every name.
    Returns the cropped ``score``.
    """
    if skip_scales is not None and len(skip_scales) != len(skips):
        raise ValueError(f"one skip scale per skip: {skips!r} vs {skip_scales!r}")
    n[f"score_fr{suffix}"] = scores = _score(features, num_classes)
    if skips:
        n[f"upscore2{suffix}"] = up = _upsample(scores, num_classes, 2, 4)
    for i, skip in enumerate(skips):
        skip_top = n[skip + suffix]
        if skip_scales is not None:
            n[f"scale_{skip}{suffix}"] = skip_top = L.Scale(
                skip_top, filler=dict(type="constant", value=skip_scales[i]), param=FROZEN)
        n[f"score_{skip}{suffix}"] = skip_score = _score(skip_top, num_classes)
        n[f"score_{skip}{suffix}c"] = skip_score = crop(skip_score, up)
        n[f"fuse_{skip}{suffix}"] = fused = L.Eltwise(up, skip_score, operation=P.Eltwise.SUM)
        if i + 1 < len(skips):
            n[f"upscore_{skip}{suffix}"] = up = _upsample(fused, num_classes, 2, 4)
    factor = stride >> len(skips)
    if skips:
        n[f"upscore{factor}{suffix}"] = up = _upsample(fused, num_classes, factor, 2 * factor)
    else:
        n[f"upscore{suffix}"] = up = _upsample(scores, num_classes, factor, 2 * factor)
    n[f"score{suffix}"] = score = crop(up, data)
    if label is not None:
        n[f"loss{suffix}"] = softmax_loss(score, label)
    return score


def fcn32s(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21,
           widths: Widths = VGG16_WIDTHS, fc_width: int = 4096, dropout: bool = True) -> Top:
    """FCN-32s on VGG16: one 32x upsampling of the fc7 scores. Returns ``score``."""
    features = vgg16(n, data, widths, fc_width, dropout)
    return fcn_head(n, features, data, num_classes, label=label)


def fcn16s(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21,
           widths: Widths = VGG16_WIDTHS, fc_width: int = 4096, dropout: bool = True) -> Top:
    """FCN-16s on VGG16: fc7 scores fused with pool4's, then 16x upsampling."""
    features = vgg16(n, data, widths, fc_width, dropout)
    return fcn_head(n, features, data, num_classes, skips=("pool4",), label=label)


def fcn8s(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21,
          widths: Widths = VGG16_WIDTHS, fc_width: int = 4096, dropout: bool = True,
          skip_scales: Optional[Sequence[float]] = None) -> Top:
    """FCN-8s on VGG16: fuses pool4 then pool3 scores, then 8x upsampling.

    ``skip_scales=(0.01, 0.0001)`` gives the "at once" variant (voc-fcn8s-atonce).
    """
    features = vgg16(n, data, widths, fc_width, dropout)
    return fcn_head(n, features, data, num_classes, skips=("pool4", "pool3"), label=label,
                    skip_scales=skip_scales)


def deploy(builder: Callable[..., Top], shape: Sequence[int] = (1, 3, 500, 500), **kwargs) -> \
        caffe_pb2.NetParameter:
    """An inference net: an Input layer named ``input`` (top ``data``), no dropout, no loss.

    ``builder`` is fcn32s/fcn16s/fcn8s; ``kwargs`` go to it (num_classes, widths, ...).
    The layout is the released voc-fcn8s/deploy.prototxt's; the shape only seeds Caffe's
    first reshape.
    """
    n = NetSpec()
    n.data = L.Input(name="input", shape=dict(dim=list(shape)))
    builder(n, n.data, dropout=False, **kwargs)
    return n.to_proto()
