"""Writing files byte-for-byte in the datasets' own encodings (the inverse of ``readers``).

Used by the synthetic writer, and by tests that need a deliberately bad file in a real format.
"""
import io
from pathlib import Path
from typing import Any, List

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

JPEG_QUALITY = 95
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: fcn-caffe data_layers".ljust(116)


def voc_palette() -> List[int]:
    """VOC's 256-colour label palette: index bits spread over the high bits of R, G and B in turn."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        palette.extend(rgb)
    return palette


def _prepare(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Baseline JPEG without chroma subsampling, so the fine class textures survive compression."""
    Image.fromarray(rgb, "RGB").save(_prepare(path), "JPEG", quality=JPEG_QUALITY, subsampling=0)


def save_png(path: Path, pixels: np.ndarray) -> None:
    """8-bit RGB or grayscale PNG."""
    Image.fromarray(pixels.astype(np.uint8)).save(_prepare(path), "PNG")


def save_png16(path: Path, values: np.ndarray) -> None:
    """Single-channel 16-bit PNG (NYUD depth in millimetres)."""
    Image.fromarray(values.astype(np.uint16)).save(_prepare(path), "PNG")


def save_palette_png(path: Path, indices: np.ndarray) -> None:
    """Palette-mode PNG whose pixel values are class indices (VOC's SegmentationClass)."""
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette(voc_palette())
    image.save(_prepare(path), "PNG")


def save_mat(path: Path, **variables: Any) -> None:
    """MATLAB v5 .mat (compressed, as MATLAB's default save writes) with the given variables.

    The 116-byte text header normally carries the creation time; a fixed one makes the same content
    give the same bytes, so synthetic datasets can be checksummed and cached.
    """
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, do_compression=True)
    _prepare(path).write_bytes(_MAT_HEADER + buffer.getvalue()[len(_MAT_HEADER):])


def save_sbd_cls(path: Path, segmentation: np.ndarray, num_classes: int = 21) -> None:
    """SBD's cls/*.mat: struct ``GTcls`` with Segmentation, Boundaries (a cell of one sparse edge map
    per object class) and CategoriesPresent (the object classes in the image)."""
    boundaries = np.empty((num_classes - 1, 1), dtype=object)
    for cls in range(1, num_classes):
        mask = segmentation == cls
        edge = np.zeros_like(mask)
        edge[:-1] |= mask[:-1] != mask[1:]
        edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
        boundaries[cls - 1, 0] = scipy.sparse.csc_matrix(edge & mask)
    present = [c for c in np.unique(segmentation) if 0 < c < num_classes]
    save_mat(path, GTcls={"Segmentation": segmentation.astype(np.uint8), "Boundaries": boundaries,
                          "CategoriesPresent": np.array(present, dtype=np.uint8).reshape(-1, 1)})
