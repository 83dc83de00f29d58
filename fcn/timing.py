"""``fcn time``: Caffe's ``caffe time`` — per-layer forward and backward milliseconds of a net.

Like the caffe tool it does one untimed forward/backward pass, then times ``iterations`` passes and
reports each layer's average. Forward times come from the runner's own layer loop (its before/after
hooks). Backward is autograd's, which runs the whole net in one call; to time it per layer, each layer's
backward is asked for separately, from its tops' gradients to its bottoms' and parameters' gradients,
in reverse layer order (autograd only runs the part of the graph between the two). On a GPU every
measurement is bracketed by a device synchronisation, so a layer is charged for its own kernels.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from tqdm import tqdm

from runner.graph import LayerSlot, NetGraph
from runner.net import Net

Tensors = List[torch.Tensor]


@dataclass
class LayerTime:
    """One layer's average forward and backward time over the timed iterations, in milliseconds."""
    name: str
    type: str
    forward_ms: float
    backward_ms: float


def _synchronizer(graph: NetGraph) -> Callable[[], None]:
    devices = {blob.device for blob in graph.blobs.values() if blob.device.type == "cuda"}
    return (lambda: [torch.cuda.synchronize(d) for d in devices]) if devices else (lambda: None)


def _forward(graph: NetGraph, sync: Callable[[], None], forward_ms: List[float]
             ) -> List[Tuple[Tensors, Tensors]]:
    """One timed forward pass; adds each layer's milliseconds and returns its (bottoms, tops) tensors."""
    seen: List[Tuple[Tensors, Tensors]] = []
    started = [0.0]

    def before(index: int) -> None:
        seen.append(([graph.blobs[b].tensor() for b in graph.slots[index].bottoms], []))
        sync()
        started[0] = time.perf_counter()

    def after(index: int) -> None:
        sync()
        forward_ms[index] += (time.perf_counter() - started[0]) * 1e3
        seen[index][1].extend(graph.blobs[t].tensor() for t in graph.slots[index].tops)

    graph.run(0, len(graph.slots) - 1, {}, [before], [after])
    return seen


def _backward(graph: NetGraph, seen: List[Tuple[Tensors, Tensors]], sync: Callable[[], None],
              backward_ms: List[float]) -> None:
    """One backward pass, layer by layer from the last; adds each layer's milliseconds. Gradients reaching
    a tensor are summed by tensor identity (every tensor of the pass is alive, so ids are unique)."""
    grads: Dict[int, torch.Tensor] = {}
    for index in reversed(range(len(graph.slots))):
        slot: LayerSlot = graph.slots[index]
        bottoms, tops = seen[index]
        # A top that is its bottom (an identity layer) passes its gradient on untouched.
        outputs = [(t, w) for t, w in zip(tops, slot.top_loss_weights)
                   if t.requires_grad and not any(t is b for b in bottoms)]
        needy = [b for b in bottoms if b.requires_grad]
        inputs = needy + [p for p in slot.params if p.requires_grad]
        if not outputs or not inputs:
            continue
        seeds = [grads[id(t)] if id(t) in grads else torch.full_like(t, w) for t, w in outputs]
        sync()
        started = time.perf_counter()
        found = torch.autograd.grad([t for t, _ in outputs], inputs, seeds, retain_graph=True, allow_unused=True)
        sync()
        backward_ms[index] += (time.perf_counter() - started) * 1e3
        for bottom, grad in zip(needy, found):
            if grad is not None:
                grads[id(bottom)] = grads[id(bottom)] + grad if id(bottom) in grads else grad


def time_pass(net: Net, forward_ms: List[float], backward_ms: List[float], forward_only: bool = False
              ) -> Tuple[float, float]:
    """One timed forward (and backward) pass of ``net``: adds each layer's milliseconds into ``forward_ms`` and
    ``backward_ms`` (one entry per layer) and returns the milliseconds of the whole forward and backward
    passes (Caffe's forward_timer and backward_timer, which also count the time between layers)."""
    graph = net.graph
    sync = _synchronizer(graph)
    with torch.set_grad_enabled(not forward_only):
        started = time.perf_counter()
        seen = _forward(graph, sync, forward_ms)
        forward = (time.perf_counter() - started) * 1e3
        backward = 0.0
        if not forward_only:
            started = time.perf_counter()
            _backward(graph, seen, sync, backward_ms)
            backward = (time.perf_counter() - started) * 1e3
    return forward, backward


def time_net(net: Net, iterations: int = 50, forward_only: bool = False) -> List[LayerTime]:
    """Average per-layer forward (and backward) milliseconds of ``net`` over ``iterations`` passes."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    layers = len(net.graph.slots)
    passes = "forward" if forward_only else "forward-backward"
    print(f"timing {iterations} {passes} passes of '{net.name or 'net'}' (one more warms up)", file=sys.stderr,
          flush=True)
    time_pass(net, [0.0] * layers, [0.0] * layers, forward_only)  # warms up, not counted
    forward_ms = [0.0] * layers
    backward_ms = [0.0] * layers
    for _ in tqdm(range(iterations), desc="time", unit="pass", disable=None):
        time_pass(net, forward_ms, backward_ms, forward_only)
    return [LayerTime(slot.name, slot.type, f / iterations, b / iterations)
            for slot, f, b in zip(net.graph.slots, forward_ms, backward_ms)]


def format_times(times: List[LayerTime], forward_only: bool = False) -> str:
    """The table ``fcn time`` prints: one row per layer, then the pass totals as Caffe reports them."""
    width = max([len("layer")] + [len(t.name) for t in times])
    type_width = max([len("type")] + [len(t.type) for t in times])
    header = f"{'layer':<{width}}  {'type':<{type_width}}  {'forward ms':>10}"
    lines = [header + ("" if forward_only else f"  {'backward ms':>11}")]
    for t in times:
        row = f"{t.name:<{width}}  {t.type:<{type_width}}  {t.forward_ms:>10.3f}"
        lines.append(row + ("" if forward_only else f"  {t.backward_ms:>11.3f}"))
    forward = sum(t.forward_ms for t in times)
    lines.append(f"Average Forward pass: {forward:.3f} ms.")
    if not forward_only:
        backward = sum(t.backward_ms for t in times)
        lines.append(f"Average Backward pass: {backward:.3f} ms.")
        lines.append(f"Average Forward-Backward: {forward + backward:.3f} ms.")
    return "\n".join(lines)
