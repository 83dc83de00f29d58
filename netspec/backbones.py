"""Network bodies and FCN heads shared by every experiment's net.py.

The builders write layers into a NetSpec with the names, parameters and order of the FCN
release's net.py scripts, so the prototxts they make parse equal to the released ones
(checked against real pycaffe output in tests). Widths are arguments so that tests and
demos can build the same topology small.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, Union

from netspec import caffe_pb2
from netspec.coord_map import crop
from netspec.net_spec import L, NetSpec, P, Top

__all__ = [
    "FIXED",
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
    "input_layer",
    "lrn",
    "max_pool",
    "score_layer",
    "softmax_loss",
    "upsample",
    "vgg16",
    "vgg16_convs",
]

# FCN's learned layers: weights at the base rate with decay, biases at twice it without.
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
# Fixed layers (bilinear upsampling, skip scales): never updated.
FROZEN = [dict(lr_mult=0)]
# A body layer held at its ImageNet weights (FCN-32s-fixed): weights and biases never move.
FIXED = [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_STRIDE = 32  # five 2x2 poolings

Widths = Union[int, Sequence[int]]


def conv_relu(bottom: Top, nout: int, ks: int = 3, stride: int = 1, pad: int = 1,
              param: Optional[list[dict]] = LEARNED, **fields) -> tuple[Top, Top]:
    """A convolution and the ReLU that overwrites it in place.

    ``param`` sets the weight/bias multipliers (None writes none: Caffe's default 1, as the
    release's AlexNet net does); ``fields`` are further ConvolutionParameter fields (group).
    """
    if param is not None:
        fields["param"] = param
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                         **fields)
    return conv, L.ReLU(conv, in_place=True)


def lrn(bottom: Top) -> Top:
    """Cross-channel local response normalisation as AlexNet and GoogLeNet use it."""
    return L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)


def max_pool(bottom: Top, ks: int = 2, stride: int = 2) -> Top:
    """MAX pooling (Caffe rounds the output size up)."""
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def vgg16_convs(n: NetSpec, data: Top, widths: Widths = VGG16_WIDTHS, stages: int = 5,
                suffix: str = "", param: Optional[list[dict]] = LEARNED,
                first_conv: Optional[str] = None) -> Top:
    """VGG16's convolutional stages conv1_1 … pool<stages>; returns the last pooling's top.

    conv1_1 pads by 100 so that any input size yields at least one fc6 output. ``widths``
    gives the five stages' channels (one int for all); ``stages`` < 5 truncates the body
    (the FCN-poolX ablations); ``param`` is every layer's multipliers (FIXED holds the body
    at its ImageNet weights); ``first_conv`` renames conv1_1 for inputs that are not BGR
    images, so that surgery copies no ImageNet weights of the wrong shape into it.
    """
    stage_widths = [widths] * len(VGG16_DEPTHS) if isinstance(widths, int) else list(widths)
    if len(stage_widths) != len(VGG16_DEPTHS):
        raise ValueError(f"vgg16 needs {len(VGG16_DEPTHS)} stage widths, got {widths!r}")
    if not 1 <= stages <= len(VGG16_DEPTHS):
        raise ValueError(f"vgg16 has stages 1 to {len(VGG16_DEPTHS)}, not {stages!r}")
    top = data
    for stage, (depth, width) in enumerate(zip(VGG16_DEPTHS[:stages], stage_widths), start=1):
        for i in range(1, depth + 1):
            first = (stage, i) == (1, 1)
            conv, top = conv_relu(top, width, pad=100 if first else 1, param=param)
            name = first_conv if first and first_conv else f"conv{stage}_{i}{suffix}"
            n[name], n[f"relu{stage}_{i}{suffix}"] = conv, top
        n[f"pool{stage}{suffix}"] = top = max_pool(top)
    return top


def vgg16(n: NetSpec, data: Top, widths: Widths = VGG16_WIDTHS, fc_width: int = 4096,
          dropout: bool = True, suffix: str = "", param: Optional[list[dict]] = LEARNED,
          first_conv: Optional[str] = None) -> Top:
    """VGG16 as an FCN body: conv1_1 … pool5, then fc6 (7x7) and fc7 (1x1) as convolutions.

    ``fc_width`` is fc6/fc7's channels; ``dropout`` adds drop6/drop7 (in place, ratio 0.5)
    as training nets do; ``suffix`` is appended to every name (NYUD's two-stream nets);
    ``widths``, ``param`` and ``first_conv`` are vgg16_convs'. Returns fc7's output, the
    input of a score layer.
    """
    top = vgg16_convs(n, data, widths, suffix=suffix, param=param, first_conv=first_conv)
    for layer, ks in ((6, 7), (7, 1)):
        fc, top = conv_relu(top, fc_width, ks=ks, pad=0, param=param)
        n[f"fc{layer}{suffix}"], n[f"relu{layer}{suffix}"] = fc, top
        if dropout:
            n[f"drop{layer}{suffix}"] = top = L.Dropout(top, dropout_ratio=0.5, in_place=True)
    return top


def score_layer(bottom: Top, num_classes: int) -> Top:
    """A learned 1x1 classifier: one score per class and pixel."""
    return L.Convolution(bottom, num_output=num_classes, kernel_size=1, pad=0, param=LEARNED)


def upsample(bottom: Top, num_classes: int, factor: int, kernel: int) -> Top:
    """Fixed (lr_mult 0) bias-free Deconvolution; surgery fills it with bilinear weights."""
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=num_classes, kernel_size=kernel, stride=factor, bias_term=False),
        param=FROZEN)


def softmax_loss(score: Top, label: Top, normalize: bool = False) -> Top:
    """FCN's loss, 255 ignored: summed over pixels (normalize false = divide by batch size),
    or averaged over them (``normalize``, as the release's FCN-AlexNet trains)."""
    return L.SoftmaxWithLoss(score, label, loss_param=dict(normalize=normalize, ignore_label=255))


def fcn_head(n: NetSpec, features: Top, data: Top, num_classes: int,
             skips: Sequence[str] = (), label: Optional[Top] = None, suffix: str = "",
             skip_scales: Optional[Sequence[float]] = None,
             stride: int = VGG16_STRIDE, skip_suffix: Optional[str] = None,
             final_kernel: Optional[int] = None) -> Top:
    """Score, upsample, fuse skips and crop to the input: the FCN-32s/16s/8s decoders.

    ``skips`` names the pooling tops in ``n`` to fuse, coarse to fine, each one 2x step
    finer than the last (``('pool4', 'pool3')`` makes FCN-8s). Without skips the scores
    are upsampled ``stride``x at once (``upscore``); with skips each fuse is
    ``upscore2``/``upscore_<skip>`` + cropped ``score_<skip>`` and the last one is
    upsampled by what remains (``upscore16``, ``upscore8``). That last upsampling's kernel
    is twice its factor unless ``final_kernel`` says otherwise (AlexNet's 63 keeps its crop
    offset whole). ``skip_scales`` puts a fixed Scale layer before each skip's scorer (the
    "at once" nets). Crops come from coordinate maps. With a ``label``, adds ``loss``.
    ``suffix`` is appended to every name; the skips' own names carry ``skip_suffix``
    (default ``suffix``: a suffixed body such as a NYUD stream; '' for several heads on
    one body, SIFT Flow's). Returns the cropped ``score``.
    """
    skip_suffix = suffix if skip_suffix is None else skip_suffix
    if skip_scales is not None and len(skip_scales) != len(skips):
        raise ValueError(f"one skip scale per skip: {skips!r} vs {skip_scales!r}")
    n[f"score_fr{suffix}"] = scores = score_layer(features, num_classes)
    if skips:
        n[f"upscore2{suffix}"] = up = upsample(scores, num_classes, 2, 4)
    for i, skip in enumerate(skips):
        skip_top = n[skip + skip_suffix]
        if skip_scales is not None:
            n[f"scale_{skip}{suffix}"] = skip_top = L.Scale(
                skip_top, filler=dict(type="constant", value=skip_scales[i]), param=FROZEN)
        n[f"score_{skip}{suffix}"] = skip_score = score_layer(skip_top, num_classes)
        n[f"score_{skip}{suffix}c"] = skip_score = crop(skip_score, up)
        n[f"fuse_{skip}{suffix}"] = fused = L.Eltwise(up, skip_score, operation=P.Eltwise.SUM)
        if i + 1 < len(skips):
            n[f"upscore_{skip}{suffix}"] = up = upsample(fused, num_classes, 2, 4)
    factor = stride >> len(skips)
    kernel = final_kernel or 2 * factor
    if skips:
        n[f"upscore{factor}{suffix}"] = up = upsample(fused, num_classes, factor, kernel)
    else:
        n[f"upscore{suffix}"] = up = upsample(scores, num_classes, factor, kernel)
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


def input_layer(n: NetSpec, shapes: Mapping[str, Sequence[int]]) -> list[Top]:
    """A deploy net's inputs: one Input layer named ``input``, a top per ``shapes`` entry.

    The shapes only seed Caffe's first reshape.
    """
    tops = L.Input(name="input", ntop=len(shapes),
                   shape=[dict(dim=list(shape)) for shape in shapes.values()])
    tops = (tops,) if len(shapes) == 1 else tops
    for name, top in zip(shapes, tops):
        n[name] = top
    return list(tops)


def deploy(builder: Callable[..., Top], shape: Sequence[int] = (1, 3, 500, 500), **kwargs) -> \
        caffe_pb2.NetParameter:
    """An inference net: an Input layer named ``input`` (top ``data``), no dropout, no loss.

    ``builder`` is fcn32s/fcn16s/fcn8s; ``kwargs`` go to it (num_classes, widths, ...).
    The layout is the released voc-fcn8s/deploy.prototxt's.
    """
    n = NetSpec()
    data, = input_layer(n, {"data": shape})
    builder(n, data, dropout=False, **kwargs)
    return n.to_proto()
