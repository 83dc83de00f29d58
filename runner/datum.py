"""Caffe's Datum records (one image and its label, as LMDB/LevelDB values): read and made as Caffe does.

A raw Datum holds CxHxW uint8 pixels in ``data`` (or floats in ``float_data``); an encoded one holds the
bytes of a PNG/JPEG file in ``data`` and no dimensions. The layout and which fields are set follow
Caffe's ``CVMatToDatum`` and ``ReadImageToDatum`` exactly, so that databases written here hold records
byte-identical to those of Caffe's ``convert_imageset``.
"""
from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from netspec import caffe_pb2
from runner.images import decode_image, hwc_to_chw


def parse_datum(value: bytes, where: str) -> "caffe_pb2.Datum":
    """The Datum serialised in ``value``; ``where`` names the record in the error when it is none."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except DecodeError as err:
        raise ValueError(f"{where}: not a Caffe Datum ({len(value)} bytes: {err})") from None
    return datum


def datum_pixels(datum: "caffe_pb2.Datum", where: str, decode_mode: str = "unchanged") -> np.ndarray:
    """The Datum's image as a CxHxW array: uint8 for ``data`` and encoded records (decoded with
    ``cv::imdecode`` in ``decode_mode``: "unchanged", "color" or "gray"), float32 for ``float_data``."""
    if datum.encoded:
        try:
            return hwc_to_chw(decode_image(datum.data, decode_mode))
        except ValueError as err:
            raise ValueError(f"{where}: encoded Datum holds {err}") from None
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) <= 0:
        raise ValueError(f"{where}: raw Datum has dimensions {'x'.join(map(str, shape))}; "
                         f"channels, height and width must be positive")
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        values = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        values = np.asarray(datum.float_data, dtype=np.float32)
    if values.size != count:
        field = "data" if datum.data else "float_data"
        raise ValueError(f"{where}: Datum {field} holds {values.size} values, its dimensions "
                         f"{'x'.join(map(str, shape))} need {count}")
    return values.reshape(shape)


def raw_datum(image: np.ndarray, label: int) -> "caffe_pb2.Datum":
    """Caffe's CVMatToDatum plus the label: an HxWxC uint8 image as a raw CxHxW Datum (``encoded: false``
    written out, as Caffe does)."""
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = image.shape[2], image.shape[0], image.shape[1]
    datum.data = np.ascontiguousarray(hwc_to_chw(image)).tobytes()
    datum.label = label
    datum.encoded = False
    return datum


def encoded_datum(data: bytes, label: int) -> "caffe_pb2.Datum":
    """An encoded Datum as Caffe's ReadFileToDatum / imencode path makes it: bytes, label, ``encoded``."""
    return caffe_pb2.Datum(data=data, label=label, encoded=True)
