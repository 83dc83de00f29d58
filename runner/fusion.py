"""How an inference pass runs layers together: a convolution with the per-channel affine layers (BatchNorm on
stored statistics, Scale, Bias) and the ReLU that work in place on its top, as one oneDNN call with the affine
layers folded into its weights; a chain of affine layers alone as one pass over the blob.

Caffe runs such layers one after the other; where they work in place (``bottom == top``) only the last one's
values remain in the blob, so computing them at once cannot be told apart by pycaffe code, as long as nothing
looks in between: no gradient is recorded, no forward hook is set, and the whole chain lies in the range of
layers run. Only then does ``NetGraph.run`` ask for a plan. A BatchNorm that writes a new top (MobileNet v2,
DenseNet) starts an affine chain of its own; the convolution's top is then a blob pycaffe may read, so it is
computed as always.

On the CPU a convolution's weights are reordered once into oneDNN's blocked layout (torch's own convolution
reorders them at every call, which costs as much as the arithmetic for a big layer on a small input), and
its output comes back channels-last, the layout the oneDNN kernels of the layers after it (pooling,
depthwise convolution, batch norm) run fastest in; ``Blob.data`` turns a blob back into NCHW when Python
reads it. Folding scales each output channel's filter and bias, ``conv(x, W * m) + b * m + a``: the same
values up to float rounding. What a step computes from parameters is kept until a parameter involved changes
(``Blob.data_version``); while a numpy array of one of them is alive it is computed afresh at every forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from runner.blob import Blob
from runner.layers.base import Layer
from runner.layers.shape import canonical_axis

LAYER, AFFINE, CONVOLUTION = "layer", "affine", "convolution"


@dataclass(frozen=True)
class Step:
    """Layers ``first..last`` of an inference pass and how they run: ``LAYER`` (one layer, as always),
    ``AFFINE`` (a chain of per-channel affine layers as one pass) or ``CONVOLUTION`` (a convolution with the
    affine chain in place after it folded in); ``relu``: an in-place ReLU ends the step (the last layer)."""
    first: int
    last: int
    kind: str = LAYER
    relu: bool = False


@dataclass
class _Constants:
    """What a step computed from the parameters, and the parameters' versions it was computed from."""
    versions: list
    axes: Tuple[int, int]                       # the chain blob's number of axes and channels
    multiplier: Optional[torch.Tensor] = None   # AFFINE: x * multiplier + addend, as batch_norm's weight and
    addend: Optional[torch.Tensor] = None       # bias over a mean of zeros and a variance of ones
    zeros: Optional[torch.Tensor] = None
    ones: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None       # CONVOLUTION, folded
    bias: Optional[torch.Tensor] = None
    packed: Optional[torch.Tensor] = None       # the weight in oneDNN's layout, for (input shape, threads, dtype)
    packed_for: Optional[Tuple[torch.Size, int, torch.dtype]] = None
    geometry: Optional[tuple] = None            # padding, stride, dilation, groups


