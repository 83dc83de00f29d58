"""Coordinate maps must give real pycaffe's FCN crop offsets, and fail clearly otherwise.

Offsets 19 (32s), 5 and 27 (16s), 5, 9 and 31 (8s) are what ``caffe.coord_map.crop``
chose for the reference nets. They depend on no input size: a small shape calculator
(Caffe's output-size rules) checks that every crop fits for each input size tried.
"""
import json
import os
from fractions import Fraction

import pytest

from caffe_cases import ROOT
from netspec import backbones
from netspec.coord_map import (AxisMismatchError, CoordMap, CoordMapError, CropError,
                               UndefinedMapError, compose, coord_map, coord_map_from_to,
                               crop, inverse)
from netspec.net_spec import L, NetSpec, P

OFFSETS = {
    "fcn32s": {"score": 19},
    "fcn16s": {"score_pool4c": 5, "score": 27},
    "fcn8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
}


def _crops(net):
    return {layer.name: (layer.crop_param.axis, list(layer.crop_param.offset))
            for layer in net.layer if layer.type == "Crop"}


@pytest.mark.parametrize("variant", sorted(OFFSETS))
def test_fcn_crop_offsets_are_pycaffes(variant):
    net = backbones.deploy(getattr(backbones, variant), widths=2, fc_width=2)
    assert _crops(net) == {name: (2, [offset]) for name, offset in OFFSETS[variant].items()}


def _spatial_shapes(net, size):
    """Caffe's (H, W) of every blob for an input of ``size`` (FCN layer types only)."""
    shapes, fits = {}, []
    for layer in net.layer:
        if layer.type == "Input":
            shapes[layer.top[0]] = size
            continue
        src = shapes[layer.bottom[0]]
        if layer.type in ("Convolution", "Deconvolution"):
            p = layer.convolution_param
            k, s, pad = p.kernel_size[0], (list(p.stride) or [1])[0], (list(p.pad) or [0])[0]
            if layer.type == "Convolution":
                out = tuple((x + 2 * pad - k) // s + 1 for x in src)
            else:
                out = tuple(s * (x - 1) + k - 2 * pad for x in src)
        elif layer.type == "Pooling":
            p = layer.pooling_param  # no pad here: ceil rounding, no clipping
            out = tuple(-(-(x - p.kernel_size) // p.stride) + 1 for x in src)
        elif layer.type == "Crop":
            out = shapes[layer.bottom[1]]
            fits.append(all(layer.crop_param.offset[0] + o <= x for o, x in zip(out, src)))
        else:
            out = src
        for top in layer.top:
            shapes[top] = out
    return shapes, fits


def test_shape_calculator_matches_caffe_on_the_deploy_net():
    with open(os.path.join(ROOT, "netspec", "voc-fcn8s", "deploy_blob_shapes.json")) as f:
        want = json.load(f)["blob_shapes"]
    shapes, _ = _spatial_shapes(backbones.deploy(backbones.fcn8s), (500, 500))
    for name, shape in shapes.items():
        assert tuple(want[name][2:]) == shape, name


@pytest.mark.parametrize("variant", sorted(OFFSETS))
def test_fixed_offsets_fit_every_input_size(variant):
    net = backbones.deploy(getattr(backbones, variant), widths=2, fc_width=2)
    for size in [(h, h + 37) for h in range(1, 400, 7)] + [(73, 101), (500, 500)]:
        shapes, fits = _spatial_shapes(net, size)
        assert all(fits), size
        assert shapes["score"] == size


def _chain():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 16, 16]))
    return n


def test_layer_maps():
    n = _chain()
    n.conv = L.Convolution(n.data, kernel_size=3, pad=1, num_output=1)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=1, kernel_size=4,
                                                          stride=2))
    n.dil = L.Convolution(n.up, kernel_size=3, dilation=2, num_output=1)
    half = Fraction(1, 2)
    assert coord_map(n.conv.fn) == CoordMap(1, (1,), (0,))
    assert coord_map(n.pool.fn) == CoordMap(1, (half,), (-half / 2,))
    assert coord_map(n.up.fn) == CoordMap(1, (2,), (Fraction(3, 2),))
    assert coord_map(n.dil.fn) == CoordMap(1, (1,), (-2,))
    assert coord_map(L.ReLU(n.data).fn) == CoordMap(None, (1,), (0,))
    n.c = L.Crop(n.conv, n.data, crop_param=dict(axis=2, offset=[3, 4]))
    assert coord_map(n.c.fn) == CoordMap(1, (1,), (-3, -4))


def test_compose_and_inverse():
    a = CoordMap(1, (Fraction(1, 2),), (Fraction(-1, 4),))
    b = CoordMap(None, (Fraction(2),), (Fraction(3, 2),))
    assert compose(a, b) == CoordMap(1, (1,), (Fraction(1, 2),))
    identity = compose(a, inverse(a))
    assert identity == CoordMap(1, (1,), (0,))
    with pytest.raises(AxisMismatchError):
        compose(a, CoordMap(2, (1,), (0,)))


def test_per_axis_kernels_give_per_axis_offsets():
    n = _chain()
    n.conv = L.Convolution(n.data, kernel_h=3, kernel_w=5, num_output=1)
    n.c = crop(n.data, n.conv)
    assert list(n.c.fn.fields.crop_param.offset) == [1, 2]


def test_map_between_tops_needs_no_shapes():
    n = _chain()
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, num_output=1, kernel_size=4, stride=2)
    assert coord_map_from_to(n.up, n.data) == CoordMap(1, (1,), (-1,))
    assert coord_map_from_to(n.data, n.up) == CoordMap(1, (1,), (1,))


def test_undefined_map_names_the_layer():
    n = _chain()
    n.prob = L.Softmax(n.data)
    with pytest.raises(UndefinedMapError, match=r"layer of top 'prob' \(Softmax\)"):
        coord_map(n.prob.fn)
    n.conv = L.Convolution(n.prob, kernel_size=3, num_output=1)
    n.other = L.Input(shape=dict(dim=[1, 1, 16, 16]))
    with pytest.raises(CoordMapError,
                       match=r"'conv'.*'other'.*layer of top 'prob' \(Softmax\) has no"):
        crop(n.conv, n.other)
    n.gp = L.Pooling(n.data, pool=P.Pooling.MAX, global_pooling=True)
    with pytest.raises(UndefinedMapError, match="global"):
        coord_map(n.gp.fn)


def test_scale_mismatch_is_a_crop_error():
    n = _chain()
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    with pytest.raises(CropError, match="crop top 'pool' .* to top 'data' .*scale 2"):
        crop(n.pool, n.data)


def test_negative_offset_is_a_crop_error():
    n = _chain()
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=1)
    with pytest.raises(CropError, match="crop top 'conv' .* to top 'data'.*negative"):
        crop(n.conv, n.data)
    assert list(crop(n.data, n.conv).fn.fields.crop_param.offset) == [1]


def test_fractional_offset_is_a_crop_error():
    n = _chain()
    n.conv = L.Convolution(n.data, kernel_size=2, num_output=1)
    with pytest.raises(CropError, match="1/2 is not an integer"):
        crop(n.data, n.conv)


def test_axis_mismatch_names_the_walk():
    n = _chain()
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=1)
    n.c = L.Crop(n.conv, n.data, crop_param=dict(axis=3))
    with pytest.raises(AxisMismatchError, match="top 'c'"):
        crop(n.c, n.data)


def test_errors_are_value_errors():
    for error in (UndefinedMapError, AxisMismatchError, CropError):
        assert issubclass(error, CoordMapError) and issubclass(error, ValueError)
