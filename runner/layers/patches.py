"""Layers that cut images into windows: Im2col (every convolution window as a column, the layout Caffe's
convolutions multiply) and SPP (a pyramid of poolings into 1, 4, 16, ... bins, flattened and joined)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from netspec import caffe_pb2
from runner.layers.base import Layer, Shape
from runner.layers.convolution import ConvolutionGeometry
from runner.layers.pooling import Pooling
from runner.layers.shape import canonical_axis
from runner.registry import register


@register("Im2col")
class Im2col(ConvolutionGeometry):
    """Top ``(..., C*k1*k2..., o1, o2, ...)``: channel ``c*k1*k2 + i*k2 + j`` holds input channel c seen
    through kernel offset (i, j) of each window, zero outside the padded input (convolution_param's
    kernel, stride, pad, dilation and axis). The gradient sums overlapping windows back (col2im)."""

    def _layout(self, shape: Shape) -> Tuple[int, Tuple[int, ...]]:
        """Channel axis and top shape for a bottom of this shape, after Caffe's checks."""
        axis = canonical_axis(self, self.p.axis, len(shape))
        g = self._geometry(len(shape))
        spatial = []
        for i, size in enumerate(shape[axis + 1:]):
            span = size + 2 * g.pad[i] - g.extent(i)
            if span < 0:
                raise self._error(f"bottom {tuple(shape)} is too small for kernel {g.kernel}, pad {g.pad}, "
                                  f"dilation {g.dilation}")
            spatial.append(span // g.stride[i] + 1)
        return axis, tuple(shape[:axis]) + (shape[axis] * math.prod(g.kernel),) + tuple(spatial)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        return [self._layout(tuple(bottom_shapes[0]))[1]]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        axis, top_shape = self._layout(tuple(x.shape))
        g = self._geometry(x.dim())
        n = len(g.kernel)
        x = x.reshape((math.prod(x.shape[:axis]),) + tuple(x.shape[axis:]))
        x = F.pad(x, [p for pad in reversed(g.pad) for p in (pad, pad)])
        for i in range(n):  # windows along each spatial axis, appended as trailing axes
            x = x.unfold(2 + i, g.extent(i), g.stride[i])
        x = x[(slice(None),) * (2 + n) + tuple(slice(None, None, d) for d in g.dilation)]
        order = [0, 1] + [2 + n + i for i in range(n)] + [2 + i for i in range(n)]
        return [x.permute(order).reshape(top_shape)]


@register("SPP")
class SPP(Layer):
    """Spatial pyramid pooling of a 4-D bottom: level i pools into ``2^i x 2^i`` bins with kernel
    ``ceil(size / bins)``, stride = kernel and pad ``(kernel*bins - size + 1) // 2`` (Caffe's Pooling
    rules, MAX or AVE); with ``pyramid_height`` 1 the top is that pooling's ``(N, C, 1, 1)``, otherwise
    each level flattened to ``(N, C*bins^2)`` and all joined along axis 1."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.spp_param
        self.height = int(param.pyramid_height)
        if self.height < 1:
            raise ValueError(f"layer '{self.name}' (SPP): pyramid_height must be at least 1, got {self.height}")
        self.method = int(param.pool)
        self._levels: Dict[Tuple[int, int], List[Pooling]] = {}

    def _pooling(self, level: int, size: Tuple[int, int]) -> Pooling:
        bins = 2 ** level
        lp = caffe_pb2.LayerParameter(name=self.name, type="Pooling")
        p = lp.pooling_param
        p.pool = self.method
        (p.kernel_h, p.kernel_w) = kernel = tuple(-(-n // bins) for n in size)
        (p.stride_h, p.stride_w) = kernel
        (p.pad_h, p.pad_w) = ((k * bins - n + 1) // 2 for k, n in zip(kernel, size))
        return Pooling(lp, self.phase)

    def _poolings(self, shape: Shape) -> List[Pooling]:
        if len(shape) != 4 or min(shape[2:]) <= 0:
            raise ValueError(f"layer '{self.name}' (SPP): bottom must have 4 axes (N, C, H, W) with H, W > 0, "
                             f"got shape {tuple(shape)}")
        size = (shape[2], shape[3])
        if size not in self._levels:
            self._levels[size] = [self._pooling(level, size) for level in range(self.height)]
        return self._levels[size]

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        pooled = [pool.top_shapes([shape], ())[0] for pool in self._poolings(shape)]
        if self.height == 1:
            return pooled
        return [(shape[0], sum(math.prod(p[1:]) for p in pooled))]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        pooled = [pool.forward([x], [])[0] for pool in self._poolings(tuple(x.shape))]
        if self.height == 1:
            return pooled
        return [torch.cat([p.reshape(p.shape[0], -1) for p in pooled], dim=1)]