class InferenceFusion:
    """The plans (per range of layers run) and what their steps compute from parameters, of one net."""

    def __init__(self) -> None:
        self._plans: Dict[Tuple[int, int], List[Step]] = {}
        self._constants: Dict[Tuple[int, int], _Constants] = {}

    def steps(self, slots: Sequence[Any], start: int, end: int) -> List[Step]:
        """Layers ``start..end`` cut into steps."""
        plan = self._plans.get((start, end))
        if plan is None:
            plan = self._plans[(start, end)] = _plan(slots, start, end)
        return plan

    def run(self, step: Step, slots: Sequence[Any], blobs: Dict[str, Blob],
            autocast: Optional[torch.dtype] = None) -> Optional[torch.Tensor]:
        """The top of a fused step, or None where its layers must run one by one (a layer's parameters
        or this input do not allow it). Under ``autocast`` (a reduced dtype) only convolutions fuse, and
        compute in that dtype."""
        first = slots[step.first]
        x = blobs[first.bottoms[0]].tensor()
        if x.dim() < 2 or (autocast is not None and step.kind == AFFINE):
            return None
        if step.kind == AFFINE:
            constants = self._computed(step, slots, tuple(x.shape))
            if constants is None:
                return None
            # batch_norm's inference kernel with mean 0, variance 1 and eps 0 is exactly x * m + a, and runs
            # at memory speed (twice as fast as addcmul broadcasting over the channels)
            y = F.batch_norm(x, constants.zeros, constants.ones, constants.multiplier, constants.addend,
                             False, 0.0, 0.0)
            return _relu_(y, slots[step.last].impl.negative_slope) if step.relu else y
        conv = first.impl
        if canonical_axis(conv, conv.p.axis, x.dim()) != 1 or len(first.param_blobs) != 1 + conv.p.bias_term:
            return None
        constants = self._computed(step, slots, (x.shape[0], conv.p.num_output) + tuple(x.shape[2:]))
        if constants is None:
            return None
        slope = slots[step.last].impl.negative_slope if step.relu else None
        dtype = autocast or torch.float32
        if _packable(conv, x, dtype):
            return _packed_convolution(conv, x if x.dtype == dtype else x.to(dtype), constants, slope)
        y = conv.convolve([x], constants.weight, constants.bias)[0]  # autocast, if on, casts
        return y if slope is None else _relu_(y, slope)

    def _computed(self, step: Step, slots: Sequence[Any], shape: Tuple[int, ...]) -> Optional[_Constants]:
        """The step's constants for a chain blob of ``shape``, kept while no parameter involved changes."""
        versions = [blob.data_version() for slot in slots[step.first:step.last + 1] for blob in slot.param_blobs]
        key = (step.first, step.last)
        cached = self._constants.get(key)
        if cached is not None and cached.versions == versions and cached.axes == (len(shape), shape[1]):
            return cached
        computed = _step_parameters(step, slots, shape)
        if computed is None:
            return None
        constants = _Constants(versions, (len(shape), shape[1]))
        if step.kind == AFFINE:
            constants.multiplier, constants.addend = computed
            constants.zeros, constants.ones = torch.zeros_like(computed[0]), torch.ones_like(computed[0])
        else:
            constants.weight, constants.bias = computed
        if all(version is not None for version in versions):
            self._constants[key] = constants
        else:  # a numpy array of a parameter is alive: it may be written before the next forward
            self._constants.pop(key, None)
        return constants



def _packed_convolution(conv: Any, x: torch.Tensor, constants: _Constants, slope: Optional[float]) -> torch.Tensor:
    """oneDNN's convolution with the weight packed once per input shape, number of threads and dtype (oneDNN
    picks the blocked layout for them; a weight packed for others is reordered again inside every call),
    the ReLU (if any) applied to its output on the way out."""
    packed_for = (x.shape, torch.get_num_threads(), x.dtype)
    if constants.packed is None or constants.packed_for != packed_for:
        conv._checked([tuple(x.shape)], tuple(constants.weight.shape))  # Caffe's checks, once per shape
        g = conv._geometry(x.dim())
        constants.geometry = (list(g.pad), list(g.stride), list(g.dilation), conv.p.group)
        constants.packed = torch.ops.mkldnn._reorder_convolution_weight(constants.weight.to(x.dtype),
                                                                        *constants.geometry, list(x.shape))
        constants.packed_for = packed_for
    attr, scalars = ("none", []) if slope is None else ("relu", []) if slope == 0.0 else ("leaky_relu", [slope])
    if not torch.is_autocast_enabled("cpu"):
        return torch.ops.mkldnn._convolution_pointwise(x, constants.packed, constants.bias, *constants.geometry,
                                                       attr, scalars, "")
    with torch.autocast("cpu", enabled=False):  # the dtypes are already the ones wanted
        return torch.ops.mkldnn._convolution_pointwise(x, constants.packed, constants.bias, *constants.geometry,
                                                       attr, scalars, "")


#: Dtypes oneDNN's CPU convolutions compute in here (float16 needs hardware this project has not measured).
PACKED_DTYPES = (torch.float32, torch.bfloat16)


