"""``fcn draw``: a net's layers as a picture, top to bottom, without graphviz.

Caffe's ``draw_net.py`` needs pydot and the graphviz binaries; here matplotlib alone lays the net out.
Each layer goes on the row after the deepest layer it reads from (so the data flows downward and
parallel branches, FCN's skips, sit beside the main chain), as a box coloured by kind and labelled
with its name, type and the parameters that set its geometry. Arrows run from the layer that last
wrote a blob to each layer that reads it; the blob's name is written under the writer. An arrow that
skips rows runs down a lane to the right of the boxes it passes, so it never crosses one.
"""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional, Tuple

from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path

from netspec import caffe_pb2, limits
from netspec.atomic import PathLike, write_atomically
from netspec.filtering import filter_net
from runner.graph import load_net_param

BOX_WIDTH, BOX_HEIGHT = 2.4, 0.62  # inches: one data unit is one inch
COLUMN_STEP, ROW_STEP = 2.8, 1.0
LANE_STEP, MARGIN = 0.25, 0.3
_COLOURS = {"Convolution": "#ff8080", "Deconvolution": "#ffb070", "Pooling": "#ffd966",
            "InnerProduct": "#d59cf0", "Crop": "#9fd8a0", "Eltwise": "#9fd8a0", "Input": "#e0e0e0",
            "Python": "#e0e0e0"}
_DEFAULT_COLOUR = "#a7c4f0"


def layer_rows(net: "caffe_pb2.NetParameter") -> Tuple[List[int], List[Tuple[int, int, str]]]:
    """Each layer's row (one below the deepest layer that wrote one of its bottoms; 0 for sources) and
    the edges ``(writer, reader, blob)`` for every bottom some earlier layer wrote."""
    writer: Dict[str, int] = {}
    rows: List[int] = []
    edges: List[Tuple[int, int, str]] = []
    for index, layer in enumerate(net.layer):
        sources = [writer[b] for b in layer.bottom if b in writer]
        rows.append(max(rows[s] for s in sources) + 1 if sources else 0)
        edges.extend((writer[b], index, b) for b in layer.bottom if b in writer)
        for top in layer.top:
            writer[top] = index
    return rows, edges


def _details(layer: "caffe_pb2.LayerParameter") -> str:
    """The parameters that decide a layer's output shape, in Caffe's words."""
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = list(p.kernel_size) or [p.kernel_h, p.kernel_w]
        return f"{p.num_output} out, kernel {kernel}, stride {list(p.stride) or [1]}, pad {list(p.pad) or [0]}"
    if layer.type == "Pooling":
        p = layer.pooling_param
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        return "global " + method if p.global_pooling else f"{method} kernel {p.kernel_size}, stride {p.stride}"
    if layer.type == "InnerProduct":
        return f"{layer.inner_product_param.num_output} out"
    if layer.type == "Crop":
        return f"axis {layer.crop_param.axis}, offset {list(layer.crop_param.offset)}"
    return ""


def _columns(rows: List[int], edges: List[Tuple[int, int, str]]) -> List[int]:
    """Column of each layer within its row: its first input's column when free there (so a chain stays
    straight), else the next free one to the right."""
    first_writer: Dict[int, int] = {}
    for source, target, _ in edges:
        first_writer.setdefault(target, source)
    taken: Dict[int, set] = {}
    columns: List[int] = []
    for index, row in enumerate(rows):
        column = columns[first_writer[index]] if index in first_writer else 0
        while column in taken.setdefault(row, set()):
            column += 1
        taken[row].add(column)
        columns.append(column)
    return columns


