"""Move parameters from one net into another by layer name (the release's ``surgery.transplant``).

This is how FCN starts from an ImageNet classifier: the classifier's InnerProduct weights hold the
same numbers, in the same row-major order, as the convolutions that replace them (fc6's 4096x25088
matrix is the 4096x512x7x7 kernel read flat), so a flat copy is all the "convolutionalization" needs.

The behaviour is the release's to the letter, because a user running the release's ``solve.py`` may
import this package in place of the release's ``surgery.py``: blobs of another shape are filled flat
(numpy's ``.flat`` assignment: a smaller source repeats, a larger one is cut), each move is printed on
stdout with the release's wording and spacing, and the report says what happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np

Shape = Tuple[int, ...]
COPY, COERCE, DROP = "copy", "coerce", "drop"


@dataclass(frozen=True)
class ParamMove:
    """What happened to one parameter blob (or, with ``index`` None, to a whole layer) of the old net."""

    action: str  # COPY, COERCE or DROP
    layer: str
    new_layer: str
    index: Optional[int]
    old_shape: Optional[Shape] = None
    new_shape: Optional[Shape] = None

    @property
    def line(self) -> str:
        """The release's printed line for this move (Python's print puts a space around ``' -> '`` too)."""
        if self.action == DROP:
            return f"dropping {self.layer}" + ("" if self.index is None else f" {self.index}")
        if self.action == COERCE:
            return f"coercing {self.layer} {self.index} from {self.old_shape} to {self.new_shape}"
        return f"copying {self.layer}  ->  {self.new_layer} {self.index}"

    @property
    def resized(self) -> bool:
        """A coercion between blobs of different sizes: the release fills it anyway (repeating or cutting)."""
        return self.action == COERCE and _count(self.old_shape) != _count(self.new_shape)


def _count(shape: Optional[Shape]) -> int:
    count = 1
    for dim in shape or ():
        count *= dim
    return count


@dataclass
class TransplantReport:
    """Every move of a transplant, in the old net's order, plus the new layers that received nothing."""

    moves: List[ParamMove] = field(default_factory=list)
    untouched: List[str] = field(default_factory=list)

    def _of(self, action: str) -> List[ParamMove]:
        return [m for m in self.moves if m.action == action]

    @property
    def copied(self) -> List[ParamMove]:
        return self._of(COPY)

    @property
    def coerced(self) -> List[ParamMove]:
        return self._of(COERCE)

    @property
    def dropped(self) -> List[ParamMove]:
        return self._of(DROP)

    @property
    def lines(self) -> List[str]:
        return [m.line for m in self.moves]


def _plan(new_net: Any, net: Any, suffix: str = "") -> TransplantReport:
    """Decide every move, in the release's order, without writing."""
    report = TransplantReport()
    for layer, blobs in net.params.items():
        new_layer = layer + suffix
        if new_layer not in new_net.params:
            report.moves.append(ParamMove(DROP, layer, new_layer, None))
            continue
        new_blobs = new_net.params[new_layer]
        for index, blob in enumerate(blobs):
            if index >= len(new_blobs):
                report.moves.append(ParamMove(DROP, layer, new_layer, index))
                break
            old_shape, new_shape = tuple(blob.shape), tuple(new_blobs[index].shape)
            action = COPY if old_shape == new_shape else COERCE
            report.moves.append(ParamMove(action, layer, new_layer, index, old_shape, new_shape))
    filled = {m.new_layer for m in report.moves if m.action != DROP}
    report.untouched = [name for name in new_net.params if name not in filled]
    return report


def transplant(new_net: Any, net: Any, suffix: str = "", echo: bool = True) -> TransplantReport:
    """Copy ``net``'s parameters into ``new_net`` layer by layer (new name = old name + ``suffix``).

    Blobs of equal shape are copied; blobs of another shape are filled flat, as the release does (fully
    connected into convolution: same values, same order); layers or extra blobs the new net lacks are
    dropped. Each move is printed with the release's wording unless ``echo`` is False, and returned in the
    report (``report.coerced``, and ``move.resized`` where the sizes differed).
    """
    report = _plan(new_net, net, suffix)
    for move in report.moves:
        if echo:
            print(move.line)
        if move.action != DROP:
            new_net.params[move.new_layer][move.index].data.flat = np.asarray(net.params[move.layer][move.index].data).flat
    return report
