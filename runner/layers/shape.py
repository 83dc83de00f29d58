"""Layers that move or relabel data without arithmetic: Concat, Slice, Flatten, Reshape, Tile, ArgMax.

Also home of ``canonical_axis``, Caffe's rule for negative axes, and ``legacy_shape``, its 4-D
num/channels/height/width view, which the other layer families share.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

import torch

from runner.layers.base import Layer, Shape
from runner.registry import register


def canonical_axis(layer: Layer, axis: int, num_axes: int) -> int:
    """Caffe's ``CanonicalAxisIndex``: an axis in ``[-num_axes, num_axes)``, negatives counted from the
    end; anything else is an error naming the layer."""
    if not -num_axes <= axis < num_axes:
        raise ValueError(f"layer '{layer.name}' ({layer.type}): axis {axis} out of range for a "
                         f"{num_axes}-D bottom blob")
    return axis + num_axes if axis < 0 else axis


def legacy_shape(layer: Layer, shape: Sequence[int]) -> Shape:
    """Caffe's ``num(), channels(), height(), width()`` of a blob: its shape padded with 1s to 4 axes; a
    blob of more than 4 axes has none (an error naming the layer)."""
    if len(shape) > 4:
        raise ValueError(f"layer '{layer.name}' ({layer.type}): a bottom of shape {tuple(shape)} has more than "
                         f"the 4 axes (num, channels, height, width) this layer reads")
    return tuple(shape) + (1,) * (4 - len(shape))


def legacy_axis(layer: Layer, param: Any, legacy_field: str) -> int:
    """``axis``, or the legacy unsigned ``concat_dim``/``slice_dim`` when that is set; Caffe refuses both."""
    if param.HasField(legacy_field):
        if param.HasField("axis"):
            raise ValueError(f"layer '{layer.name}' ({layer.type}): give either axis or {legacy_field}, not both")
        return int(getattr(param, legacy_field))
    return int(param.axis)


@register("Concat")
class Concat(Layer):
    """Join bottoms along ``axis`` (default 1); every other extent must agree."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.axis = legacy_axis(self, layer_param.concat_param, "concat_dim")

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, None, bottoms)
        first = tuple(bottoms[0].shape)
        axis = canonical_axis(self, self.axis, len(first))
        for b in bottoms[1:]:
            shape = tuple(b.shape)
            if len(shape) != len(first) or shape[:axis] + shape[axis + 1:] != first[:axis] + first[axis + 1:]:
                raise ValueError(f"layer '{self.name}' (Concat): bottom shapes {first} and {shape} differ "
                                 f"outside the concat axis {axis}")
        return [torch.cat(bottoms, dim=axis)]


