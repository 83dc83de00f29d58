"""InnerProduct: Caffe's fully connected layer.

Caffe flattens the bottom from ``axis`` on into K features and keeps the leading axes as M rows, so
``(2, 3, 4, 5)`` with axis 1 becomes a 2 x 60 matrix multiplied by the (N, K) weights.
"""
from __future__ import annotations

import math
from typing import Any, List, Sequence

import torch
import torch.nn.functional as F

from runner.layers.base import Layer, ParamSpec, Shape
from runner.layers.shape import canonical_axis
from runner.registry import register


@register("InnerProduct")
class InnerProduct(Layer):
    """``top = bottom.reshape(M, K) @ W.T + b`` (``@ W`` when ``transpose``); W is (N, K) or (K, N)."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.inner_product_param
        if p.num_output <= 0:
            raise ValueError(f"layer '{self.name}' (InnerProduct): num_output must be positive, got {p.num_output}")
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = p.axis
        self.weight_filler = p.weight_filler
        self.bias_filler = p.bias_filler

    def _split(self, shape: Shape) -> tuple:
        """(leading shape, K) for a bottom of this shape."""
        axis = canonical_axis(self, self.axis, len(shape))
        return tuple(shape[:axis]), math.prod(shape[axis:])

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        _, k = self._split(tuple(bottom_shapes[0]))
        weight = (k, self.num_output) if self.transpose else (self.num_output, k)
        specs = [ParamSpec(weight, self.weight_filler)]
        if self.bias_term:
            specs.append(ParamSpec((self.num_output,), self.bias_filler))
        return specs

    def _checked(self, bottom_shapes: Sequence[Shape], weight_shape: Shape) -> tuple:
        """(leading shape, K) of the one bottom, after checking K against the weights."""
        self.check_bottoms(1, 1, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        lead, k = self._split(shape)
        k_weight = weight_shape[0] if self.transpose else weight_shape[1]
        if k != k_weight:
            raise ValueError(f"layer '{self.name}' (InnerProduct): input size incompatible with inner product "
                             f"parameters: bottom {shape} gives K = {k}, weights expect {k_weight}")
        return lead, k

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        lead, _ = self._checked(bottom_shapes, tuple(param_shapes[0]))
        return [lead + (self.num_output,)]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        weight = params[0]
        lead, k = self._checked([tuple(b.shape) for b in bottoms], tuple(weight.shape))
        x = bottoms[0]
        rows = x.reshape(math.prod(lead), k)
        bias = params[1] if self.bias_term else None
        y = F.linear(rows, weight.t() if self.transpose else weight, bias)
        return [y.reshape(lead + (self.num_output,))]
