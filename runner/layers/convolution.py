"""Convolution and Deconvolution, read with every rule of Caffe's BaseConvolutionLayer.

Both map onto torch's conv ops, whose output sizes and weight layouts equal Caffe's:
Convolution weights are (num_output, C_in/group, k...) and ``out = (in + 2p - ext)/s + 1``;
Deconvolution (Caffe's convolution gradient) weights are (C_in, num_output/group, k...) and
``out = s*(in - 1) + ext - 2p``, with ``ext = dilation*(k - 1) + 1``. Axes before ``axis`` are
batch axes; every bottom is convolved with the same weights into the top of the same index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from runner.layers import winograd
from runner.layers.base import Layer, ParamSpec, Shape
from runner.layers.shape import canonical_axis
from runner.registry import register

_CONV: Dict[int, Callable] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV: Dict[int, Callable] = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class _Geometry:
    """Per spatial axis kernel, stride, pad and dilation, as Caffe resolved them."""
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    pad: Tuple[int, ...]
    dilation: Tuple[int, ...]

    def extent(self, i: int) -> int:
        return self.dilation[i] * (self.kernel[i] - 1) + 1


class ConvolutionGeometry(Layer):
    """Reading ``convolution_param``'s kernel, stride, pad and dilation by Caffe's rules; shared by the
    (de)convolutions and Im2col, which takes the same parameters."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.p = layer_param.convolution_param
        self._geometries: Dict[int, _Geometry] = {}

    def _error(self, message: str) -> ValueError:
        return ValueError(f"layer '{self.name}' ({self.type}): {message}")

    def _per_axis(self, name: str, repeated: Sequence[int], hw: Tuple[str, str], n: int, default: int) -> Tuple[int, ...]:
        """Resolve one of kernel/stride/pad: the _h/_w pair (2-D only), else 0, 1 or n repeated values."""
        if any(self.p.HasField(f) for f in hw):
            if n != 2:
                raise self._error(f"{hw[0]}/{hw[1]} can only be used for 2-D convolution ({n} spatial axes)")
            if len(repeated):
                raise self._error(f"either {name} or {hw[0]}/{hw[1]} may be given, not both")
            return (getattr(self.p, hw[0]), getattr(self.p, hw[1]))
        return self._repeated(name, repeated, n, default)

    def _repeated(self, name: str, values: Sequence[int], n: int, default: int) -> Tuple[int, ...]:
        if len(values) == 0:
            return (default,) * n
        if len(values) == 1:
            return (values[0],) * n
        if len(values) != n:
            raise self._error(f"{name} must be given once or once per spatial axis "
                              f"({len(values)} values for {n} spatial axes)")
        return tuple(values)

    def _geometry(self, num_axes: int) -> _Geometry:
        """Kernel/stride/pad/dilation for a bottom with ``num_axes`` axes (cached per rank)."""
        if num_axes in self._geometries:
            return self._geometries[num_axes]
        p = self.p
        n = num_axes - canonical_axis(self, p.axis, num_axes) - 1
        if n not in _CONV:
            raise self._error(f"{n} spatial axes are not supported (1, 2 or 3)")
        if not (p.HasField("kernel_h") or p.HasField("kernel_w")) and len(p.kernel_size) == 0:
            raise self._error("kernel_size or kernel_h and kernel_w must be given")
        g = _Geometry(
            kernel=self._per_axis("kernel_size", p.kernel_size, ("kernel_h", "kernel_w"), n, 0),
            stride=self._per_axis("stride", p.stride, ("stride_h", "stride_w"), n, 1),
            pad=self._per_axis("pad", p.pad, ("pad_h", "pad_w"), n, 0),
            dilation=self._repeated("dilation", p.dilation, n, 1))
        for name, values in (("kernel", g.kernel), ("stride", g.stride), ("dilation", g.dilation)):
            if min(values) <= 0:
                raise self._error(f"{name} dimensions must be positive, got {values}")
        self._geometries[num_axes] = g
        return g


