"""The contract every layer implementation follows.

A layer is built once from its LayerParameter and the net's phase. The Net asks it which learnable
blobs it owns (shapes and fillers, given the bottom shapes), and calls ``forward`` with torch tensors.
Backward is autograd's job: a layer writes a custom ``torch.autograd.Function`` only where Caffe's
gradient differs from the mathematical one (e.g. tie-breaking rules). Top shapes are found by running
``forward`` on meta tensors, so forwards must not depend on data for shapes (no boolean indexing,
no ``.item()``); the one Caffe layer whose top shape follows the values (Filter) says so with
``top_shapes`` and ``traceable``. Where Caffe refuses a backward, the layer names the reason in
``backward_refusal`` and the net raises it when a backward reaches the layer, as Caffe aborts there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

Shape = Tuple[int, ...]


@dataclass
class ParamSpec:
    """A learnable blob a layer owns: its shape and the FillerParameter that initialises it (None: zeros)."""
    shape: Shape
    filler: Optional[Any] = None


class Layer:
    """Base of all built-in layers. Subclasses override ``param_specs`` (if they own blobs) and ``forward``."""

    #: Layers whose first top is a loss by default (Caffe: type name ends in "Loss").
    default_loss_weight: float = 0.0

    def __init__(self, layer_param: Any, phase: int) -> None:
        self.layer_param = layer_param
        self.phase = phase
        self.name: str = layer_param.name
        self.type: str = layer_param.type

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        """The learnable blobs this layer owns for these bottom shapes (none by default)."""
        return []

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Caffe's AllowForceBackward: whether ``force_backward`` asks this layer for that bottom's gradient.
        Caffe's loss layers say no for their labels, recurrent layers for their sequence indicators."""
        return True

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        """Why real Caffe aborts this layer's backward when it runs with these bottoms needing gradients
        (``propagate_down`` as Net::Init decides it), in Caffe's words; None where it runs. Layers without a
        backward (Threshold, ArgMax) and bottoms Caffe cannot differentiate (indices, selectors) refuse;
        a bottom that needs no gradient just gets none (a zero diff)."""
        return None

    #: False where ``forward`` cannot be traced into a compiled stretch: its top shapes follow the values
    #: (Filter), it carries state from one pass to the next (RNN, LSTM), or it reads data from outside the
    #: tensors on every pass (Data, ImageData, MemoryData, WindowData, HDF5Data, HDF5Output: a trace would
    #: replay its first batch as a constant). Such layers run eagerly, each time.
    traceable = True

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> Optional[List[Shape]]:
        """The tops' shapes, checked as ``forward`` checks them, where the layer can say without running;
        None: the net runs ``forward`` on meta tensors instead. Worth it for the common layers: torch
        computes some meta shapes through Python references whose first use imports torch._dynamo and
        sympy, over a second of every fresh process's first net."""
        return None

    #: True where ``forward`` writes the layer's own parameters (BatchNorm's running statistics outside
    #: use_global_stats): compiled code must then take them as inputs, never freeze them as constants.
    writes_params = False

    #: True where the layer hands out tensors it keeps from one pass to the next (DummyData's constants):
    #: nothing may overwrite those in place.
    keeps_tops = False

    def forward_in_place(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """The tops written over the bottoms' memory, as Caffe's in-place layers do; None where the layer
        has no such form. The runner asks only when nothing else can see the bottoms (runner.in_place)."""
        return None

    def forward_inference(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """A faster form of ``forward`` for the runner's inference loop (no gradient, no hooks, never traced
        or exported), computing the same values up to float rounding; None where the layer has none. It
        may use kernels that autograd, tracing or export do not take (oneDNN tensors, in-place sums)."""
        return None

    def channel_affine(self, bottom_shape: Shape, params: List[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(multiplier, addend)``, each of one value per channel (axis 1), where this layer's forward on a
        single bottom of ``bottom_shape`` is ``x * multiplier + addend`` channel by channel; None where it
        is not such a map. Inference runs a chain of them as one pass, or folds it into the convolution
        before (``runner.fusion``)."""
        return None

    def check_bottoms(self, count_min: int, count_max: Optional[int], bottoms: Sequence[Any]) -> None:
        """Raise a clear error when the layer got a wrong number of bottoms."""
        n = len(bottoms)
        if n < count_min or (count_max is not None and n > count_max):
            want = str(count_min) if count_max == count_min else f"{count_min}..{count_max if count_max is not None else 'n'}"
            raise ValueError(f"layer '{self.name}' ({self.type}) takes {want} bottom blob(s), got {n}")
