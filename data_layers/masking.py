"""Input masking to separate the cues an FCN uses (the FCN paper, Section 6.1, Table 8).

``foreground`` blanks the pixels of labelled objects, ``background`` those of the background class, and
``shape`` replaces the picture by the foreground/background mask alone, so a net sees only the objects'
shapes. Blanked pixels become 0, which after mean subtraction is the dataset mean colour: the paper's
"mask". Which phase is masked is which data layer gets the key (the train layer, the test layer, or
both), so the table's train/test combinations need no further switch.

Foreground is any class but ``BACKGROUND`` (0, as in VOC) and void; void pixels (VOC's object outlines)
are left as they are by ``foreground``/``background`` and count as background in ``shape``.
"""
from typing import Dict

import numpy as np

from data_layers.transforms import VOID

MASKS = ("foreground", "background", "shape")
BACKGROUND = 0
# The foreground value of a ``shape`` input: a strong constant, on the scale of mean-subtracted pixels.
SHAPE_VALUE = 128.0


def label_of(sample: Dict[str, np.ndarray]) -> np.ndarray:
    """The sample's first label top (integer dtype: the data layers deliver labels as uint8)."""
    for array in sample.values():
        if np.issubdtype(array.dtype, np.integer):
            return array
    raise ValueError("masking needs a label top, and this layer delivers none")


def mask_sample(sample: Dict[str, np.ndarray], mode: str) -> Dict[str, np.ndarray]:
    """A new sample whose image tops (float arrays) are masked as ``mode`` says; labels unchanged."""
    if mode not in MASKS:
        raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mode!r}")
    label = label_of(sample)[0]
    foreground = (label != BACKGROUND) & (label != VOID)
    out = {}
    for name, array in sample.items():
        if np.issubdtype(array.dtype, np.integer):
            out[name] = array
        elif mode == "shape":
            out[name] = np.broadcast_to(foreground * np.float32(SHAPE_VALUE), array.shape).astype(array.dtype)
        else:
            blank = foreground if mode == "foreground" else label == BACKGROUND
            out[name] = np.where(blank, 0, array).astype(array.dtype)
    return out