class _ConvBase(ConvolutionGeometry):
    """Weights and the (de)convolution call shared by both layer types."""

    #: True for Deconvolution: channels and num_output swap roles in the weight shape.
    transposed = False
    #: Set by ``Net.set_speed(winograd=True)``: eligible 2-D convolutions go through ``winograd.conv2d``.
    use_winograd = False

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = self.p
        if p.num_output <= 0:
            raise self._error(f"num_output must be positive, got {p.num_output}")
        if p.group <= 0 or p.num_output % p.group:
            raise self._error(f"num_output ({p.num_output}) must be a multiple of group ({p.group})")

    def _channels(self, shape: Shape) -> int:
        return shape[canonical_axis(self, self.p.axis, len(shape))]

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        shape = tuple(bottom_shapes[0])
        g = self._geometry(len(shape))
        channels = self._channels(shape)
        if channels % self.p.group:
            raise self._error(f"input channels ({channels}) must be a multiple of group ({self.p.group})")
        if self.transposed:
            weight = (channels, self.p.num_output // self.p.group) + g.kernel
        else:
            weight = (self.p.num_output, channels // self.p.group) + g.kernel
        specs = [ParamSpec(weight, self.p.weight_filler)]
        if self.p.bias_term:
            specs.append(ParamSpec((self.p.num_output,), self.p.bias_filler))
        return specs

    def _output_size(self, g: _Geometry, i: int, size: int) -> int:
        raise NotImplementedError

    def _checked(self, bottom_shapes: Sequence[Shape], weight_shape: Shape) -> Tuple[_Geometry, int, Shape]:
        """Geometry, channel axis and top shape, after Caffe's checks on the bottoms and the weights."""
        self.check_bottoms(1, None, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        g = self._geometry(len(shape))
        axis = canonical_axis(self, self.p.axis, len(shape))
        expected = weight_shape[0] if self.transposed else weight_shape[1] * self.p.group
        if shape[axis] != expected:
            raise self._error(f"input size incompatible with convolution kernel: bottom {shape} has "
                              f"{shape[axis]} channels on axis {axis}, the weights expect {expected}")
        spatial = tuple(self._output_size(g, i, size) for i, size in enumerate(shape[axis + 1:]))
        if min(spatial) <= 0:
            raise self._error(f"bottom {shape} is too small for kernel {g.kernel}, stride {g.stride}, "
                              f"pad {g.pad}, dilation {g.dilation}: output size would be {spatial}")
        for other in bottom_shapes[1:]:
            if tuple(other) != shape:
                raise self._error(f"all bottoms must have the same shape: {shape} vs {tuple(other)}")
        return g, axis, shape[:axis] + (self.p.num_output,) + spatial

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        top = self._checked(bottom_shapes, tuple(param_shapes[0]))[2]
        return [top] * len(bottom_shapes)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        return self.convolve(bottoms, params[0], params[1] if self.p.bias_term else None)

    def convolve(self, bottoms: List[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor]) -> List[torch.Tensor]:
        """The tops for these weights and bias (None: none), which need not be the layer's own: inference
        folds the per-channel affine layers after a convolution into them (``runner.fusion``)."""
        g, axis, _ = self._checked([tuple(b.shape) for b in bottoms], tuple(weight.shape))
        shape = tuple(bottoms[0].shape)
        op = (_DECONV if self.transposed else _CONV)[len(g.kernel)]
        lead = shape[:axis]
        tops = []
        for x in bottoms:
            batched = x.reshape((math.prod(lead),) + shape[axis:])
            y = self._transform_domain(batched, weight, bias, g)
            if y is None:
                y = op(batched, weight, bias, stride=g.stride, padding=g.pad, dilation=g.dilation,
                       groups=self.p.group)
            tops.append(y.reshape(lead + tuple(y.shape[1:])))
        return tops

    def _transform_domain(self, x: torch.Tensor, weight: torch.Tensor, bias: Any, g: _Geometry) -> Any:
        """The Winograd/FFT convolution when it is switched on and applies, else None."""
        if not self.use_winograd or self.transposed or not winograd.applies(x, weight, g.stride, g.dilation,
                                                                         self.p.group):
            return None
        try:
            return winograd.conv2d(x, weight, bias, g.pad)
        except RuntimeError:  # a shape NNPACK does not take
            return None


@register("Convolution")
class Convolution(_ConvBase):
    """Cross-correlation, Caffe's ``Convolution``; output sizes round down."""

    def _output_size(self, g: _Geometry, i: int, size: int) -> int:
        span = size + 2 * g.pad[i] - g.extent(i)
        # Caffe divides with C++ truncation; a negative span is refused here instead of emulated.
        return span // g.stride[i] + 1 if span >= 0 else 0


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Caffe's ``Deconvolution``: the gradient of Convolution, i.e. torch's conv_transpose."""

    transposed = True

    def _output_size(self, g: _Geometry, i: int, size: int) -> int:
        return g.stride[i] * (size - 1) + g.extent(i) - 2 * g.pad[i]
