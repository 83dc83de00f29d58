"""The executable form of a Caffe net: a ``torch.nn.Module`` that walks its layers over named tensors.

``build_graph`` does what Caffe's Net::Init does (filter, insert splits, set each layer up in order,
decide loss weights and which parameters and blobs need gradients). ``NetGraph.run`` is the hot loop:
one dict look-up and one layer call per layer, no host synchronisation. ``NetGraph.backward`` asks
autograd for exactly the gradients Caffe would compute and files them into the Blobs' diffs.
``SpeedOptions`` (all off by default) trade Caffe's plain float32 execution for speed: autocast,
torch.compile of the built-in layers, Winograd convolutions.
"""
from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from netspec import caffe_pb2, glog, limits
from netspec.filtering import filter_net
from netspec.prototxt import read_prototxt
from netspec.splits import insert_splits
from netspec.upgrade import upgrade_net
from runner import caffe_rng
from runner.blob import Blob
from runner.fillers import fill
from runner.fusion import LAYER, InferenceFusion
from runner.in_place import OwnedBlobs
from runner.init_log import NetInitLog
from runner.layers.base import Layer
from runner.python_layer import PythonLayerHost, instantiate
from runner.registry import layer_class

#: Layer types that only name the net's inputs; their tops are Blobs the user writes into.
INPUT_TYPES = ("Input",)
#: Layer types that autocast leaves in float32, besides losses.
FLOAT32_TYPES = ("Softmax",)


@dataclass(frozen=True)
class SpeedOptions:
    """Opt-in ways to run faster than Caffe's plain float32 loop (each tested against it in
    tests/test_bench.py; measured in BENCHMARKS.md).

    ``autocast``: a dtype (``torch.bfloat16``, ``torch.float16``) that convolutions and matrix products run
    in; losses and Softmax get float32 bottoms with autocast off, and the net's outputs and Python layers'
    bottoms are handed over as float32 (both are read through numpy). Other intermediate blobs hold the
    reduced dtype: read them with ``Blob.tensor()``.
    ``compile``: ``True`` (inductor) or a torch.compile backend name. Each stretch of built-in layers
    between Python/Input layers is traced to one function and compiled per input shape. Inference only:
    it applies to whole forwards that record no gradient (a deploy net, or under ``torch.no_grad()``)
    without forward hooks; otherwise the plain loop runs. The parameters are frozen into the compiled code
    as constants (inductor folds them and packs convolution weights for oneDNN once), so a forward after
    any of them changed (through torch, ``.data``, ``copy_from``, ``share_with``, a reshape) compiles
    afresh; while a numpy array of a stretch's parameters handed out by ``.data`` is still alive, writes
    through it could not be seen, so that stretch runs uncompiled (with a warning). Layers that write their
    own parameters in forward (BatchNorm on batch statistics) take them as inputs instead. On the CPU,
    compiled stretches keep 4-D blobs channels-last, the layout oneDNN computes in (``.data`` gives NCHW).
    A stretch that cannot be traced or compiled runs uncompiled, with a warning.
    ``winograd``: CPU float32 convolutions with stride 1 run in the transform domain (Winograd F(6x6, 3x3) for
    3x3 kernels) through NNPACK when no gradient is needed: about 2x faster, rounding about 1e-5 of the
    output's magnitude per layer (see ``runner.layers.winograd``). Eager float32 forwards only, so neither with
    ``compile`` nor with ``autocast``.
    """
    autocast: Optional[torch.dtype] = None
    compile: Union[bool, str] = False
    winograd: bool = False

    def __post_init__(self) -> None:
        if self.winograd and self.compile:
            raise ValueError("set_speed: winograd runs NNPACK eagerly and cannot be combined with compile")
        if self.winograd and self.autocast is not None:
            raise ValueError("set_speed: winograd (float32 NNPACK) and autocast are alternatives; choose one")


@dataclass
class LayerSlot:
    """One layer of the instantiated net: its Caffe identity, implementation and parameter blobs."""
    name: str
    type: str
    layer_param: Any
    bottoms: List[str]
    tops: List[str]
    impl: Optional[Layer] = None
    python_layer: Any = None
    python_host: Optional[PythonLayerHost] = None
    param_blobs: List[Blob] = field(default_factory=list)
    params: List[torch.nn.Parameter] = field(default_factory=list)
    param_needs_grad: List[bool] = field(default_factory=list)
    top_loss_weights: List[float] = field(default_factory=list)
    #: Caffe's verdicts from Net::Init (``_decide_backward``): whether backward runs this layer, and which
    #: of its bottoms it is asked to differentiate (its ``propagate_down``).
    need_backward: bool = False
    bottom_need_backward: List[bool] = field(default_factory=list)

    @property
    def is_input(self) -> bool:
        return self.type in INPUT_TYPES

    @property
    def keeps_float32(self) -> bool:
        """Whether autocast must leave this layer in float32."""
        return self.type in FLOAT32_TYPES or any(self.top_loss_weights)


