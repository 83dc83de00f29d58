"""DummyData: tops of fixed shapes filled by Caffe fillers, for tests and shape-only nets."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from netspec import caffe_pb2
from runner.device import current_device
from runner.fillers import fill
from runner.layers.base import Layer
from runner.registry import register

_LEGACY = ("num", "channels", "height", "width")


@register("DummyData")
class DummyData(Layer):
    """One top per ``shape`` (or legacy ``num/channels/height/width``), each given once for all tops or
    once per top, filled by ``data_filler`` (one for all or one per top; default constant 0).

    As in Caffe, a constant top is filled once and then kept (so values a user writes into it stay),
    while any other filler draws fresh values at every forward. Tops live on the device the net runs on.
    """

    keeps_tops = True  # constant-filled tops are made once and handed out every pass

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.shapes = self._read_shapes(layer_param.dummy_data_param, len(layer_param.top))
        self.fillers = self._read_fillers(layer_param.dummy_data_param, len(layer_param.top))
        self._kept: Dict[int, torch.Tensor] = {}

    def _per_top(self, field: str, values: List[Any], num_top: int) -> List[Any]:
        """Caffe's rule for repeated fields: one value shared by all tops, or exactly one per top."""
        if len(values) == 1:
            return values * num_top
        if len(values) != num_top:
            raise ValueError(f"layer '{self.name}' (DummyData): {len(values)} {field} value(s) for {num_top} "
                             f"tops; give one, or one per top")
        return values

    def _read_shapes(self, param: Any, num_top: int) -> List[Tuple[int, ...]]:
        if any(len(getattr(param, f)) for f in _LEGACY):
            if len(param.shape):
                raise ValueError(f"layer '{self.name}' (DummyData): give either shape or "
                                 f"num/channels/height/width, not both")
            columns = [self._per_top(f, [int(v) for v in getattr(param, f)], num_top) for f in _LEGACY]
            return [tuple(dims) for dims in zip(*columns)]
        shapes = self._per_top("shape", [tuple(int(d) for d in s.dim) for s in param.shape], num_top)
        for shape in shapes:
            if any(d < 0 for d in shape):
                raise ValueError(f"layer '{self.name}' (DummyData): negative dim in shape {shape}")
        return shapes

    def _read_fillers(self, param: Any, num_top: int) -> List[Any]:
        fillers = list(param.data_filler) or [caffe_pb2.FillerParameter(type="constant", value=0.0)]
        return self._per_top("data_filler", fillers, num_top)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(0, 0, bottoms)
        device = current_device()
        tops = []
        for i, (shape, filler) in enumerate(zip(self.shapes, self.fillers)):
            if filler.type != "constant":
                tops.append(fill(torch.empty(shape, device=device), filler))
                continue
            kept = self._kept.get(i)
            if kept is None or kept.device != device:
                kept = self._kept[i] = fill(torch.empty(shape, device=device), filler)
            tops.append(kept)
        return tops
