"""Training-time augmentation of a whole sample (the FCN paper, Section 4.4): random mirroring and
translation jitter, applied to every top alike so that pixels and their labels stay together.

The paper found neither helped noticeably on PASCAL; they are here so that result can be re-checked.
Jitter shifts by up to ``jitter`` pixels each way and fills the uncovered border with 0 for image-like
tops (the dataset mean, after mean subtraction) and VOID for label tops (integer arrays), so the loss
ignores pixels that were never observed. Draws come from one seeded generator in the layer's thread,
in sample order, so a seeded run repeats exactly whatever the prefetching does; its ``state`` travels
with a snapshot, so a resumed run draws on as the uninterrupted one would have.
"""
from typing import Any, Dict, Optional

import numpy as np

from data_layers.rng import generator
from data_layers.transforms import VOID


def _fill(array: np.ndarray) -> int:
    """What uncovered pixels of a top become: VOID for labels (integer arrays), 0 for images."""
    return VOID if np.issubdtype(array.dtype, np.integer) else 0


def translate(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """A C x H x W array moved ``dy`` rows down and ``dx`` columns right, same size, border filled."""
    out = np.full_like(array, _fill(array))
    h, w = array.shape[-2:]
    if abs(dy) < h and abs(dx) < w:
        out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            array[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


class Augmenter:
    """Mirror (left-right, probability 1/2) and/or translate (uniform in [-jitter, jitter] per axis)."""

    def __init__(self, mirror: bool = False, jitter: int = 0, seed: Optional[int] = None) -> None:
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {jitter}")
        self.mirror = mirror
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)

    @property
    def state(self) -> Dict[str, Any]:
        """The generator's state before the next sample's draws (JSON-ready)."""
        return self.rng.bit_generator.state

    def restore(self, state: Dict[str, Any], where: str) -> None:
        """Draw on from ``state`` (``where`` names it in errors)."""
        self.rng = generator(state, where)

    @property
    def active(self) -> bool:
        return self.mirror or self.jitter > 0

    def __call__(self, sample: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """A new sample with the same random mirror/shift applied to every top."""
        flip = self.mirror and bool(self.rng.integers(2))
        dy, dx = self.rng.integers(-self.jitter, self.jitter + 1, size=2) if self.jitter else (0, 0)
        out = {}
        for name, array in sample.items():
            moved = array[..., ::-1] if flip else array
            out[name] = np.ascontiguousarray(translate(moved, int(dy), int(dx)) if self.jitter else moved)
        return out
