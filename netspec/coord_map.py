"""Coordinate maps between tops, and the Crop layer that aligns two of them.

FCN adds coarse score maps to finer ones and to the input; the Crop offsets that align
them follow from kernel sizes, strides and pads alone, never from input sizes. A layer's
map sends an input coordinate ``x`` to ``scale * x + shift`` in its output; maps compose
along a path of layers and invert. ``crop(a, b)`` walks back from both tops to a common
ancestor and turns the map from ``a`` to ``b`` into ``L.Crop(a, b, crop_param=...)``.

The rules are pycaffe's ``caffe.coord_map`` (same layer table, same axis convention), so
crops equal the ones real pycaffe writes, but arithmetic is exact (fractions) and every
failure is a ``CoordMapError`` that names the tops and layers involved.
"""
from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Iterator, NamedTuple, Sequence

from netspec.net_spec import Function, L, Top

__all__ = [
    "AxisMismatchError",
    "CoordMap",
    "CoordMapError",
    "CropError",
    "PASS_THROUGH_LAYERS",
    "UndefinedMapError",
    "compose",
    "coord_map",
    "coord_map_from_to",
    "crop",
    "inverse",
]

# Layers that keep every coordinate where it is (pycaffe's list, unchanged: adding types
# pycaffe stops at, e.g. Concat, could let a walk meet a different ancestor than pycaffe's).
PASS_THROUGH_LAYERS = frozenset([
    "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
    "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold",
])


class CoordMapError(ValueError):
    """Two tops whose coordinates cannot be related (or not by a Crop)."""


class UndefinedMapError(CoordMapError):
    """A layer whose output coordinates do not follow from its input's (or cannot be read)."""


class AxisMismatchError(CoordMapError):
    """Two maps along one path that act on different axes."""


class CropError(CoordMapError):
    """A map that no Crop can realise: scales differ, or the offset is negative or fractional."""


class CoordMap(NamedTuple):
    """``output = scale * input + shift`` per spatial axis.

    ``axis`` is the axis just before the spatial ones (Caffe's channel axis, 1 for NCHW),
    None for maps that do not care (identity, pass-through layers). ``scale`` and ``shift``
    hold one value per spatial axis, or a single value for all of them.
    """

    axis: int | None
    scale: tuple[Fraction, ...]
    shift: tuple[Fraction, ...]


IDENTITY = CoordMap(None, (Fraction(1),), (Fraction(0),))


def _spread(*per_axis: Sequence) -> list[tuple]:
    """Zip per-axis value lists, a single value standing for every axis."""
    n = max(len(values) for values in per_axis)
    if any(len(values) not in (1, n) for values in per_axis):
        raise AxisMismatchError(
            f"per-axis values {[list(map(str, v)) for v in per_axis]} differ in length")
    return list(zip(*(list(values) * n if len(values) == 1 else values for values in per_axis)))


def compose(base: CoordMap, then: CoordMap) -> CoordMap:
    """The map ``then`` applied before ``base``: scales multiply, ``then``'s shift is rescaled.

    Walking back from a top, ``base`` is the map accumulated so far and ``then`` the next
    layer's map.
    """
    if base.axis is None or then.axis is None or base.axis == then.axis:
        axis = then.axis if base.axis is None else base.axis
    else:
        raise AxisMismatchError(f"maps on axis {base.axis} and axis {then.axis} do not compose")
    axes = _spread(base.scale, then.scale, base.shift, then.shift)
    return CoordMap(axis, tuple(a1 * a2 for a1, a2, _, _ in axes),
                    tuple(a1 * b2 + b1 for a1, _, b1, b2 in axes))


def inverse(m: CoordMap) -> CoordMap:
    """The map back from output to input coordinates."""
    axes = _spread(m.scale, m.shift)
    return CoordMap(m.axis, tuple(1 / a for a, _ in axes), tuple(-b / a for a, b in axes))


def _values(repeated: Sequence[int], default: int) -> list[int]:
    """A repeated field's values, or the default Caffe uses when it is empty."""
    return list(repeated) or [default]


def _window(fn: Function) -> tuple[int, list[int], list[int], list[int]]:
    """(axis, stride, effective kernel extent, pad) per spatial axis of a conv/pool layer."""
    if fn.type_name == "Pooling":
        p = fn.fields.pooling_param
        if p.global_pooling:
            raise UndefinedMapError("global pooling has no coordinate map")
        use_hw = p.HasField("kernel_h") or p.HasField("kernel_w")
        kernel = [p.kernel_h, p.kernel_w] if use_hw else [p.kernel_size]
        stride = [p.stride_h, p.stride_w] if p.HasField("stride_h") else [p.stride]
        pad = [p.pad_h, p.pad_w] if p.HasField("pad_h") else [p.pad]
        return 1, stride, kernel, pad  # pooling has no dilation
    p = fn.fields.convolution_param
    if p.HasField("kernel_h") or p.HasField("kernel_w"):
        kernel = [p.kernel_h, p.kernel_w]
    elif p.kernel_size:
        kernel = list(p.kernel_size)
    else:
        raise UndefinedMapError("no kernel_size in convolution_param")
    stride = [p.stride_h, p.stride_w] if p.HasField("stride_h") else _values(p.stride, 1)
    pad = [p.pad_h, p.pad_w] if p.HasField("pad_h") else _values(p.pad, 0)
    return p.axis, stride, _extent(kernel, _values(p.dilation, 1)), pad


