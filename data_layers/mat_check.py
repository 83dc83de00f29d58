"""A structural check of MATLAB level-5 .mat files, run before scipy parses them.

scipy's compiled MAT-file reader trusts the sizes a file declares: one byte inserted into a valid SBD
label file makes ``scipy.io.loadmat`` read past its buffers and kill the process (a segmentation fault,
found by ``make fuzz``), which no ``except`` can turn into a skipped sample. So every data element's tag
is walked here first: each declared size must fit inside its parent, a matrix's parts must come in the
documented order, and a numeric array must hold exactly dims x element size bytes. A file that passes
has sizes scipy can trust; one that fails is refused with the offset and what was wrong.

Layout (MathWorks, "MAT-File Format", level 5): a 128-byte header whose last two bytes say the byte
order ('IM' little-endian), then data elements, each an 8-byte tag (type, byte count; or the "small"
form: count and type in one word, up to 4 data bytes in the second) and its data padded to 8 bytes.
``miCOMPRESSED`` holds one zlib-compressed element; ``miMATRIX`` holds array flags, dimensions, name and
the class's parts.
"""
from __future__ import annotations

import struct
import zlib
from typing import Tuple

from netspec import limits

MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32, MI_SINGLE = 1, 2, 3, 4, 5, 6, 7
MI_DOUBLE, MI_INT64, MI_UINT64, MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 9, 12, 13, 14, 15, 16, 17, 18
#: Bytes per value of the numeric data types.
ELEMENT_SIZE = {MI_INT8: 1, MI_UINT8: 1, MI_INT16: 2, MI_UINT16: 2, MI_INT32: 4, MI_UINT32: 4, MI_SINGLE: 4,
                MI_DOUBLE: 8, MI_INT64: 8, MI_UINT64: 8, MI_UTF8: 1, MI_UTF16: 2, MI_UTF32: 4}
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
MX_NUMERIC = range(6, 16)  # double, single, int8 ... uint64
#: Deeper nesting than any real dataset uses (SBD: a struct of cells of matrices is three).
MAX_DEPTH = 32


class MatFormatError(ValueError):
    """The file's declared sizes or order do not hold together."""


