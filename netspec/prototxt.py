"""Caffe's text format (.prototxt): read into a message, write atomically.

Parsing is protobuf's own ``text_format.Parse`` (the same grammar and the same
"non-repeated field given twice" rule as Caffe's ``TextFormat::Parse``).  What
this module adds is error reporting a user can act on: one line,
``path:line:column: what went wrong``, like a compiler, instead of a traceback
through protobuf internals.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Type, TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from netspec import caffe_pb2
from netspec.atomic import PathLike, write_atomically

MessageT = TypeVar("MessageT", bound=Message)

# protobuf prefixes its messages with "line:column : "; we print our own location.
_LOCATION_PREFIX = re.compile(r"^\d+:\d+ : ")


class PrototxtError(ValueError):
    """A prototxt could not be read; the message is one line starting with the location."""


def parse_prototxt(text: str, message_class: Type[MessageT] = caffe_pb2.NetParameter,
                   source: str = "<string>") -> MessageT:
    """Parse prototxt ``text`` into a new ``message_class``; ``source`` names it in errors."""
    message = message_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        what = _LOCATION_PREFIX.sub("", str(error))
        line, column = error.GetLine(), error.GetColumn()
        where = source if line is None else f"{source}:{line}:{column}"
        raise PrototxtError(f"{where}: {what}") from None
    return message


def read_prototxt(path: PathLike, message_class: Type[MessageT] = caffe_pb2.NetParameter) -> MessageT:
    """Read the prototxt file at ``path`` into a new ``message_class`` (default NetParameter).

    A missing file raises FileNotFoundError naming the path; a file that is not
    UTF-8 text (say a caffemodel passed by mistake) or does not parse raises
    PrototxtError.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: prototxt file not found") from None
    except OSError as error:  # a folder, no permission...
        raise PrototxtError(f"{file}: cannot read the prototxt ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PrototxtError(f"{file}: not a text prototxt (byte {error.start} is not UTF-8; "
                            f"a binary file such as a .caffemodel?)") from None
    return parse_prototxt(text, message_class, source=str(file))


def write_prototxt(path: PathLike, message: Message) -> None:
    """Write ``message`` as prototxt text to ``path``, atomically."""
    write_atomically(path, text_format.MessageToString(message).encode("utf-8"))
