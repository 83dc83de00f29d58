"""``fcn export --onnx``: a deploy net and its weights as an ONNX model with any batch, height and width.

The net's layers are traced by torch's TorchScript-based ONNX exporter (``dynamo=False``; the newer
exporter needs the onnxscript package, which the project does not depend on). Tracing records one
run, so anything the runner decides in Python from the input size is frozen at the example size. The
one such decision that changes results is Pooling's: Caffe rounds output sizes up, and the runner
asks torch for ``ceil_mode`` only when floor and ceil differ at the size it sees. After tracing, each
pooling node is therefore given Caffe's rounding explicitly; layers whose torch form cannot follow
every size (global pooling, explicit padding) are refused by name instead of exported wrong.

Every layer runs inside its own module (``layers.<index>``), so each ONNX node's name says which Caffe
layer it came from; that is also how the rounding fix finds its layers.
"""
from __future__ import annotations

import io
import re
import warnings
from typing import Any, Dict, List, Sequence

import torch

from fcn.net_loading import NetFile, PathLike, load_net
from netspec import caffe_pb2
from netspec.atomic import write_atomically
from runner.graph import LayerSlot, NetGraph

DEFAULT_OPSET = 17
_POOL_OPS = ("MaxPool", "AveragePool")
_SCOPE = re.compile(r"^/layers\.(\d+)/")


class _LayerModule(torch.nn.Module):
    """One Caffe layer as a module: gives its ONNX nodes the scope ``/layers.<index>/``."""

    def __init__(self, slot: LayerSlot) -> None:
        super().__init__()
        self.slot = slot

    def forward(self, *bottoms: torch.Tensor) -> List[torch.Tensor]:
        return self.slot.impl.forward(list(bottoms), self.slot.params)


class GraphModule(torch.nn.Module):
    """A net's graph as ``forward(input) -> blob``: runs the layers up to the last one writing ``output``
    over a private dict of tensors (the net's Blobs are left alone)."""

    def __init__(self, graph: NetGraph, input_name: str, output: str) -> None:
        super().__init__()
        writers = [i for i, slot in enumerate(graph.slots) if output in slot.tops]
        if not writers:
            raise ValueError(f"net '{graph.name}' has no blob '{output}' (outputs: {graph.output_names})")
        self.graph = graph
        self.input_name, self.output = input_name, output
        self.layers = torch.nn.ModuleList(_LayerModule(slot) for slot in graph.slots[:writers[-1] + 1])

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        tensors: Dict[str, torch.Tensor] = {self.input_name: data}
        for layer in self.layers:
            slot = layer.slot
            if not slot.is_input:
                tensors.update(zip(slot.tops, layer(*(tensors[b] for b in slot.bottoms))))
        return tensors[self.output]


def export_onnx(deploy: NetFile, weights: PathLike, out: PathLike, blob: str = "score",
                opset: int = DEFAULT_OPSET, allow_python_layers: bool = False) -> None:
    """Write ``deploy`` with ``weights`` as ONNX to ``out`` (atomically): input named after the net's
    input blob, output ``blob``, batch/height/width dynamic."""
    net = load_net(deploy, caffe_pb2.TEST, weights=weights, allow_python_layers=allow_python_layers)
    if len(net.inputs) != 1:
        raise ValueError(f"export needs a net with one input blob; net '{net.name}' has {net.inputs}")
    python = [slot.name for slot in net.graph.slots if slot.python_layer is not None]
    if python:
        raise ValueError(f"layer '{python[0]}' is a Python layer; its numpy code cannot be exported to ONNX")
    module = GraphModule(net.graph, net.inputs[0], blob).eval()
    example = net.blobs[net.inputs[0]].data.copy()
    onnx_bytes = _trace(module, torch.from_numpy(example), opset)
    write_atomically(out, _with_caffe_rounding(onnx_bytes, module.layers))


def _trace(module: GraphModule, example: torch.Tensor, opset: int) -> bytes:
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks inside the layers read sizes as Python values; the tracer warns about each one.
        # The exporter's own deprecation notices say what the module docstring explains.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[module.input_name], output_names=[module.output],
                          dynamic_axes={module.input_name: axes, module.output: axes})
    return buffer.getvalue()


def _with_caffe_rounding(onnx_bytes: bytes, layers: Sequence[_LayerModule]) -> bytes:
    """Set every pooling node's ceil_mode to its Caffe layer's rounding, valid at every input size."""
    try:
        import onnx
    except ImportError:
        raise ValueError("fcn export needs the 'onnx' package (pip install onnx)") from None
    model = onnx.load_from_string(onnx_bytes)
    scoped: Dict[int, List[str]] = {}
    for node in model.graph.node:
        match = _SCOPE.match(node.name)
        if match:
            scoped.setdefault(int(match.group(1)), []).append(node.op_type)
    for node in model.graph.node:
        match = _SCOPE.match(node.name)
        if node.op_type not in _POOL_OPS or not match:
            continue
        slot = layers[int(match.group(1))].slot
        if slot.type != "Pooling":
            continue
        ceil = _size_generic_ceil_mode(slot, node, scoped[int(match.group(1))])
        for attribute in node.attribute:
            if attribute.name == "ceil_mode":
                attribute.i = ceil
                break
        else:
            node.attribute.append(onnx.helper.make_attribute("ceil_mode", ceil))
    return model.SerializeToString()


def _size_generic_ceil_mode(slot: LayerSlot, node: Any, ops_in_layer: Sequence[str]) -> int:
    """The ceil_mode that equals Caffe's output size for every input size, or ValueError.

    Caffe rounds up (or down, with round_mode FLOOR) and drops a last window that would start in the
    trailing padding when some pad is non-zero. ONNX's ceil_mode drops it whatever the pad, which
    matters only with no pad and a kernel smaller than its stride, where no window can be dropped by
    Caffe but one can by ONNX.
    """
    param = slot.layer_param.pooling_param
    problem = None
    if param.global_pooling:
        problem = "global pooling takes its kernel size from the input"
    elif "Pad" in ops_in_layer:
        problem = "its padding is computed for the traced input size"
    if param.round_mode == caffe_pb2.PoolingParameter.FLOOR and problem is None:
        return 0
    attributes = {a.name: list(a.ints) for a in node.attribute}
    kernel, strides = attributes.get("kernel_shape", []), attributes.get("strides", [])
    pads = attributes.get("pads", [])
    if problem is None and not any(pads) and any(k < s for k, s in zip(kernel, strides)):
        problem = f"kernel {kernel} smaller than stride {strides} with no pad rounds differently in ONNX"
    if problem is not None:
        raise ValueError(f"layer '{slot.name}' (Pooling) cannot be exported for every input size: {problem}")
    return 1
