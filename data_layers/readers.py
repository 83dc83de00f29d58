"""Decoding the files datasets ship (JPEG/PNG images, palette and 16-bit PNGs, MATLAB .mat) into arrays.

Every reader turns a decoder's failure into a BadSampleError naming the file: PIL and scipy raise a zoo of
exception types (OSError, SyntaxError, IndexError, ...) for truncated or foreign files, and the layer
must be able to report or skip one bad sample without guessing which.
"""
import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import scipy.io
from PIL import Image

from data_layers.errors import BadSampleError
from data_layers.mat_check import check_mat5
from netspec import limits
from netspec.atomic import PathLike


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Re-raise anything a third-party decoder throws as a BadSampleError for ``path``."""
    try:
        yield
    except BadSampleError:
        raise
    except FileNotFoundError as err:
        raise BadSampleError(path, "file is missing") from err
    except Exception as err:  # decoders' error types are not a documented contract
        raise BadSampleError(path, f"cannot be decoded ({type(err).__name__}: {err})") from err


def open_checked_image(path: PathLike) -> Image.Image:
    """PIL's lazy open with the picture's size, read from its header, checked against the pixel limit
    before anything is decoded: a few-kilobyte file may declare gigapixels. PIL's own guard (an exception
    from about 179 megapixels) surfaces as the same kind of error."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise limits.ResourceLimitError(f"{os.fspath(path)}: {err}") from None
    width, height = image.size
    limits.IMAGE_PIXELS.check(width * height, f"{os.fspath(path)}: a {width}x{height} picture")
    return image


def _open_image(path: Path) -> Image.Image:
    image = open_checked_image(path)
    image.load()  # decode now: PIL is lazy and would report truncation only on first pixel access
    return image


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB (grayscale files are expanded, as they display)."""
    with _decoding(path):
        image = _open_image(path)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)


def read_index_png(path: Path) -> np.ndarray:
    """H x W uint8 class indices of a palette (or grayscale) label PNG; the palette colours are ignored."""
    with _decoding(path):
        image = _open_image(path)
        if image.mode not in ("P", "L"):
            raise BadSampleError(path, f"label PNG must be palette or grayscale, not mode {image.mode}")
        return np.asarray(image, dtype=np.uint8)


def read_png16(path: Path) -> np.ndarray:
    """H x W integer array of a single-channel (typically 16-bit) PNG."""
    with _decoding(path):
        image = _open_image(path)
        if image.mode not in ("I;16", "I;16B", "I", "L"):
            raise BadSampleError(path, f"expected a single-channel 16-bit PNG, not mode {image.mode}")
        return np.asarray(image).astype(np.int64)


def read_mat(path: Path, variable: str, field: Optional[str] = None) -> np.ndarray:
    """A variable of a MATLAB .mat file, or one field of a 1x1 struct variable (SBD's ``GTcls``)."""
    with _decoding(path):
        data = Path(path).read_bytes()
        check_mat5(data)  # scipy's reader trusts declared sizes; a lying file would crash the process
        contents = scipy.io.loadmat(io.BytesIO(data))
        if variable not in contents:
            raise BadSampleError(path, f"has no variable '{variable}'")
        value = contents[variable]
        if field is not None:
            if value.dtype.names is None or field not in value.dtype.names:
                raise BadSampleError(path, f"variable '{variable}' has no field '{field}'")
            value = value[field].ravel()[0]
        return np.asarray(value)
