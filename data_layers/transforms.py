"""The arithmetic between decoded files and top blobs: Caffe's image layout and the tasks' label codes.

Images: RGB to BGR (the channel order of the Caffe-trained VGG/AlexNet weights), mean subtracted,
channels first, float32. Labels: the dataset's on-disk codes turned into ``0..num_classes-1`` plus
``VOID`` (the loss's ``ignore_label``), with every other value rejected rather than silently wrapped
around in uint8 as the release did.
"""
from pathlib import Path
from typing import Sequence

import numpy as np

from data_layers.errors import BadSampleError

VOID = 255


def image_blob(pixels: np.ndarray, mean: np.ndarray, to_bgr: bool = True) -> np.ndarray:
    """C x H x W float32 of an H x W x C image minus ``mean`` (given in the blob's channel order)."""
    if to_bgr:
        pixels = pixels[:, :, ::-1]
    centred = (pixels.astype(np.float64) - mean).astype(np.float32)
    return np.ascontiguousarray(centred.transpose(2, 0, 1))


def log_depth_blob(depth: np.ndarray, mean_log: float, path: Path) -> np.ndarray:
    """1 x H x W float32 of log depth minus its dataset mean; depth must be positive everywhere."""
    if depth.ndim != 2:
        raise BadSampleError(path, f"depth must be a single-channel map, got shape {depth.shape}")
    if np.any(depth <= 0):
        raise BadSampleError(path, "depth has zero or negative values (log undefined); "
                                   "the FCN release expects filled-in depth")
    logd = np.log(depth.astype(np.float32)) - np.float32(mean_log)
    return logd[np.newaxis].astype(np.float32)


def _integer_map(raw: np.ndarray, path: Path) -> np.ndarray:
    values = np.asarray(raw)
    if values.ndim != 2:
        raise BadSampleError(path, f"label must be a 2-D map, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise BadSampleError(path, "label map has non-integer values")
    return values.astype(np.int64)


def class_labels(raw: np.ndarray, num_classes: int, path: Path, shift: int = 0,
                 void: Sequence[int] = (VOID,)) -> np.ndarray:
    """1 x H x W uint8 labels: ``raw - shift`` for classes, VOID where ``raw`` is one of ``void``.

    Any other value is a BadSampleError naming the file, so a corrupt annotation cannot pass as a class.
    """
    values = _integer_map(raw, path)
    is_void = np.isin(values, list(void))
    classes = values - shift
    bad = ~is_void & ((classes < 0) | (classes >= num_classes))
    if bad.any():
        shown = np.unique(values[bad])[:8].tolist()
        raise BadSampleError(path, f"label values {shown} are outside the task: allowed "
                                   f"{shift}..{num_classes - 1 + shift} and void {list(void)}")
    return np.where(is_void, VOID, classes).astype(np.uint8)[np.newaxis]


def lookup_labels(raw: np.ndarray, table: np.ndarray, path: Path) -> np.ndarray:
    """1 x H x W uint8 labels ``table[raw]`` (PASCAL-Context's full-label ids to task classes)."""
    values = _integer_map(raw, path)
    bad = (values < 0) | (values >= len(table))
    if bad.any():
        shown = np.unique(values[bad])[:8].tolist()
        raise BadSampleError(path, f"label ids {shown} are not in the label list (0..{len(table) - 1})")
    return table[values].astype(np.uint8)[np.newaxis]