@register("Slice")
class Slice(Layer):
    """Cut the bottom along ``axis`` (default 1) at ``slice_point``s, or into equal parts, one per top."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.slice_param
        self.axis = legacy_axis(self, param, "slice_dim")
        self.slice_points = [int(p) for p in param.slice_point]
        self.num_tops = len(layer_param.top)

    def _sizes(self, extent: int) -> List[int]:
        """Extent of each top along the slice axis."""
        n = self.num_tops
        if not self.slice_points:
            if n == 0 or extent % n:
                raise ValueError(f"layer '{self.name}' (Slice): axis extent {extent} does not split evenly "
                                 f"into {n} tops")
            return [extent // n] * n
        if len(self.slice_points) != n - 1:
            raise ValueError(f"layer '{self.name}' (Slice): {len(self.slice_points)} slice_point(s) for {n} "
                             f"tops; need {n - 1}")
        bounds = [0] + self.slice_points + [extent]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        if any(s <= 0 for s in sizes):
            raise ValueError(f"layer '{self.name}' (Slice): slice_point {self.slice_points} must increase "
                             f"strictly inside (0, {extent})")
        return sizes

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        axis = canonical_axis(self, self.axis, x.dim())
        return list(torch.split(x, self._sizes(x.shape[axis]), dim=axis))


@register("Flatten")
class Flatten(Layer):
    """Merge axes ``axis..end_axis`` (defaults 1 and -1) into one."""

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        param = self.layer_param.flatten_param
        start = canonical_axis(self, int(param.axis), x.dim())
        end = canonical_axis(self, int(param.end_axis), x.dim())
        if end < start:
            raise ValueError(f"layer '{self.name}' (Flatten): end_axis {end} comes before axis {start}")
        shape = tuple(x.shape)
        return [x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])]


@register("Reshape")
class Reshape(Layer):
    """Replace ``num_axes`` axes from ``axis`` by ``shape``, where 0 copies the bottom's extent at that
    position and one -1 is inferred from the element count (Caffe's ReshapeLayer rules)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.reshape_param
        self.dims = [int(d) for d in param.shape.dim]
        self.axis = int(param.axis)
        self.num_axes = int(param.num_axes)
        if sum(d == -1 for d in self.dims) > 1:
            raise ValueError(f"layer '{self.name}' (Reshape): shape {self.dims} has more than one -1")
        if any(d < -1 for d in self.dims):
            raise ValueError(f"layer '{self.name}' (Reshape): shape {self.dims} has a dim below -1")
        if self.num_axes < -1:
            raise ValueError(f"layer '{self.name}' (Reshape): num_axes must be >= 0, or -1 for all")

    def top_shape(self, bottom: Sequence[int]) -> List[int]:
        """The top's shape for a bottom of this shape."""
        n = len(bottom)
        start = self.axis if self.axis >= 0 else n + self.axis + 1
        end = n if self.num_axes == -1 else start + self.num_axes
        if not 0 <= start <= n or end > n:
            raise ValueError(f"layer '{self.name}' (Reshape): axis {self.axis} num_axes {self.num_axes} out of "
                             f"range for a {n}-D bottom")
        new = list(self.dims)
        for i, d in enumerate(new):
            if d == 0:
                if start + i >= n:
                    raise ValueError(f"layer '{self.name}' (Reshape): shape dim {i} is 0 but the bottom has "
                                     f"no axis {start + i} to copy")
                new[i] = bottom[start + i]
        top = list(bottom[:start]) + new + list(bottom[end:])
        count = math.prod(bottom)
        if -1 in new:
            known = math.prod(d for d in top if d != -1)
            if known == 0 or count % known:
                raise ValueError(f"layer '{self.name}' (Reshape): cannot infer the -1 in {self.dims} for "
                                 f"bottom shape {tuple(bottom)}")
            top[top.index(-1)] = count // known
        if math.prod(top) != count:
            raise ValueError(f"layer '{self.name}' (Reshape): shape {tuple(top)} does not hold the "
                             f"{count} elements of bottom shape {tuple(bottom)}")
        return top

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        return [x.reshape(self.top_shape(tuple(x.shape)))]


@register("Tile")
class Tile(Layer):
    """``tiles`` copies of the bottom laid end to end along ``axis`` (default 1): the blocks from ``axis``
    on repeat, so the top holds ``x[..., 0:n], x[..., 0:n], ...``; the gradient sums the copies."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.tile_param
        if not param.HasField("tiles"):
            raise ValueError(f"layer '{self.name}' (Tile): tile_param.tiles must be given")
        if param.tiles <= 0:
            raise ValueError(f"layer '{self.name}' (Tile): tiles must be positive, got {param.tiles}")
        self.axis, self.tiles = int(param.axis), int(param.tiles)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        shape = list(bottom_shapes[0])
        axis = canonical_axis(self, self.axis, len(shape))
        shape[axis] *= self.tiles
        return [tuple(shape)]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        axis = canonical_axis(self, self.axis, x.dim())
        return [x.repeat((1,) * axis + (self.tiles,) + (1,) * (x.dim() - axis - 1))]


@register("ArgMax")
class ArgMax(Layer):
    """The ``top_k`` largest entries per example (the flattened ``C*H*W``) or along ``axis``. Without
    axis the top is ``(N, 1, k, 1...)`` indices, or ``(N, 2, k, 1...)`` indices then values with
    ``out_max_val``; with axis it holds indices, or only the values with ``out_max_val``. Equal values
    rank the higher index first, as Caffe's ``partial_sort`` of (value, index) pairs. No gradient: Caffe
    has no backward for it, so a backward through it is refused."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.argmax_param
        self.out_max_val = bool(param.out_max_val)
        self.top_k = int(param.top_k)
        self.axis = int(param.axis) if param.HasField("axis") else None
        if self.top_k < 1:
            raise ValueError(f"layer '{self.name}' (ArgMax): top_k must be >= 1")

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0].detach()
        shape = tuple(x.shape)
        if self.axis is None:
            outer, dim, inner = shape[0], math.prod(shape[1:]), 1
        else:
            axis = canonical_axis(self, self.axis, len(shape))
            outer, dim, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
        if self.top_k > dim:
            raise ValueError(f"layer '{self.name}' (ArgMax): top_k {self.top_k} exceeds the {dim} candidates")
        flipped = x.reshape(outer, dim, inner).flip(1)
        values, positions = torch.sort(flipped, dim=1, descending=True, stable=True)
        values = values[:, :self.top_k]
        indices = (dim - 1 - positions[:, :self.top_k]).to(x.dtype)
        if self.axis is not None:
            out = values if self.out_max_val else indices
            return [out.reshape(shape[:axis] + (self.top_k,) + shape[axis + 1:])]
        out = torch.cat([indices, values], dim=1) if self.out_max_val else indices
        pad = (1,) * (max(len(shape), 3) - 3)
        return [out.reshape((outer, 2 if self.out_max_val else 1, self.top_k) + pad)]

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        return "Not Implemented Yet: Caffe has no backward for ArgMax (argmax_layer.hpp)"
