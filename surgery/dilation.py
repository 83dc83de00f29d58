"""Shift-and-stitch as filter dilation (the FCN paper, Section 3.2): the "a trous" rewrite of a net.

Running a net of output stride f on the f^2 shifted copies of an input and interlacing the outputs
(``surgery.shift_stitch``) gives the same dense output as one pass of a rewritten net: the subsampling
layer's stride becomes 1, and every later filter is dilated by the removed stride (its taps spread
apart to land where the subsampled net's taps would have landed) with its padding scaled alike, so that
each output keeps its receptive field. ``remove_subsampling`` does the rewrite on a NetParameter; the
weights are unchanged, so a net built from the result takes the original's caffemodel as is.

Caffe's PoolingParameter has no dilation, so a pooling with a window larger than 1 cannot sit downstream
of the cut; nor can layers whose geometry is not a filter (Deconvolution, Crop, InnerProduct). Those
raise ValueError rather than producing a net that silently differs.
"""
from __future__ import annotations

from typing import Any

from netspec import caffe_pb2

_REFUSED_DOWNSTREAM = ("Deconvolution", "Crop", "InnerProduct")


def _isotropic(param: Any, name: str, default: int, where: str, axis_name: str = "") -> int:
    """The one value of a 2-D Caffe geometry setting given as a repeated/optional field or per axis
    (``<axis_name>_h/_w``; the axis name is ``kernel`` for ``kernel_size``, else the same)."""
    field = getattr(param, name)
    values = list(field) if hasattr(field, "extend") else ([field] if param.HasField(name) else [])
    per_axis = [f"{axis_name or name}_h", f"{axis_name or name}_w"]
    if any(field in param.DESCRIPTOR.fields_by_name and param.HasField(field) for field in per_axis):
        values += [getattr(param, field) for field in per_axis]
    values = values or [default]
    if len(set(values)) != 1:
        raise ValueError(f"remove_subsampling: layer '{where}' has {name} {values}; only square geometry "
                         f"is supported")
    return int(values[0])


def _set(param: Any, name: str, value: int) -> None:
    """Write one value for all spatial axes, dropping any per-axis form."""
    for field in (f"{name}_h", f"{name}_w"):
        if field in param.DESCRIPTOR.fields_by_name:
            param.ClearField(field)
    if hasattr(getattr(param, name), "extend"):
        param.ClearField(name)
        getattr(param, name).append(value)
    else:
        setattr(param, name, value)


def _rewrite_convolution(layer: caffe_pb2.LayerParameter, factor: int) -> int:
    """Dilate and re-pad by ``factor``, drop the stride; the new factor (times the removed stride)."""
    p = layer.convolution_param
    stride = _isotropic(p, "stride", 1, layer.name)
    if factor > 1:
        _set(p, "dilation", _isotropic(p, "dilation", 1, layer.name) * factor)
        _set(p, "pad", _isotropic(p, "pad", 0, layer.name) * factor)
    _set(p, "stride", 1)
    return factor * stride


def _rewrite_pooling(layer: caffe_pb2.LayerParameter, factor: int) -> int:
    """Drop a pooling's stride; refused where its window would have to be dilated (no such field)."""
    p = layer.pooling_param
    kernel = _isotropic(p, "kernel_size", 1, layer.name, "kernel")
    if factor > 1 and (kernel > 1 or p.global_pooling):
        raise ValueError(f"remove_subsampling: pooling '{layer.name}' follows the cut and Caffe pooling cannot "
                         f"be dilated; cut at '{layer.name}' or later instead")
    stride = _isotropic(p, "stride", 1, layer.name)
    _set(p, "stride", 1)
    return factor * stride


def remove_subsampling(net_param: caffe_pb2.NetParameter, from_layer: str) -> caffe_pb2.NetParameter:
    """A copy of ``net_param`` where ``from_layer`` (Convolution or Pooling) and every layer downstream
    of it (following blobs, not file order) no longer subsample, later filters dilated to match."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(net_param)
    names = [layer.name for layer in net.layer]
    if from_layer not in names:
        raise ValueError(f"remove_subsampling: net has no layer '{from_layer}'")
    start = names.index(from_layer)
    if net.layer[start].type not in ("Convolution", "Pooling"):
        raise ValueError(f"remove_subsampling: '{from_layer}' is a {net.layer[start].type}, "
                         f"not a Convolution or Pooling")
    factors = {}  # blob name -> how much finer it now is than in the original net
    for layer in net.layer[start:]:
        marked = [b for b in layer.bottom if b in factors]
        if layer.name != from_layer and not marked:
            continue
        mixed = layer.name != from_layer and len(marked) != len(layer.bottom)
        if mixed or len({factors[b] for b in marked}) > 1:
            raise ValueError(f"remove_subsampling: layer '{layer.name}' mixes blobs of different resolutions "
                             f"(rewrite a deploy net: its outputs should not meet labels or other branches)")
        factor = factors[marked[0]] if marked else 1
        if layer.type in _REFUSED_DOWNSTREAM:
            raise ValueError(f"remove_subsampling: cannot rewrite {layer.type} layer '{layer.name}' downstream "
                             f"of the cut")
        if layer.type == "Convolution":
            factor = _rewrite_convolution(layer, factor)
        elif layer.type == "Pooling":
            factor = _rewrite_pooling(layer, factor)
        factors.update({top: factor for top in layer.top})
    return net
