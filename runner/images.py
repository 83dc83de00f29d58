"""Image files the way Caffe reads them: ``cv::imread`` (BGR), ``cv::resize`` INTER_LINEAR, list files.

ImageData, WindowData and ``convert_imageset`` must see the very pixels real Caffe sees: OpenCV's
bilinear resize uses half-pixel centres and no antialiasing, which PIL's does not (up to 40 grey levels
apart on the reference images), so images go through OpenCV here and nowhere else. ``cv2`` is imported
on first use: nets without image layers never pay for it.
"""
from __future__ import annotations

import os
from typing import Any, List, Tuple

import numpy as np


def cv2_module() -> Any:
    """OpenCV, imported on first use, or a clear error saying how to get it."""
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("reading images as Caffe does needs OpenCV: pip install 'opencv-python-headless<5'") from err
    return cv2


def read_image_list(path: str) -> List[Tuple[str, int]]:
    """The ``(relative path, label)`` pairs of a Caffe list file: one ``path label`` per line, split at the
    last space (paths may contain spaces), as ImageData and convert_imageset read it."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as err:
        raise ValueError(f"cannot read list file '{path}': {err.strerror}") from None
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line and number == text.count("\n") + 1:
            break  # the end of the last line
        name, _, label = line.rpartition(" ")
        try:
            entries.append((name, int(label)))
        except ValueError:
            raise ValueError(f"list file '{path}' line {number}: expected '<image path> <integer label>', "
                             f"got {line!r}") from None
        if not name:
            raise ValueError(f"list file '{path}' line {number}: no image path before the label in {line!r}")
    if not entries:
        raise ValueError(f"list file '{path}' lists no images (expected lines '<image path> <integer label>')")
    return entries


def read_image(path: str, height: int = 0, width: int = 0, is_color: bool = True) -> np.ndarray:
    """Caffe's ReadImageToCVMat: the file decoded as BGR (or one grey channel), resized to height x width
    when both are positive; an HxWxC uint8 array (C = 3 or 1)."""
    cv2 = cv2_module()
    if not os.path.isfile(path):
        raise ValueError(f"could not read image '{path}': no such file")
    image = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"could not read image '{path}': not an image OpenCV can decode")
    if height > 0 and width > 0:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image if image.ndim == 3 else image[:, :, np.newaxis]


def decode_image(data: bytes, mode: str = "unchanged") -> np.ndarray:
    """``cv::imdecode`` of encoded bytes, ``mode`` "unchanged" (Caffe's native decode, flag -1), "color" or
    "gray"; an HxWxC uint8 array, or ValueError when the bytes are no image OpenCV decodes to 8 bits."""
    cv2 = cv2_module()
    flags = {"unchanged": cv2.IMREAD_UNCHANGED, "color": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE}[mode]
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags) if data else None
    if image is None:
        raise ValueError(f"{len(data)} bytes that OpenCV cannot decode as an image")
    if image.dtype != np.uint8:
        raise ValueError(f"a {image.dtype} image; Caffe needs 8-bit images")
    return image if image.ndim == 3 else image[:, :, np.newaxis]


def encode_image(image: np.ndarray, extension: str) -> bytes:
    """``cv::imencode`` of an HxWxC uint8 image to the format of ``extension`` ("png", "jpg", ...)."""
    cv2 = cv2_module()
    try:
        ok, buffer = cv2.imencode("." + extension, image)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"OpenCV cannot encode images as '{extension}'")
    return buffer.tobytes()


def hwc_to_chw(image: np.ndarray) -> np.ndarray:
    """An HxWxC image as Caffe's CxHxW blob layout (a view)."""
    return image.transpose(2, 0, 1)