def _packable(conv: Any, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether oneDNN's convolution with a packed weight takes this input in ``dtype``: a 2-D convolution on
    the CPU, not switched to NNPACK (``winograd``), on a non-empty batch."""
    return (x.device.type == "cpu" and dtype in PACKED_DTYPES and x.dtype in (torch.float32, dtype)
            and x.dim() == 4 and x.numel() > 0 and not conv.use_winograd and torch.backends.mkldnn.is_available())


def _relu_(y: torch.Tensor, slope: float) -> torch.Tensor:
    """Caffe's ReLU on a fresh tensor, in place."""
    return torch.relu_(y) if slope == 0.0 else F.leaky_relu_(y, slope)


def _fold(weight: torch.Tensor, bias: Optional[torch.Tensor], multiplier: torch.Tensor,
          addend: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A convolution's weight and bias with ``y * multiplier + addend`` applied to its output channels."""
    scaled = weight * multiplier.reshape((-1,) + (1,) * (weight.dim() - 1))
    return scaled, addend if bias is None else torch.addcmul(addend, bias, multiplier)


def _step_parameters(step: Step, slots: Sequence[Any],
                     shape: Tuple[int, ...]) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """What a step computes from its layers' parameters for a chain blob of ``shape``: the chain's
    ``(multiplier, addend)`` (AFFINE), or the convolution's weight and bias with the chain folded in."""
    chain = slots[step.first + (step.kind == CONVOLUTION):step.last + (not step.relu)]
    affine = _combined_affine(chain, shape) if chain else None
    if chain and affine is None:
        return None
    if step.kind == AFFINE:
        return affine
    conv = slots[step.first]
    weight, *rest = (blob.tensor().detach() for blob in conv.param_blobs)
    bias = rest[0] if conv.impl.p.bias_term else None
    return (weight, bias) if affine is None else _fold(weight, bias, *affine)


def _combined_affine(chain: Sequence[Any], shape: Tuple[int, ...]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The chain's layers, each on a blob of ``shape``, as one ``x * multiplier + addend``."""
    multiplier = addend = None
    for slot in chain:
        affine = slot.impl.channel_affine(shape, [blob.tensor() for blob in slot.param_blobs])
        if affine is None:
            return None
        m, a = affine
        if multiplier is None:
            multiplier, addend = m, a
        else:
            multiplier, addend = multiplier * m, torch.addcmul(a, addend, m)
    return multiplier, addend


def _plan(slots: Sequence[Any], start: int, end: int) -> List[Step]:
    steps: List[Step] = []
    index = start
    while index <= end:
        slot = slots[index]
        kind = AFFINE if _is_affine(slot) else CONVOLUTION if _is_convolution(slot) else LAYER
        if kind != LAYER:
            last = _in_place_chain_end(slots, index + 1, end, slot.tops[0])
            relu = last < end and _is_in_place_relu(slots[last + 1], slot.tops[0])
            step = Step(index, last + relu, kind, relu)
        else:
            step = Step(index, index)
        steps.append(step)
        index = step.last + 1
    return steps


def _in_place_chain_end(slots: Sequence[Any], begin: int, end: int, blob: str) -> int:
    """The last index of the affine layers from ``begin`` on that work in place on ``blob``."""
    index = begin
    while index <= end and _is_affine(slots[index]) and slots[index].bottoms == slots[index].tops == [blob]:
        index += 1
    return index - 1


def _single(slot: Any) -> bool:
    return (slot.impl is not None and len(slot.bottoms) == 1 and len(slot.tops) == 1
            and not any(slot.top_loss_weights))


def _is_affine(slot: Any) -> bool:
    """Whether a layer may belong to an affine chain: its type can be a per-channel affine map (its
    parameters decide at run time)."""
    return _single(slot) and type(slot.impl).channel_affine is not Layer.channel_affine


def _is_convolution(slot: Any) -> bool:
    return _single(slot) and slot.type == "Convolution"


def _is_in_place_relu(slot: Any, blob: str) -> bool:
    return _single(slot) and slot.type == "ReLU" and slot.bottoms == slot.tops == [blob]
