"""Parameter: a learned blob of any shape offered as a top, for nets that feed weights to other layers."""
from __future__ import annotations

from typing import Any, List, Sequence

import torch

from runner.layers.base import Layer, ParamSpec, Shape
from runner.registry import register


@register("Parameter")
class Parameter(Layer):
    """No bottoms; one parameter of ``parameter_param.shape`` (zeros until weights are loaded: Caffe gives
    it no filler), handed on as the top itself. As in Caffe, where the top shares the blob's data and diff,
    writing the top writes the parameter and the top's gradient is the parameter's."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.shape = tuple(int(d) for d in layer_param.parameter_param.shape.dim)
        if any(d < 0 for d in self.shape):
            raise ValueError(f"layer '{self.name}' (Parameter): negative dim in shape {self.shape}")

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        self.check_bottoms(0, 0, bottom_shapes)
        return [ParamSpec(self.shape)]

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(0, 0, bottom_shapes)
        return [tuple(param_shapes[0])]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(0, 0, bottoms)
        return [params[0]]
