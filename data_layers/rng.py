"""Random generators that can be written down and taken back, so that a resumed run draws what the
uninterrupted run would have drawn (shuffles, mirror flips, jitter).

A generator's state is numpy's PCG64 state dict: plain ints, JSON as it is. A state read back from a
file is checked, so that a damaged file is an error naming it, not a numpy traceback.
"""
from typing import Any, Dict, Optional

import numpy as np


def initial_state(seed: Optional[int]) -> Dict[str, Any]:
    """The state a generator seeded with ``seed`` starts from (fresh OS entropy when None)."""
    return np.random.default_rng(seed).bit_generator.state


def generator(state: Dict[str, Any], where: str) -> np.random.Generator:
    """A generator in ``state``; ValueError naming ``where`` if it is not a PCG64 state."""
    bits = np.random.PCG64()
    try:
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError("not a PCG64 state")
        bits.state = state
    except (ValueError, TypeError, KeyError, OverflowError) as err:
        raise ValueError(f"{where}: bad random generator state ({err})") from None
    return np.random.Generator(bits)