def check_mat5(data: bytes) -> None:
    """Raise MatFormatError unless ``data`` is a level-5 MAT file whose every element fits; files of other
    levels (v4, v7.3) are left to scipy, which reads their few fixed fields or refuses them."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        return
    order = "<" if data[126:128] == b"IM" else ">"
    _Walker(order).elements(data, 128, len(data), 0)


class _Walker:
    def __init__(self, order: str) -> None:
        self.order = order
        self.unpacked = 0

    def tag(self, data: bytes, at: int, end: int) -> Tuple[int, int, int, int]:
        """(type, byte count, data start, next element start) of the element at ``at``."""
        if at + 8 > end:
            raise MatFormatError(f"byte {at}: an element tag runs past its end ({end})")
        word, count = struct.unpack_from(self.order + "II", data, at)
        if word >> 16:  # small data element: count in the upper half, data in the second word
            kind, count = word & 0xFFFF, word >> 16
            if count > 4:
                raise MatFormatError(f"byte {at}: a small element declares {count} bytes (at most 4)")
            return kind, count, at + 4, at + 8
        start = at + 8
        if count > end - start:
            raise MatFormatError(f"byte {at}: an element declares {count} bytes, {end - start} remain")
        # compressed elements are not padded: the next element follows the zlib stream
        padded = start + count if word == MI_COMPRESSED else start + (count + 7) // 8 * 8
        return word, count, start, min(padded, end)

    def elements(self, data: bytes, at: int, end: int, depth: int) -> None:
        while at < end:
            if end - at < 8 and not any(data[at:end]):
                return  # trailing padding
            kind, count, start, at = self.tag(data, at, end)
            self.element(data, kind, start, start + count, depth)

    def element(self, data: bytes, kind: int, start: int, end: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise MatFormatError(f"byte {start}: elements nested deeper than {MAX_DEPTH}")
        if kind == MI_COMPRESSED:
            inner = self.inflate(data[start:end], start)
            try:
                self.elements(inner, 0, len(inner), depth + 1)
            except MatFormatError as error:
                raise MatFormatError(f"in the compressed element at byte {start - 8}, {error}") from None
        elif kind == MI_MATRIX:
            if end > start:
                self.matrix(data, start, end, depth + 1)
        elif kind not in ELEMENT_SIZE:
            raise MatFormatError(f"byte {start}: unknown data type {kind}")

    def inflate(self, compressed: bytes, at: int) -> bytes:
        budget = limits.DECOMPRESSED_BYTES.value - self.unpacked
        inflater = zlib.decompressobj()
        try:
            inner = inflater.decompress(compressed, budget + 1)
        except zlib.error as error:
            raise MatFormatError(f"byte {at}: corrupt compressed element ({error})") from None
        self.unpacked += len(inner)
        limits.DECOMPRESSED_BYTES.check(self.unpacked, f"byte {at}: the decompressed elements")
        return inner

    def part(self, data: bytes, at: int, end: int, what: str, kinds=None) -> Tuple[int, int, int, int]:
        kind, count, start, following = self.tag(data, at, end)
        if kinds is not None and kind not in kinds:
            raise MatFormatError(f"byte {at}: the matrix's {what} has data type {kind}")
        return kind, count, start, following

    def matrix(self, data: bytes, at: int, end: int, depth: int) -> None:
        _, count, start, at = self.part(data, at, end, "array flags", (MI_UINT32,))
        if count != 8:
            raise MatFormatError(f"byte {start}: array flags of {count} bytes (8 expected)")
        flags = struct.unpack_from(self.order + "I", data, start)[0]
        matrix_class, is_complex = flags & 0xFF, bool(flags & 0x800)
        _, count, start, at = self.part(data, at, end, "dimensions", (MI_INT32,))
        if count < 8 or count % 4:
            raise MatFormatError(f"byte {start}: dimensions of {count} bytes (two or more int32 expected)")
        dims = struct.unpack_from(self.order + f"{count // 4}i", data, start)
        if min(dims) < 0:
            raise MatFormatError(f"byte {start}: negative dimension in {dims}")
        values = 1
        for dim in dims:
            values *= dim
        _, _, _, at = self.part(data, at, end, "name", (MI_INT8,))
        if matrix_class in MX_NUMERIC:
            for part in ("real part", "imaginary part")[:1 + is_complex]:
                kind, count, start, at = self.part(data, at, end, part)
                if kind not in ELEMENT_SIZE or count != values * ELEMENT_SIZE[kind]:
                    raise MatFormatError(f"byte {start}: {part} of {count} bytes for {dims} values of type {kind}")
        elif matrix_class == MX_CELL:
            for _ in range(values):
                kind, count, start, at = self.part(data, at, end, "cell", (MI_MATRIX,))
                self.element(data, kind, start, start + count, depth)
        elif matrix_class in (MX_STRUCT, MX_OBJECT):
            if matrix_class == MX_OBJECT:
                _, _, _, at = self.part(data, at, end, "class name", (MI_INT8,))
            _, count, start, at = self.part(data, at, end, "field name length", (MI_INT32,))
            length = struct.unpack_from(self.order + "i", data, start)[0] if count == 4 else 0
            _, count, _, at = self.part(data, at, end, "field names", (MI_INT8,))
            if length <= 0 or count % length:
                raise MatFormatError(f"byte {start}: {count} bytes of field names of length {length}")
            for _ in range(values * (count // length)):
                kind, count, start, at = self.part(data, at, end, "field", (MI_MATRIX,))
                self.element(data, kind, start, start + count, depth)
        else:  # char, sparse, opaque...: every part must still fit
            self.elements(data, at, end, depth)

