"""The protobuf wire format, just enough to walk a message without decoding it.

Caffe's binary files are dominated by packed float arrays; protobuf's Python
API can only hand those out element by element.  Walking the few fields above
them by hand lets :mod:`netspec.caffemodel` take each array as a numpy view of
the file's bytes and leave the small rest to protobuf.  Every length is checked
against its enclosing message, so truncated or foreign input fails with the
byte offset instead of a crash or a hang.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Set

from google.protobuf.descriptor import FieldDescriptor

VARINT, I64, LEN, I32 = 0, 1, 2, 5

_I64_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
_I32_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32}
_LEN_TYPES = {FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message; says at which byte and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} at byte {offset}")


class Field(NamedTuple):
    """One encoded field: ``buf[start:end]`` is the whole field, ``buf[value_start:end]`` its value."""

    number: int
    wire: int
    start: int
    value_start: int
    end: int


def read_varint(buf: bytearray, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return (value, position after it)."""
    value = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError(start, "varint runs past the end of its message (truncated?)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError(start, "varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """The varint encoding of a non-negative ``value``."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` with wire type LEN holding ``payload`` (tag, length, bytes)."""
    return encode_varint(number << 3 | LEN) + encode_varint(len(payload)) + payload


def fields(buf: bytearray, start: int, end: int) -> Iterator[Field]:
    """The fields of the message encoded in ``buf[start:end]``, in file order."""
    pos = start
    while pos < end:
        tag, value_start = read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(pos, "field number 0")
        if wire == VARINT:
            _, value_end = read_varint(buf, value_start, end)
        elif wire == I64:
            value_end = value_start + 8
        elif wire == LEN:
            length, value_start = read_varint(buf, value_start, end)
            value_end = value_start + length
        elif wire == I32:
            value_end = value_start + 4
        else:
            raise WireError(pos, f"field {number} has unsupported wire type {wire}")
        if value_end > end:
            raise WireError(pos, f"field {number} runs past the end of its message (truncated?)")
        yield Field(number, wire, pos, value_start, value_end)
        pos = value_end


def allowed_wire_types(field: FieldDescriptor) -> Set[int]:
    """Wire types a conforming writer may use for ``field`` (repeated numbers may be packed)."""
    if field.type in _LEN_TYPES:
        return {LEN}
    native = I64 if field.type in _I64_TYPES else I32 if field.type in _I32_TYPES else VARINT
    return {native, LEN} if is_repeated(field) else {native}


def is_repeated(field: FieldDescriptor) -> bool:
    """Whether ``field`` is repeated, on new (``is_repeated``) and old (only ``label``) protobuf."""
    repeated = getattr(field, "is_repeated", None)
    return field.label == FieldDescriptor.LABEL_REPEATED if repeated is None else repeated