def _extent(kernel: list[int], dilation: list[int]) -> list[int]:
    """Kernel extent once dilated: ``(k - 1) * d + 1``."""
    return [(k - 1) * d + 1 for k, d in _spread(kernel, dilation)]


def coord_map(fn: Function) -> CoordMap:
    """The map from a layer's (first) bottom coordinates to its top coordinates.

    Convolution/Pooling/Im2col: ``x / stride + (pad - (k - 1) / 2) / stride``;
    Deconvolution: ``stride * x + (k - 1) / 2 - pad``; Crop: ``x - offset``;
    pass-through layers: identity. Anything else raises UndefinedMapError.
    """
    where = f"layer of {fn.tops[0]}" if fn.tops else f"{fn.type_name} layer"
    try:
        if fn.type_name in ("Convolution", "Pooling", "Im2col", "Deconvolution"):
            axis, stride, extent, pad = _window(fn)
            axes = [(Fraction(s), Fraction(e - 1, 2), p)
                    for s, e, p in _spread(stride, extent, pad)]
            if fn.type_name == "Deconvolution":
                return CoordMap(axis, tuple(s for s, _, _ in axes),
                                tuple(c - p for _, c, p in axes))
            return CoordMap(axis, tuple(1 / s for s, _, _ in axes),
                            tuple((p - c) / s for s, c, p in axes))
        if fn.type_name in PASS_THROUGH_LAYERS:
            return IDENTITY
        if fn.type_name == "Crop":
            p = fn.fields.crop_param
            offsets = _values(p.offset, 0)
            return CoordMap(p.axis - 1, (Fraction(1),), tuple(Fraction(-o) for o in offsets))
    except (CoordMapError, ZeroDivisionError) as err:
        raise UndefinedMapError(f"{where}: {err}") from err
    raise UndefinedMapError(f"{where} has no coordinate map")


def _mapped_bottoms(fn: Function) -> tuple[Top, ...]:
    """Bottoms whose coordinates a layer's map relates to its tops.

    All of them, except for Crop, whose second bottom only lends its shape.
    """
    return fn.inputs[:1] if fn.type_name == "Crop" else fn.inputs


def _walk_back(start: Top, stops: list[str]) -> Iterator[tuple[Top, CoordMap]]:
    """Yield ``start``'s ancestors breadth first, each with the map from it to ``start``.

    A layer without a map ends its branch; those that had bottoms are noted in ``stops``.
    """
    maps = {start: IDENTITY}
    queue = deque([start])
    yield start, IDENTITY
    while queue:
        top = queue.popleft()
        bottoms = [b for b in _mapped_bottoms(top.fn) if b not in maps]
        if not bottoms:
            continue
        try:
            step = coord_map(top.fn)
        except UndefinedMapError as err:
            stops.append(str(err))
            continue
        for bottom in bottoms:
            try:
                maps[bottom] = compose(maps[top], step)
            except AxisMismatchError as err:
                raise AxisMismatchError(
                    f"mapping {start} back through {top}: {err}") from err
            queue.append(bottom)
            yield bottom, maps[bottom]


def coord_map_from_to(top_from: Top, top_to: Top) -> CoordMap:
    """The map from ``top_from``'s coordinates to ``top_to``'s, via a common ancestor."""
    from_stops: list[str] = []
    from_maps = dict(_walk_back(top_from, from_stops))
    to_stops: list[str] = []
    for top, to_map in _walk_back(top_to, to_stops):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    stops = "; ".join(dict.fromkeys(from_stops + to_stops))
    raise CoordMapError(
        f"cannot relate {top_from} to {top_to}: walking back through "
        "layers with coordinate maps they meet at no common top"
        + (f" (walks stopped at: {stops})" if stops else ""))


def crop(top_from: Top, top_to: Top) -> Top:
    """``L.Crop(top_from, top_to)`` with the axis and offsets aligning the first to the second."""
    m = coord_map_from_to(top_from, top_to)
    what = f"cannot crop {top_from} to {top_to}"
    if any(a != 1 for a in m.scale):
        raise CropError(f"{what}: scale {_text(m.scale)} between them, a crop needs 1")
    if any(b > 0 for b in m.shift):
        raise CropError(f"{what}: the target begins {_text(m.shift)} px before it, "
                        "so the crop offset would be negative")
    if any(b.denominator != 1 for b in m.shift):
        raise CropError(f"{what}: offset {_text([-b for b in m.shift])} is not an integer")
    axis = 2 if m.axis is None else m.axis + 1
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=axis, offset=[int(-b) for b in m.shift]))


def _text(values: Sequence[Fraction]) -> str:
    """Per-axis values as a message shows them."""
    return ", ".join(str(v) for v in values)