class NetGraph(torch.nn.Module):
    """Layers, blobs and parameters of one net, runnable forward and backward."""

    def __init__(self, name: str, force_backward: bool) -> None:
        super().__init__()
        self.name = name
        self.force_backward = force_backward
        self.slots: List[LayerSlot] = []
        self.blobs: "OrderedDict[str, Blob]" = OrderedDict()
        self.input_names: List[str] = []
        self.output_names: List[str] = []
        self.param_bytes = 0  # what the parameters allocated so far take
        self.loss_weights: Dict[str, float] = {}
        self.param_list = torch.nn.ParameterList()
        self.speed = SpeedOptions()
        self._stretches: Optional[List[Tuple[int, int, Optional["_CompiledStretch"]]]] = None
        self._float32_blobs: set = set()
        self._fusion = InferenceFusion()
        #: Parameters built unfilled (``build_graph(defer_fills=True)``) and their fillers, in creation order.
        self.deferred_fills: List[Tuple[torch.nn.Parameter, Any]] = []

    def fill_deferred(self, loaded: set) -> None:
        """Run the fillers of the deferred parameters whose ids are not in ``loaded`` (those a weights file
        set), in the order the layers made them: weights given to the constructor go straight into the
        parameters, never through a filler first."""
        with torch.no_grad():
            for param, filler in self.deferred_fills:
                if id(param) not in loaded:
                    if filler is None:
                        param.zero_()
                    else:
                        fill(param.data, filler)
        self.deferred_fills = []

    @property
    def records_gradients(self) -> bool:
        """Whether a forward records autograd's graph: only where Caffe would back-propagate, i.e. the net
        has a loss (a top with a loss weight) or force_backward. Caffe runs no layer's backward in a net
        without either, so a deploy net records nothing and pycaffe's plain ``net.forward()`` costs what
        ``torch.no_grad()`` code costs."""
        return self.force_backward or any(self.loss_weights.values())

    def set_speed(self, options: SpeedOptions) -> None:
        """Use ``options`` from the next forward on (compiled functions are made afresh)."""
        self.speed = options
        self._stretches = None
        for slot in self.slots:
            if slot.type == "Convolution" and slot.impl is not None:
                slot.impl.use_winograd = options.winograd
        self._float32_blobs = set(self.output_names) | {name for slot in self.slots if slot.python_host is not None
                                                        for name in slot.bottoms}

    # ----- forward -----
    def run(self, start: int, end: int, first_versions: Dict[str, torch.Tensor],
            before: Sequence[Callable[[int], None]] = (), after: Sequence[Callable[[int], None]] = ()) -> List[torch.Tensor]:
        """Run layers ``start..end``; record each blob's first tensor of this pass (its diff is the gradient
        of that tensor, as in-place layers overwrite Caffe's diff on the way down). Returns the weighted
        loss terms of the layers run."""
        losses: List[torch.Tensor] = []
        # without a gradient or hooks, in-place layers may overwrite what only the runner holds
        inference = not torch.is_grad_enabled() and not before and not after
        owned = OwnedBlobs() if inference else None
        with self._autocast():
            if self.speed.compile and inference and (start, end) == (0, len(self.slots) - 1):
                for first, last, stretch in self._plan():
                    if stretch is None or not self._run_stretch(stretch, first_versions, losses):
                        self._run_fused(first, last, first_versions, losses, owned)
                return losses
            if inference:
                self._run_fused(start, end, first_versions, losses, owned)
                return losses
            for index in range(start, end + 1):
                for fn in before:
                    fn(index)
                self._run_slot(index, first_versions, losses, owned)
                for fn in after:
                    fn(index)
        return losses

    def _run_fused(self, start: int, end: int, first_versions: Dict[str, torch.Tensor], losses: List[torch.Tensor],
                   owned: OwnedBlobs) -> None:
        """Layers ``start..end`` of an inference pass, convolutions and the affine layers and ReLU in place
        after them as one step (``runner.fusion``)."""
        for step in self._fusion.steps(self.slots, start, end):
            top = self._fusion.run(step, self.slots, self.blobs, self.speed.autocast) if step.kind != LAYER else None
            if top is None:
                for index in range(step.first, step.last + 1):
                    self._run_slot(index, first_versions, losses, owned)
                continue
            name = self.slots[step.first].tops[0]
            top = self._output_dtype(name, top)
            self.blobs[name].set_tensor(top)
            first_versions[name] = top
            owned.fresh(name)

    def _run_slot(self, index: int, first_versions: Dict[str, torch.Tensor], losses: List[torch.Tensor],
                  owned: Optional[OwnedBlobs] = None) -> None:
        slot = self.slots[index]
        blobs = self.blobs
        if slot.is_input:
            for top in slot.tops:
                tensor = blobs[top].tensor()
                if self.force_backward and not tensor.requires_grad:
                    tensor.requires_grad_(True)
                first_versions[top] = tensor
            return
        bottoms = [blobs[b].tensor() for b in slot.bottoms]
        params = [b.tensor() for b in slot.param_blobs]
        tops = None
        if owned is not None:
            if owned.may_overwrite(slot):
                tops = slot.impl.forward_in_place(bottoms, params)
            if tops is None and self.speed.autocast is None and slot.impl is not None:
                tops = slot.impl.forward_inference(bottoms, params)
        if tops is None:
            tops = self.forward_slot(slot, bottoms, params)
        tops = [self._output_dtype(name, tensor) for name, tensor in zip(slot.tops, tops)]
        if owned is not None:
            owned.record(slot, bottoms + params, tops)
        for top_name, tensor, weight in zip(slot.tops, tops, slot.top_loss_weights):
            blobs[top_name].set_tensor(tensor)
            if top_name not in first_versions or top_name not in slot.bottoms:
                first_versions[top_name] = tensor
            if weight:
                losses.append(tensor.detach().sum() * weight)

    def forward_slot(self, slot: LayerSlot, bottoms: List[torch.Tensor],
                     params: List[torch.Tensor]) -> List[torch.Tensor]:
        """One layer's tops, under the speed options' layout and precision rules."""
        if self.speed.autocast is not None and slot.keeps_float32:
            with torch.autocast(self._device_type(), enabled=False):
                return self._call_layer(slot, [b.float() for b in bottoms], params)
        return self._call_layer(slot, bottoms, params)

    @staticmethod
    def _call_layer(slot: LayerSlot, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        try:
            if slot.python_host is not None:
                return slot.python_host.forward(bottoms)
            return slot.impl.forward(bottoms, params)
        except (RuntimeError, IndexError) as err:
            # e.g. a label outside the score's classes: torch's message, with the layer named
            raise ValueError(f"layer {slot.name!r} ({slot.type}): {err}") from err

    def _output_dtype(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Under autocast, blobs read through numpy (outputs, Python layers' bottoms) go back to float32."""
        if tensor.dtype == self.speed.autocast and name in self._float32_blobs:
            return tensor.float()
        return tensor

    def _device_type(self) -> str:
        first = next(iter(self.blobs.values()), None)
        return first.device.type if first is not None else "cpu"

    def _autocast(self) -> ContextManager:
        if self.speed.autocast is None:
            return nullcontext()
        return torch.autocast(self._device_type(), dtype=self.speed.autocast)

    def _plan(self) -> List[Tuple[int, int, Optional["_CompiledStretch"]]]:
        """The net cut into ``(first, last, stretch)``: maximal stretches of built-in layers, each compiled
        as one function, and single Input/Python/file-reading layers (stretch None) that run as always."""
        if self._stretches is None:
            bounds: List[Tuple[int, int, bool]] = []
            for index, slot in enumerate(self.slots):
                builtin = slot.impl is not None and slot.impl.traceable
                if builtin and bounds and bounds[-1][2]:
                    bounds[-1] = (bounds[-1][0], index, True)
                else:
                    bounds.append((index, index, builtin))
            self._stretches = [(first, last, _CompiledStretch(self, first, last) if builtin else None)
                               for first, last, builtin in bounds]
        return self._stretches

    def _run_stretch(self, stretch: "_CompiledStretch", first_versions: Dict[str, torch.Tensor],
                     losses: List[torch.Tensor]) -> bool:
        """Run a compiled stretch and file its tops; False where it declines and its layers must run one
        by one (see ``_CompiledStretch.__call__``)."""
        tops = stretch([self.blobs[name].tensor() for name in stretch.inputs])
        if tops is None:
            return False
        for name, tensor in zip(stretch.outputs, tops):
            tensor = self._output_dtype(name, tensor)
            self.blobs[name].set_tensor(tensor)
            first_versions[name] = tensor
            if self.loss_weights.get(name):
                losses.append(tensor.detach().sum() * self.loss_weights[name])
        return True

    def forward(self, **inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``nn.Module`` entry point: set the given input tensors, run every layer, return the outputs."""
        for name, tensor in inputs.items():
            self.blobs[name].set_tensor(tensor)
        self.run(0, len(self.slots) - 1, {})
        return {name: self.blobs[name].tensor() for name in self.output_names}

    # ----- backward -----
    def backward_seeds(self) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Outputs to differentiate and their incoming gradients: loss tops (diff = loss weight) and any
        output blob whose diff the user has written."""
        tensors, grads = [], []
        for name in self.output_names + [n for n in self.loss_weights if n not in self.output_names]:
            blob = self.blobs[name]
            if name in self.loss_weights:
                blob.fill_diff_if_unset(self.loss_weights[name])
            elif not blob.has_diff():
                continue
            tensor = blob.tensor()
            if tensor.requires_grad:
                tensors.append(tensor)
                grads.append(blob.diff_tensor())
        return tensors, grads

    def backward(self, start: int, end: int, first_versions: Dict[str, torch.Tensor],
                 retain_graph: bool = True, blob_diffs: bool = True) -> None:
        """Fill blob diffs (overwritten) and parameter diffs (accumulated, as Caffe) for layers end..start."""
        if not first_versions:
            raise RuntimeError(f"net '{self.name}': backward called before forward")
        self._refuse_backward(end, start)
        if start == len(self.slots) - 1:
            seeds, seed_grads = self.backward_seeds()
        else:
            seeds, seed_grads = [], []
            for name in self.slots[start].tops:
                tensor = self.blobs[name].tensor()
                if tensor.requires_grad:
                    seeds.append(tensor)
                    seed_grads.append(self.blobs[name].diff_tensor())
        if not seeds:
            return
        seed_names = {id(t) for t in seeds}
        blob_targets: List[Tuple[str, torch.Tensor]] = []
        param_targets: List[Tuple[Blob, torch.Tensor]] = []
        for slot in self.slots[end:start + 1]:
            for p_blob, param, needs in zip(slot.param_blobs, slot.params, slot.param_needs_grad):
                if needs:
                    param_targets.append((p_blob, param))
            if blob_diffs:
                for top in slot.tops:
                    tensor = first_versions.get(top)
                    if tensor is not None and tensor.requires_grad and id(tensor) not in seed_names:
                        blob_targets.append((top, tensor))
        targets = [t for _, t in blob_targets] + [p for _, p in param_targets]
        if not targets:
            return
        grads = torch.autograd.grad(seeds, targets, seed_grads, retain_graph=retain_graph, allow_unused=True)
        for (name, tensor), grad in zip(blob_targets, grads[:len(blob_targets)]):
            self.blobs[name].set_diff_tensor(grad if grad is not None else torch.zeros_like(tensor))
        with torch.no_grad():
            for (p_blob, _), grad in zip(param_targets, grads[len(blob_targets):]):
                if grad is not None:
                    p_blob.diff_tensor().add_(grad)

    def _refuse_backward(self, end: int, start: int) -> None:
        """Raise where real Caffe aborts: a layer that backward runs through refuses the gradients its bottoms
        are asked for (it has no backward, or a bottom holds indices). Checked before any diff changes."""
        for slot in self.slots[end:start + 1]:
            if slot.need_backward and slot.impl is not None:
                reason = slot.impl.backward_refusal(slot.bottom_need_backward)
                if reason is not None:
                    raise ValueError(f"net '{self.name}': layer '{slot.name}' ({slot.type}) cannot back-propagate, "
                                     f"as in Caffe: {reason}")

    def clear_param_diffs(self) -> None:
        with torch.no_grad():
            for slot in self.slots:
                for p_blob in slot.param_blobs:
                    p_blob.diff_tensor().zero_()

    # ----- shapes, devices, sharing -----
    def reshape(self) -> None:
        """Re-derive every blob shape from the input blobs, as Caffe's Net::Reshape."""
        for slot in self.slots:
            if slot.is_input:
                continue
            _set_top_shapes(self, slot)

    def to(self, device: torch.device) -> "NetGraph":  # type: ignore[override]
        for blob in self.blobs.values():
            blob.to(device)
        moved: Dict[int, torch.nn.Parameter] = {}
        for slot in self.slots:
            for i, p_blob in enumerate(slot.param_blobs):
                old = slot.params[i]
                if id(old) not in moved:
                    new = torch.nn.Parameter(old.detach().to(device), requires_grad=old.requires_grad)
                    moved[id(old)] = new
                    p_blob.to(device)
                    p_blob.set_tensor(new)
                slot.params[i] = moved[id(old)]
        self.param_list = torch.nn.ParameterList(list({id(p): p for s in self.slots for p in s.params}.values()))
        return self

    def share_params_with(self, other: "NetGraph") -> None:
        """Point this net's parameters at ``other``'s for every layer name both have."""
        theirs = {slot.name: slot for slot in other.slots}
        for slot in self.slots:
            source = theirs.get(slot.name)
            if source is None or not slot.params:
                continue
            if len(source.params) != len(slot.params):
                raise ValueError(f"share_with: layer '{slot.name}' has {len(slot.params)} parameter blobs here "
                                 f"and {len(source.params)} in net '{other.name}'")
            for i, (mine, src) in enumerate(zip(slot.params, source.params)):
                if tuple(mine.shape) != tuple(src.shape):
                    raise ValueError(f"share_with: layer '{slot.name}' param {i} has shape {tuple(mine.shape)} here "
                                     f"and {tuple(src.shape)} in net '{other.name}'")
            slot.params = list(source.params)
            slot.param_blobs = list(source.param_blobs)
        self.param_list = torch.nn.ParameterList(list({id(p): p for s in self.slots for p in s.params}.values()))


class _CompiledStretch:
    """Built-in layers ``first..last`` as one function of the blobs they read from outside, returning every
    blob they write.

    The function is traced to aten operations on fake tensors (a layer whose forward looks at values
    cannot be traced; layers must not, as shapes are found on meta tensors too) and handed to
    ``torch.compile``; one compiled function per input shapes, strides, dtypes and devices, and number of
    threads. The parameters
    are attributes of the traced module, which inductor's freezing turns into constants; the compiled
    functions are dropped when any parameter's ``Blob.data_version`` changes. If tracing or compiling
    fails, the stretch declines from then on (its layers run one by one) and a warning says why.
    """

    def __init__(self, graph: NetGraph, first: int, last: int) -> None:
        self.graph = graph
        self.slots = graph.slots[first:last + 1]
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        for slot in self.slots:
            self.inputs += [b for b in slot.bottoms if b not in self.outputs and b not in self.inputs]
            self.outputs += [t for t in slot.tops if t not in self.outputs]
        #: parameters may be frozen unless a layer writes its own in forward (they are inputs then)
        self.freezable = not any(slot.impl.writes_params for slot in self.slots)
        self.failure: Optional[str] = None
        self._compiled: Dict[tuple, Callable] = {}
        self._frozen_versions: Optional[list] = None
        self._warned_live_arrays = False

    def eager(self, *flat: torch.Tensor) -> List[torch.Tensor]:
        """The stretch run layer by layer: ``flat`` is the outside bottoms, then every parameter in order."""
        env = dict(zip(self.inputs, flat))
        params = iter(flat[len(self.inputs):])
        for slot in self.slots:
            tops = self.graph.forward_slot(slot, [env[b] for b in slot.bottoms],
                                           [next(params) for _ in slot.param_blobs])
            env.update(zip(slot.tops, tops))
        return [env[name] for name in self.outputs]

    def __call__(self, inputs: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """The stretch's tops, or None where it declines: it failed to compile, or a parameter's numpy array
        is alive (frozen constants could not follow writes through it)."""
        if self.failure is not None:
            return None
        blobs = [b for slot in self.slots for b in slot.param_blobs]
        params = [b.tensor() for b in blobs]
        if self.freezable and not self._parameters_frozen(blobs):
            return None
        if self.graph._device_type() == "cpu":  # oneDNN's layout: no reorder of activations per layer
            inputs = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in inputs]
        args = inputs if self.freezable else inputs + params
        # oneDNN's packed weights suit the number of threads they were packed for (runner.fusion)
        key = (self.graph.speed.autocast, torch.get_num_threads()) + tuple(
            (t.shape, t.stride(), t.dtype, t.device) for t in args)
        compiled = self._compiled.get(key)
        from torch._inductor import config as inductor_config  # a second to import: only where compile is on
        try:
            if compiled is None:
                compiled = self._compile(inputs, params)
            # the trace already holds autocast's casts; autocast must not apply them a second time
            with torch.autocast(self.graph._device_type(), enabled=False), inductor_config.patch(freezing=True):
                tops = compiled(*args)
        except Exception as err:  # any tracing or backend failure: this stretch stays eager
            self.failure = f"{type(err).__name__}: {err}".splitlines()[0]
            warnings.warn(f"net '{self.graph.name}': layers {self._names()} run without torch.compile "
                          f"({self.failure})", RuntimeWarning, stacklevel=3)
            return None
        self._compiled[key] = compiled
        return list(tops)

    def _parameters_frozen(self, blobs: List[Blob]) -> bool:
        """Whether the compiled functions may hold ``blobs`` as constants: none has a numpy array alive. Drops
        the compiled functions when any changed since they were made."""
        versions = [blob.data_version() for blob in blobs]
        if any(version is None for version in versions):
            if not self._warned_live_arrays:
                self._warned_live_arrays = True
                warnings.warn(f"net '{self.graph.name}': layers {self._names()} run uncompiled while a numpy array "
                              f"of their parameters (from .data) is alive: compiled code holds parameters as "
                              f"constants and could not see writes through it", RuntimeWarning, stacklevel=4)
            return False
        if versions != self._frozen_versions:
            self._compiled.clear()
            self._frozen_versions = versions
        return True

    def _compile(self, inputs: List[torch.Tensor], params: List[torch.Tensor]) -> Callable:
        backend = "inductor" if self.graph.speed.compile is True else self.graph.speed.compile
        traced = make_fx(self.eager, tracing_mode="fake")(*inputs, *params)
        if self.freezable:
            _parameters_as_attributes(traced, len(inputs), params)
        return torch.compile(traced, backend=backend)

    def _names(self) -> str:
        return f"{self.slots[0].name}..{self.slots[-1].name}"


def _parameters_as_attributes(traced: torch.fx.GraphModule, skip: int, params: List[torch.Tensor]) -> None:
    """Turn the traced function's arguments after the first ``skip`` into buffers of its module holding
    ``params``: dynamo lifts buffers as the module's own state, which inductor's freezing may fold."""
    placeholders = [node for node in traced.graph.nodes if node.op == "placeholder"][skip:]
    for index, (node, param) in enumerate(zip(placeholders, params)):
        name = f"caffe_param_{index}"
        traced.register_buffer(name, param.detach())
        with traced.graph.inserting_before(node):
            node.replace_all_uses_with(traced.graph.get_attr(name))
        traced.graph.erase_node(node)
    traced.recompile()


# ----------------------------------------------------------------------------------------------------
# building

def load_net_param(source: Any) -> "caffe_pb2.NetParameter":
    """A NetParameter from a prototxt path or a message (copied), upgraded from V0/V1 if needed (a file's
    upgrade is logged as Caffe logs it)."""
    if isinstance(source, caffe_pb2.NetParameter):
        return upgrade_net(source)
    path = os.fspath(source)
    return upgrade_net(read_prototxt(path, caffe_pb2.NetParameter), source=path)


def build_graph(source: Any, phase: int, level: int, stages: List[str], device: torch.device,
                defer_fills: bool = False) -> NetGraph:
    """Caffe's Net::Init on a prototxt path or NetParameter, logging what it logs (runner.init_log).
    ``defer_fills``: leave the parameters unfilled (their memory untouched) until
    ``NetGraph.fill_deferred``, for weights about to be copied in."""
    param = load_net_param(source)
    limits.NET_LAYERS.check(len(param.layer) + len(param.layers), f"net '{param.name}'")
    report = NetInitLog()
    filtered = filter_net(param, phase, level, stages, report=report.active)
    report.parameters(filtered)
    with_splits = insert_splits(filtered)
    graph = NetGraph(param.name, param.force_backward)
    search = [os.path.dirname(os.path.abspath(os.fspath(source)))] if not isinstance(source, caffe_pb2.NetParameter) else []
    search.append(os.getcwd())
    available: Dict[str, None] = {}  # Caffe's available blobs: produced and not consumed since
    shared: Dict[str, Tuple[torch.nn.Parameter, Blob]] = {}
    for layer_param in with_splits.layer:
        if not layer_param.HasField("phase"):
            layer_param.phase = phase
        report.creating(layer_param)
        slot = _make_slot(graph, layer_param, phase, search, device)
        report.connecting(slot.name, slot.bottoms, slot.tops)
        glog.release(getattr(slot.impl, "setup_records", []))  # the lines of its LayerSetUp
        _check_bottoms_exist(graph, slot)
        for name in slot.bottoms:
            available.pop(name, None)
        available.update(dict.fromkeys(slot.tops))  # an in-place top is available again
        _create_tops(graph, slot, device)
        report.setting_up(layer_param)
        if slot.python_host is not None:
            slot.python_host.setup()
        elif not slot.is_input:
            _create_params(graph, slot, shared, device, defer_fills)
            _set_top_shapes(graph, slot)
        report.set_up(layer_param, [graph.blobs[name].shape for name in slot.tops], slot.top_loss_weights,
                      len(slot.python_layer.blobs) if slot.python_layer is not None else len(slot.params))
        graph.slots.append(slot)
    _decide_gradients(graph)
    _decide_backward(graph)
    graph.output_names = sorted(available)  # Caffe collects the leftover blobs in a std::set
    graph.param_list = torch.nn.ParameterList(list({id(p): p for s in graph.slots for p in s.params}.values()))
    report.done(graph.output_names)
    return graph


def _make_slot(graph: NetGraph, lp: Any, phase: int, search: List[str], device: torch.device) -> LayerSlot:
    slot = LayerSlot(lp.name, lp.type, lp, list(lp.bottom), list(lp.top))
    if lp.type == "Python":
        slot.python_layer = instantiate(lp, phase, search)
    elif not slot.is_input:
        slot.impl = layer_class(lp.type, lp.name)(lp, phase)
    default = slot.impl.default_loss_weight if slot.impl is not None else 0.0
    weights = list(lp.loss_weight)
    if not weights and default and slot.tops:
        weights = [default]
        lp.loss_weight.append(default)  # Caffe's LossLayer records it in its LayerParameter too
    if weights and len(weights) != len(slot.tops):
        # Caffe's Layer::SetLossWeights: none, or one per top (a loss layer's default counts as one)
        raise ValueError(f"layer '{lp.name}' ({lp.type}): {len(weights)} loss_weight value(s) for {len(slot.tops)} "
                         f"top(s); loss_weight must be unspecified or specified once per top blob")
    slot.top_loss_weights = weights or [0.0] * len(slot.tops)
    return slot


#: Caffe's Blob refuses more than INT_MAX elements; past that, torch would fail without naming the layer.
MAX_BLOB_COUNT = 2 ** 31 - 1


def _check_count(slot: LayerSlot, what: str, shape: Sequence[int]) -> None:
    count = 1
    for dim in shape:
        count *= int(dim)
    if count > MAX_BLOB_COUNT:
        raise ValueError(f"layer {slot.name!r} ({slot.type}): {what} of shape {tuple(shape)} has {count} elements, "
                         f"more than Caffe's limit of {MAX_BLOB_COUNT}")


def _check_bottoms_exist(graph: NetGraph, slot: LayerSlot) -> None:
    for name in slot.bottoms:
        if name not in graph.blobs:
            raise ValueError(f"layer '{slot.name}' ({slot.type}): unknown bottom blob '{name}' "
                             f"(no earlier layer produces it)")


def _create_tops(graph: NetGraph, slot: LayerSlot, device: torch.device) -> None:
    for i, name in enumerate(slot.tops):
        in_place = i < len(slot.bottoms) and slot.bottoms[i] == name
        if name in graph.blobs and not in_place:
            raise ValueError(f"layer '{slot.name}' ({slot.type}): top blob '{name}' is produced by more than "
                             f"one layer (only in-place tops may reuse a name)")
        if not in_place:
            graph.blobs[name] = Blob((), device)
        weight = slot.top_loss_weights[i]
        if weight:
            graph.loss_weights[name] = weight
            graph.blobs[name].fill_diff_if_unset(weight)
    if slot.is_input:
        shapes = list(slot.layer_param.input_param.shape)
        if len(shapes) not in (1, len(slot.tops)):
            raise ValueError(f"layer '{slot.name}' (Input): {len(shapes)} shapes for {len(slot.tops)} tops")
        for i, name in enumerate(slot.tops):
            dims = [int(d) for d in shapes[0 if len(shapes) == 1 else i].dim]
            _check_count(slot, f"top '{name}'", dims)
            try:
                graph.blobs[name].reshape(*dims)
            except RuntimeError as err:  # e.g. the allocation does not fit in memory
                raise MemoryError(f"layer {slot.name!r} (Input): cannot allocate top '{name}' of shape "
                                  f"{tuple(dims)}: {err}") from err
            graph.input_names.append(name)
    elif slot.python_layer is not None:
        slot.python_host = PythonLayerHost(slot.python_layer, [graph.blobs[b] for b in slot.bottoms],
                                           [graph.blobs[t] for t in slot.tops])


def _param_lr(lp: Any, index: int) -> float:
    return lp.param[index].lr_mult if index < len(lp.param) else 1.0


def _create_params(graph: NetGraph, slot: LayerSlot, shared: Dict[str, Tuple[torch.nn.Parameter, Blob]],
                   device: torch.device, defer_fills: bool = False) -> None:
    bottom_shapes = [graph.blobs[b].shape for b in slot.bottoms]
    try:
        specs = slot.impl.param_specs(bottom_shapes)
    except (TypeError, IndexError, ZeroDivisionError, RuntimeError) as err:
        # a layer's own arithmetic failing on odd input is still that layer's error
        raise ValueError(f"layer '{slot.name}' ({slot.type}): {err}") from err
    for i, spec in enumerate(specs):
        _check_count(slot, f"parameter {i}", spec.shape)
        share_name = slot.layer_param.param[i].name if i < len(slot.layer_param.param) else ""
        if share_name and share_name in shared:
            param, p_blob = shared[share_name]
            if tuple(param.shape) != tuple(spec.shape):
                raise ValueError(f"layer '{slot.name}': shared param '{share_name}' has shape {tuple(param.shape)}, "
                                 f"this layer needs {tuple(spec.shape)}")
            if spec.filler is not None and caffe_rng.stream() is not None:
                fill(torch.empty(tuple(spec.shape)), spec.filler)  # Caffe fills the layer's own blobs first
        else:
            graph.param_bytes += 4 * math.prod(spec.shape)
            limits.PARAM_BYTES.check(graph.param_bytes, f"layer '{slot.name}' ({slot.type}): the net's parameters "
                                                        f"up to its blob {i} of shape {tuple(spec.shape)} take")
            if defer_fills:
                param = torch.nn.Parameter(torch.empty(tuple(spec.shape), dtype=torch.float32, device=device))
                graph.deferred_fills.append((param, spec.filler))
            else:
                data = torch.zeros(tuple(spec.shape), dtype=torch.float32)
                if spec.filler is not None:
                    fill(data, spec.filler)
                param = torch.nn.Parameter(data.to(device))
            p_blob = Blob(tensor=param)  # its diff is allocated at the first backward or .diff access
            if share_name:
                shared[share_name] = (param, p_blob)
        slot.params.append(param)
        slot.param_blobs.append(p_blob)


def _set_top_shapes(graph: NetGraph, slot: LayerSlot) -> None:
    """Size the tops: by the layer's own rule where it has one, else on meta tensors."""
    if slot.python_host is not None:
        slot.python_layer.reshape(slot.python_host.bottoms, slot.python_host.tops)
        return
    bottom_shapes = [graph.blobs[b].shape for b in slot.bottoms]
    try:
        shapes = slot.impl.top_shapes(bottom_shapes, [tuple(p.shape) for p in slot.params])
        if shapes is None:
            shapes = meta_top_shapes(slot, bottom_shapes)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"layer '{slot.name}' ({slot.type}) cannot take bottoms of shapes "
                         f"{[tuple(s) for s in bottom_shapes]}: {err}") from err
    if len(shapes) != len(slot.tops):
        raise ValueError(f"layer '{slot.name}' ({slot.type}) makes {len(shapes)} tops, the prototxt names "
                         f"{len(slot.tops)}")
    for name, shape in zip(slot.tops, shapes):
        _check_count(slot, f"top '{name}'", shape)
        blob = graph.blobs[name]
        if blob.shape != tuple(shape):
            blob.reshape(*shape)
        if name in graph.loss_weights:
            blob.fill_diff_if_unset(graph.loss_weights[name])


def meta_top_shapes(slot: LayerSlot, bottom_shapes: Sequence[Sequence[int]]) -> List[Tuple[int, ...]]:
    """The tops' shapes from running the layer on meta tensors (no arithmetic, no memory)."""
    meta_bottoms = [torch.empty(tuple(shape), device="meta") for shape in bottom_shapes]
    meta_params = [torch.empty(tuple(p.shape), device="meta") for p in slot.params]
    with torch.no_grad():
        return [tuple(t.shape) for t in slot.impl.forward(meta_bottoms, meta_params)]


def _decide_gradients(graph: NetGraph) -> None:
    """Which parameters get gradients: lr_mult != 0, or all of them under force_backward (Caffe's rule).
    A parameter shared between layers needs a gradient if any of its users asks for one."""
    needed: Dict[int, bool] = {}
    for slot in graph.slots:
        slot.param_needs_grad = [graph.force_backward or _param_lr(slot.layer_param, i) != 0
                                 for i in range(len(slot.params))]
        for param, needs in zip(slot.params, slot.param_needs_grad):
            needed[id(param)] = needed.get(id(param), False) or needs
    for slot in graph.slots:
        for param in slot.params:
            param.requires_grad_(needed[id(param)])


def _decide_backward(graph: NetGraph) -> None:
    """Caffe's Net::Init bookkeeping of backward, kept on each slot: a layer needs backward when a bottom
    blob does or it has a parameter with lr_mult != 0, and then its tops do; ``propagate_down`` overrides
    the bottoms' flags (not the layer's); a layer under no loss, or whose tops' gradients nobody wants,
    needs none; ``force_backward`` then runs every layer and asks for every bottom the layer allows
    (``allow_force_backward``). Autograd computes the gradients; these flags say where Caffe would refuse."""
    blob_need: Dict[str, bool] = {}
    for slot in graph.slots:
        lp = slot.layer_param
        if len(lp.propagate_down) not in (0, len(slot.bottoms)):
            raise ValueError(f"layer '{slot.name}' ({slot.type}): {len(lp.propagate_down)} propagate_down values "
                             f"for {len(slot.bottoms)} bottoms; give none, or one per bottom")
        slot.bottom_need_backward = (list(lp.propagate_down) if len(lp.propagate_down)
                                     else [blob_need.get(b, False) for b in slot.bottoms])
        num_params = len(getattr(slot.python_layer, "blobs", ())) if slot.python_layer is not None else len(slot.params)
        need = any(blob_need.get(b, False) for b in slot.bottoms) or \
            any(_param_lr(lp, i) != 0 for i in range(num_params))
        for i, top in enumerate(slot.tops):
            in_place = i < len(slot.bottoms) and slot.bottoms[i] == top
            blob_need[top] = need or (in_place and blob_need.get(top, False))
        slot.need_backward = need
    under_loss: set = set()
    skipped: set = set()
    for slot in reversed(graph.slots):
        contributes = any(w != 0 or top in under_loss for top, w in zip(slot.tops, slot.top_loss_weights))
        if not contributes or (slot.need_backward and all(top in skipped for top in slot.tops)):
            slot.need_backward = False
            slot.bottom_need_backward = [False] * len(slot.bottoms)
        if contributes:
            under_loss.update(slot.bottoms)
        skipped.update(b for b, needs in zip(slot.bottoms, slot.bottom_need_backward) if not needs)
    if graph.force_backward:
        for slot in graph.slots:
            slot.need_backward = True
            allow = slot.impl.allow_force_backward if slot.impl is not None else (lambda index: True)
            slot.bottom_need_backward = [needs or allow(i) for i, needs in enumerate(slot.bottom_need_backward)]
