"""GoogLeNet (BVLC's reproduction) as an FCN body, and FCN-GoogLeNet (the paper's Table 1).

The paper scores the last inception module directly: the auxiliary classifiers and the final
average pooling are gone, the remaining layers keep BVLC GoogLeNet's names so that surgery
copies its ILSVRC weights by name. The release never published this net; what is chosen
here is said where it is chosen.

Inception modules concatenate their branches, and coordinate maps (pycaffe's and ours) stop
at a Concat. Every branch of a module keeps its input's coordinates (1x1; 3x3 pad 1; 5x5
pad 2; 3x3/1 pool pad 1), so the crop to the input is derived here by composing the maps
across each module, after checking that its branches agree.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from netspec.backbones import conv_relu, lrn, max_pool, score_layer, softmax_loss, upsample
from netspec.coord_map import (CoordMap, CoordMapError, CropError, compose,
                               coord_map_from_to, inverse)
from netspec.net_spec import L, NetSpec, P, Top

__all__ = ["INCEPTIONS", "Inception", "fcn_googlenet", "googlenet"]


class Inception(NamedTuple):
    """One module's widths: the 1x1 branch, the reduce/conv pairs of the 3x3 and 5x5
    branches, and the projection after the 3x3 max pooling."""

    name: str
    w1x1: int
    w3x3_reduce: int
    w3x3: int
    w5x5_reduce: int
    w5x5: int
    pool_proj: int


# Szegedy et al., Table 1; a 2-stride 3x3 max pooling follows 3b (pool3) and 4e (pool4).
INCEPTIONS = (
    Inception("3a", 64, 96, 128, 16, 32, 32),
    Inception("3b", 128, 128, 192, 32, 96, 64),
    Inception("4a", 192, 96, 208, 16, 48, 64),
    Inception("4b", 160, 112, 224, 24, 64, 64),
    Inception("4c", 128, 128, 256, 24, 64, 64),
    Inception("4d", 112, 144, 288, 32, 64, 64),
    Inception("4e", 256, 160, 320, 32, 128, 128),
    Inception("5a", 256, 160, 320, 32, 128, 128),
    Inception("5b", 384, 192, 384, 48, 128, 128),
)
POOLED_AFTER = {"3b": "pool3/3x3_s2", "4e": "pool4/3x3_s2"}
GOOGLENET_STRIDE = 32
# 63, not 64: with conv1's pad 3 the crop offset is then whole (1), as for FCN-AlexNet.
GOOGLENET_UPSCORE_KERNEL = 63
# BVLC GoogLeNet drops 40% before its classifier; FCN keeps dropout where the classifier had it.
GOOGLENET_DROPOUT = 0.4


def _inception(n: NetSpec, bottom: Top, spec: Inception) -> Top:
    """One inception module: four branches concatenated along channels; returns its output."""
    prefix = f"inception_{spec.name}/"

    def conv(name: str, top: Top, nout: int, ks: int) -> Top:
        conv_top, relu = conv_relu(top, nout, ks=ks, pad=ks // 2)
        n[prefix + name], n[prefix + "relu_" + name] = conv_top, relu
        return relu

    branch1 = conv("1x1", bottom, spec.w1x1, 1)
    branch3 = conv("3x3", conv("3x3_reduce", bottom, spec.w3x3_reduce, 1), spec.w3x3, 3)
    branch5 = conv("5x5", conv("5x5_reduce", bottom, spec.w5x5_reduce, 1), spec.w5x5, 5)
    n[prefix + "pool"] = pooled = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3,
                                            stride=1, pad=1)
    branch_pool = conv("pool_proj", pooled, spec.pool_proj, 1)
    n[prefix + "output"] = out = L.Concat(branch1, branch3, branch5, branch_pool)
    return out


def _module_map(module_input: Top, output: Top) -> CoordMap:
    """The map across one Concat: its branches' common map, or CoordMapError."""
    maps = {coord_map_from_to(module_input, branch) for branch in output.fn.inputs}
    if len(maps) != 1:
        raise CoordMapError(f"the branches of {output} map {module_input} differently: {maps}")
    return maps.pop()


def googlenet(n: NetSpec, data: Top, dropout: bool = True) -> tuple[Top, CoordMap]:
    """conv1 … inception_5b; returns its output and the map from ``data``'s coordinates.

    conv1 keeps GoogLeNet's pad 3: with no fc6 to feed, every input of 33 px or more
    reaches inception_5b, and the 63-kernel upsampling then covers the whole input.
    ``dropout`` adds GoogLeNet's 0.4 dropout on the last module's output, in place.
    """
    n["conv1/7x7_s2"], n["conv1/relu_7x7"] = conv_relu(data, 64, ks=7, stride=2, pad=3)
    n["pool1/3x3_s2"] = max_pool(n["conv1/relu_7x7"], 3)
    n["pool1/norm1"] = lrn(n["pool1/3x3_s2"])
    n["conv2/3x3_reduce"], n["conv2/relu_3x3_reduce"] = conv_relu(n["pool1/norm1"], 64,
                                                                  ks=1, pad=0)
    n["conv2/3x3"], n["conv2/relu_3x3"] = conv_relu(n["conv2/relu_3x3_reduce"], 192)
    n["conv2/norm2"] = lrn(n["conv2/relu_3x3"])
    n["pool2/3x3_s2"] = top = max_pool(n["conv2/norm2"], 3)
    data_map = coord_map_from_to(data, top)
    for spec in INCEPTIONS:
        out = _inception(n, top, spec)
        data_map = compose(_module_map(top, out), data_map)
        top = out
        if spec.name in POOLED_AFTER:
            n[POOLED_AFTER[spec.name]] = pooled = max_pool(top, 3)
            data_map = compose(coord_map_from_to(top, pooled), data_map)
            top = pooled
    if dropout:
        n["inception_5b/drop"] = top = L.Dropout(top, dropout_ratio=GOOGLENET_DROPOUT,
                                                 in_place=True)
    return top, data_map


def _crop(up: Top, data: Top, data_map: CoordMap) -> Top:
    """``up`` cropped to ``data``, given the map from ``data``'s coordinates to ``up``'s.

    The checks are crop()'s: equal scales, a whole, non-negative offset.
    """
    back = inverse(data_map)
    offsets = [-shift for shift in back.shift]
    if any(s != 1 for s in back.scale) or any(o < 0 or o.denominator != 1 for o in offsets):
        raise CropError(f"cannot crop {up} to {data}: map {back}")
    return L.Crop(up, data, crop_param=dict(axis=2, offset=[int(o) for o in offsets]))


def fcn_googlenet(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21,
                  dropout: bool = True) -> Top:
    """FCN-GoogLeNet: inception_5b scores upsampled 32x at once; returns ``score``.

    Trained as FCN-AlexNet is (the Table 1 recipe): the loss is averaged over pixels.
    """
    features, data_map = googlenet(n, data, dropout)
    n.score_fr = score_layer(features, num_classes)
    n.upscore = up = upsample(n.score_fr, num_classes, GOOGLENET_STRIDE,
                              GOOGLENET_UPSCORE_KERNEL)
    n.score = score = _crop(up, data, compose(coord_map_from_to(features, up), data_map))
    if label is not None:
        n.loss = softmax_loss(score, label, normalize=True)
    return score
