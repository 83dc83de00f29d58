"""Layers over several same-shaped blobs or fan-out of one: Eltwise (SUM/PROD/MAX), Split, Silence."""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch

from netspec import caffe_pb2
from runner.layers.base import Layer, Shape
from runner.registry import register

_OP = caffe_pb2.EltwiseParameter


class _QuotientProduct(torch.autograd.Function):
    """Product of the bottoms whose gradient to bottom i is ``top / bottom_i`` (Caffe's PROD with
    ``stable_prod_grad: false``), not the product of the other bottoms."""

    @staticmethod
    def forward(ctx: Any, *bottoms: torch.Tensor) -> torch.Tensor:
        top = bottoms[0] * bottoms[1]
        for b in bottoms[2:]:
            top = top * b
        ctx.save_for_backward(top, *bottoms)
        return top

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        top, *bottoms = ctx.saved_tensors
        return tuple(top / b * grad for b in bottoms)


@register("Eltwise")
class Eltwise(Layer):
    """SUM (optionally weighted by ``coeff``, one per bottom), PROD, or MAX of two or more bottoms.

    MAX follows Caffe's argmax: bottom 0 wins over bottom 1 only when strictly larger, and each later
    bottom wins only when strictly larger than the running max. Chained ``torch.where`` on strict
    comparisons sends the gradient to exactly that winner, so autograd reproduces Caffe's tie rule.
    """

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.eltwise_param
        self.operation = param.operation
        self.coeff = [float(c) for c in param.coeff]
        self.stable_prod_grad = bool(param.stable_prod_grad)
        if self.coeff and self.operation != _OP.SUM:
            raise ValueError(f"layer '{self.name}' (Eltwise): coeff is only allowed with operation SUM")

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        """The bottoms' one shape, after checking they agree and match ``coeff``."""
        self.check_bottoms(2, None, bottom_shapes)
        if self.coeff and len(self.coeff) != len(bottom_shapes):
            raise ValueError(f"layer '{self.name}' (Eltwise): {len(self.coeff)} coeff for {len(bottom_shapes)} "
                             f"bottoms; give one per bottom")
        shape = tuple(bottom_shapes[0])
        for other in bottom_shapes[1:]:
            if tuple(other) != shape:
                raise ValueError(f"layer '{self.name}' (Eltwise): bottom shapes {shape} and {tuple(other)} "
                                 f"differ; all must be equal")
        return [shape]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        if self.operation == _OP.SUM:
            return [self._sum(bottoms)]
        if self.operation == _OP.PROD:
            return [self._prod(bottoms)]
        if self.operation == _OP.MAX:
            return [self._max(bottoms)]
        raise ValueError(f"layer '{self.name}' (Eltwise): unknown operation {self.operation}")

    def _sum(self, bottoms: List[torch.Tensor]) -> torch.Tensor:
        coeff = self.coeff or [1.0] * len(bottoms)
        top = bottoms[0] * coeff[0] if coeff[0] != 1.0 else bottoms[0]
        for b, c in zip(bottoms[1:], coeff[1:]):
            top = torch.add(top, b, alpha=c)
        return top

    def _prod(self, bottoms: List[torch.Tensor]) -> torch.Tensor:
        if not self.stable_prod_grad:
            return _QuotientProduct.apply(*bottoms)
        top = bottoms[0] * bottoms[1]
        for b in bottoms[2:]:
            top = top * b
        return top

    @staticmethod
    def _max(bottoms: List[torch.Tensor]) -> torch.Tensor:
        a, b = bottoms[0], bottoms[1]
        top = torch.where(a > b, a, b)
        for c in bottoms[2:]:
            top = torch.where(c > top, c, top)
        return top


@register("Split")
class Split(Layer):
    """One bottom copied to every top. Caffe's tops share the bottom's memory and their diffs are summed
    into the bottom's; separate views give both (autograd adds the gradients of views)."""

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(1, 1, bottom_shapes)
        return [tuple(bottom_shapes[0])] * len(self.layer_param.top)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, 1, bottoms)
        x = bottoms[0]
        return [x.view(x.shape) for _ in self.layer_param.top]


@register("Silence")
class Silence(Layer):
    """Consumes its bottoms and produces nothing, so that unused blobs are not reported as outputs."""

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(1, None, bottoms)
        return []
