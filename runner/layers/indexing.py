"""Layers whose values pick rows: Embed (rows of a learned table by index), Filter (samples whose selector
is non-zero), BatchReindex (samples by index). The indices arrive as float blobs, read as Caffe's
``static_cast<int>`` reads them (truncated). Caffe cannot differentiate them: they get no gradient, and a
backward asked for one is refused with Caffe's message, as Caffe aborts there.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
import torch.nn.functional as F

from runner.layers.base import Layer, ParamSpec, Shape
from runner.registry import register


def _as_indices(values: torch.Tensor) -> torch.Tensor:
    """Float indices as Caffe casts them: truncated toward zero, flattened, never differentiated."""
    return values.detach().reshape(-1).to(torch.int64)


@register("Embed")
class Embed(Layer):
    """One learned row per index: top ``bottom.shape + (num_output,)`` holds ``W[index] (+ b)`` with W of
    shape ``(input_dim, num_output)`` (InnerProduct's weights transposed) and an optional bias
    ``(num_output,)``. Indices must lie in ``[0, input_dim)``."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        p = layer_param.embed_param
        if p.num_output <= 0 or p.input_dim <= 0:
            raise ValueError(f"layer '{self.name}' (Embed): num_output and input_dim must be positive, got "
                             f"{p.num_output} and {p.input_dim}")
        self.p = p

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        self.check_bottoms(1, 1, bottom_shapes)
        specs = [ParamSpec((self.p.input_dim, self.p.num_output), self.p.weight_filler)]
        if self.p.bias_term:
            specs.append(ParamSpec((self.p.num_output,), self.p.bias_filler))
        return specs

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        return [tuple(bottom_shapes[0]) + (self.p.num_output,)]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        rows = F.embedding(_as_indices(x), params[0])
        if self.p.bias_term:
            rows = rows + params[1]
        return [rows.reshape(tuple(x.shape) + (self.p.num_output,))]

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        if propagate_down[0]:
            return "Can't backpropagate to EmbedLayer input. (embed_layer.cpp: Check failed: !propagate_down[0])"
        return None


@register("Filter")
class Filter(Layer):
    """Every bottom but the last, keeping the samples (first-axis entries) whose selector, the last bottom
    of shape ``(N, 1, ...)``, is non-zero; dropped samples get a zero gradient.

    The top's first axis follows the selector's values, so it is known only at forward: at setup Caffe
    sizes the tops like the bottoms (``top_shapes`` does the same), and each forward gives them the
    filtered size. Layers after it are sized for N at setup, as in Caffe; the layer runs eagerly. One
    difference: ``net.reshape()`` sizes the tops for N again, where Caffe's later reshapes count the
    selector's non-zeros; the next forward sizes them right either way."""

    traceable = False

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(2, None, bottom_shapes)
        if len(self.layer_param.top) != len(bottom_shapes) - 1:
            raise ValueError(f"layer '{self.name}' (Filter): {len(bottom_shapes)} bottoms need "
                             f"{len(bottom_shapes) - 1} tops (the last bottom is the selector), got "
                             f"{len(self.layer_param.top)}")
        selector = tuple(bottom_shapes[-1])
        if not selector or any(d != 1 for d in selector[1:]):
            raise ValueError(f"layer '{self.name}' (Filter): selector shape {selector} must be (N,) or have "
                             f"only 1s after the first axis")
        for shape in bottom_shapes[:-1]:
            if not shape or shape[0] != selector[0]:
                raise ValueError(f"layer '{self.name}' (Filter): bottom shape {tuple(shape)} must have the "
                                 f"selector's first axis {selector[0]}")
        return [tuple(shape) for shape in bottom_shapes[:-1]]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        kept = torch.nonzero(bottoms[-1].detach().reshape(-1)).reshape(-1)
        return [x.index_select(0, kept) for x in bottoms[:-1]]

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        if propagate_down[-1]:
            return "FilterLayer cannot backpropagate to filter index inputs (filter_layer.cpp)"
        return None


@register("BatchReindex")
class BatchReindex(Layer):
    """``top[i] = bottom[index[i]]`` along the first axis, the indices a 1-D second bottom (repeats
    allowed; the gradient of a repeated sample is the sum over its copies)."""

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(2, 2, bottom_shapes)
        data, index = (tuple(s) for s in bottom_shapes)
        if len(index) != 1 or not data:
            raise ValueError(f"layer '{self.name}' (BatchReindex): the index bottom must be 1-D and the data "
                             f"at least 1-D, got shapes {data} and {index}")
        return [index + data[1:]]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        return [bottoms[0].index_select(0, _as_indices(bottoms[1]))]

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        if propagate_down[1]:
            return "Cannot backprop to index. (batch_reindex_layer.cpp: Check failed: !propagate_down[1])"
        return None