def _lanes(rows: List[int], columns: List[int], edges: List[Tuple[int, int, str]]) -> Dict[int, float]:
    """For each edge that skips rows (by index in ``edges``), the x of a vertical lane right of every box in
    the rows it passes; lanes whose row spans overlap are kept apart."""
    right_edge: Dict[int, float] = {}
    for row, column in zip(rows, columns):
        right_edge[row] = max(right_edge.get(row, 0.0), column * COLUMN_STEP + BOX_WIDTH / 2)
    lanes: Dict[int, float] = {}
    used: List[Tuple[float, int, int]] = []
    for index, (source, target, _) in enumerate(edges):
        top, bottom = rows[source], rows[target]
        if bottom - top < 2:
            continue
        x = max(right_edge[r] for r in range(top + 1, bottom)) + LANE_STEP
        while any(abs(x - lx) < LANE_STEP / 2 and t < bottom and top < b for lx, t, b in used):
            x += LANE_STEP
        used.append((x, top, bottom))
        lanes[index] = x
    return lanes


def _arrow(start: Tuple[float, float], end: Tuple[float, float], lane: Optional[float]) -> FancyArrowPatch:
    """From a box's bottom to another's top; through ``lane`` (in the gaps below and above the rows) when
    rows lie between them."""
    (x0, y0), (x1, y1) = start, end
    points = [(x0, y0 - BOX_HEIGHT / 2)]
    if lane is not None:
        points += [(lane, y0 - ROW_STEP / 2), (lane, y1 + ROW_STEP / 2)]
    points.append((x1, y1 + BOX_HEIGHT / 2))
    return FancyArrowPatch(path=Path(points), arrowstyle="-|>", mutation_scale=8, linewidth=0.7, color="#303030")


def draw_net(model: PathLike, out: PathLike, phase: Optional[int] = None) -> None:
    """Draw the net in ``model`` (a prototxt) at ``out``, atomically, in the format its suffix names (PNG,
    SVG, PDF: whatever matplotlib writes); with ``phase`` only the layers Caffe would build for it (like
    draw_net.py's ``--phase``)."""
    picture_format = (os.path.splitext(str(out))[1].lstrip(".") or "png").lower()
    if picture_format not in FigureCanvasBase.get_supported_filetypes():
        raise ValueError(f"{out}: cannot draw a .{picture_format} file; use one of "
                         f"{', '.join(sorted(FigureCanvasBase.get_supported_filetypes()))}")
    net = load_net_param(model)
    if phase is not None:
        net = filter_net(net, phase)
    if not net.layer:
        raise ValueError(f"{model}: the net has no layers to draw")
    limits.DRAW_LAYERS.check(len(net.layer), f"{model}: drawing")  # the canvas grows with the layer count
    rows, edges = layer_rows(net)
    columns = _columns(rows, edges)
    centres = [(column * COLUMN_STEP, -row * ROW_STEP) for row, column in zip(rows, columns)]
    lanes = _lanes(rows, columns, edges)
    left = -BOX_WIDTH / 2 - MARGIN
    right = max([x + BOX_WIDTH / 2 for x, _ in centres] + list(lanes.values())) + MARGIN
    top, bottom = ROW_STEP / 2, -max(rows) * ROW_STEP - ROW_STEP / 2
    figure = Figure(figsize=(right - left, top - bottom))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)
    axes.set_axis_off()
    for layer, (x, y) in zip(net.layer, centres):
        axes.add_patch(FancyBboxPatch((x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
                                      boxstyle="round,pad=0.02", linewidth=0.8, edgecolor="#404040",
                                      facecolor=_COLOURS.get(layer.type, _DEFAULT_COLOUR)))
        details = _details(layer)
        axes.text(x, y, f"{layer.name} ({layer.type})" + (f"\n{details}" if details else ""),
                  ha="center", va="center", fontsize=6.5)
    for index, (source, target, _) in enumerate(edges):
        axes.add_patch(_arrow(centres[source], centres[target], lanes.get(index)))
    for source, blob in dict.fromkeys((source, blob) for source, _, blob in edges):
        x, y = centres[source]
        axes.text(x + 0.06, y - BOX_HEIGHT / 2 - 0.09, blob, fontsize=5, color="#505050", va="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=picture_format, dpi=100)
    write_atomically(out, buffer.getvalue())
