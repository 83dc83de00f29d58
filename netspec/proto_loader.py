"""Build protobuf message classes from a .proto file at import time.

Generated ``*_pb2`` modules are tied to the protobuf runtime they were made
for, and protoc is rarely installed where this package runs.  Parsing the
small proto2 subset that caffe.proto uses and handing the resulting
``FileDescriptorProto`` to a private ``DescriptorPool`` sidesteps both: the
classes come from whatever runtime (upb, cpp or pure Python) is installed.

Supported: ``syntax``, ``package``, (nested) ``message`` and ``enum``
definitions, ``optional``/``repeated``/``required`` fields of scalar, message
or enum type, and the ``default`` and ``packed`` field options.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor

_FDP = descriptor_pb2.FieldDescriptorProto

_SCALAR_TYPES: Dict[str, int] = {
    "double": _FDP.TYPE_DOUBLE, "float": _FDP.TYPE_FLOAT,
    "int32": _FDP.TYPE_INT32, "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32, "uint64": _FDP.TYPE_UINT64,
    "sint32": _FDP.TYPE_SINT32, "sint64": _FDP.TYPE_SINT64,
    "fixed32": _FDP.TYPE_FIXED32, "fixed64": _FDP.TYPE_FIXED64,
    "sfixed32": _FDP.TYPE_SFIXED32, "sfixed64": _FDP.TYPE_SFIXED64,
    "bool": _FDP.TYPE_BOOL, "string": _FDP.TYPE_STRING, "bytes": _FDP.TYPE_BYTES,
}
_LABELS = {"optional": _FDP.LABEL_OPTIONAL, "repeated": _FDP.LABEL_REPEATED,
           "required": _FDP.LABEL_REQUIRED}
_INT_TYPES = {_FDP.TYPE_INT32, _FDP.TYPE_INT64, _FDP.TYPE_UINT32, _FDP.TYPE_UINT64,
              _FDP.TYPE_SINT32, _FDP.TYPE_SINT64, _FDP.TYPE_FIXED32, _FDP.TYPE_FIXED64,
              _FDP.TYPE_SFIXED32, _FDP.TYPE_SFIXED64}
_UNSIGNED_TYPES = {_FDP.TYPE_UINT32, _FDP.TYPE_UINT64, _FDP.TYPE_FIXED32, _FDP.TYPE_FIXED64}
_FLOAT_TYPES = {_FDP.TYPE_FLOAT, _FDP.TYPE_DOUBLE}

_TOKEN_RE = re.compile(r"""
    (?P<space>[ \t\r\f\v]+) | (?P<newline>\n)
  | (?P<line_comment>//[^\n]*) | (?P<block_comment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<symbol>[{}\[\]=;,\-+<>()])
""", re.VERBOSE | re.DOTALL)


class ProtoSyntaxError(ValueError):
    """A .proto file could not be parsed or resolved; the message says where."""


@dataclass
class _Token:
    kind: str
    text: str
    line: int


def _tokenize(text: str, filename: str) -> List[_Token]:
    """Split proto source into tokens, dropping whitespace and comments."""
    tokens: List[_Token] = []
    line, pos = 1, 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text.startswith("/*", pos):
                raise ProtoSyntaxError(f"{filename}:{line}: unterminated /* comment")
            raise ProtoSyntaxError(f"{filename}:{line}: unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "newline", "line_comment", "block_comment"):
            tokens.append(_Token(kind, match.group(), line))
        line += match.group().count("\n")
        pos = match.end()
    tokens.append(_Token("eof", "", line))
    return tokens


class _Parser:
    """Recursive-descent parser producing an unresolved FileDescriptorProto.

    Type names are left as written (``field.type_name`` without a leading
    dot, ``field.type`` unset) and fixed up by :func:`_resolve_types`, since
    proto files may use a type before defining it.
    """

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.tokens = _tokenize(text, filename)
        self.pos = 0
        # Every field with its file, line and raw default, for _resolve_types.
        self.pending: List[Tuple[_FDP, str, int, Optional[str]]] = []

    # -- token helpers ---------------------------------------------------
    def _peek(self) -> _Token:
        return self.tokens[self.pos]

    def _next(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _fail(self, expected: str, token: Optional[_Token] = None) -> ProtoSyntaxError:
        token = token or self._peek()
        found = repr(token.text) if token.kind != "eof" else "end of file"
        return ProtoSyntaxError(f"{self.filename}:{token.line}: expected {expected}, found {found}")

    def _expect(self, text: str) -> _Token:
        token = self._next()
        if token.text != text or token.kind == "string":
            raise self._fail(repr(text), token)
        return token

    def _expect_kind(self, kind: str, what: str) -> _Token:
        token = self._next()
        if token.kind != kind:
            raise self._fail(what, token)
        return token

    def _integer(self, what: str) -> int:
        sign = 1
        if self._peek().text == "-":
            self._next()
            sign = -1
        token = self._next()
        if token.kind != "number" or not re.fullmatch(r"\d+|0[xX][0-9a-fA-F]+", token.text):
            raise self._fail(what, token)
        return sign * int(token.text, 0)

    # -- grammar ---------------------------------------------------------
    def parse(self) -> descriptor_pb2.FileDescriptorProto:
        """Parse the whole file."""
        fdp = descriptor_pb2.FileDescriptorProto(name=self.filename)
        while self._peek().kind != "eof":
            token = self._peek()
            if token.text == "syntax":
                self._next()
                self._expect("=")
                syntax = ast.literal_eval(self._expect_kind("string", "a string").text)
                if syntax != "proto2":
                    raise ProtoSyntaxError(f"{self.filename}:{token.line}: only proto2 is supported")
                fdp.syntax = syntax
                self._expect(";")
            elif token.text == "package":
                self._next()
                fdp.package = self._expect_kind("ident", "a package name").text
                self._expect(";")
            elif token.text == "message":
                self._message(fdp.message_type.add())
            elif token.text == "enum":
                self._enum(fdp.enum_type.add())
            elif token.text == ";":
                self._next()
            else:
                raise self._fail("'syntax', 'package', 'message' or 'enum'")
        return fdp

    def _message(self, msg: descriptor_pb2.DescriptorProto) -> None:
        self._expect("message")
        msg.name = self._expect_kind("ident", "a message name").text
        self._expect("{")
        while self._peek().text != "}":
            token = self._peek()
            if token.kind == "eof":
                raise self._fail("'}'")
            if token.text == "message":
                self._message(msg.nested_type.add())
            elif token.text == "enum":
                self._enum(msg.enum_type.add())
            elif token.text in _LABELS:
                self._field(msg.field.add())
            elif token.text == ";":
                self._next()
            else:
                raise self._fail("a field label (optional/repeated/required), 'message', 'enum' or '}'")
        self._expect("}")

    def _enum(self, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self._expect("enum")
        enum.name = self._expect_kind("ident", "an enum name").text
        self._expect("{")
        while self._peek().text != "}":
            if self._peek().text == ";":
                self._next()
                continue
            name = self._expect_kind("ident", "an enum value name or '}'")
            if "." in name.text:
                raise self._fail("an enum value name", name)
            self._expect("=")
            enum.value.add(name=name.text, number=self._integer("an enum value number"))
            self._expect(";")
        self._expect("}")
        if not enum.value:
            raise ProtoSyntaxError(f"{self.filename}:{self._peek().line}: enum {enum.name} has no values")

    def _field(self, field: descriptor_pb2.FieldDescriptorProto) -> None:
        line = self._peek().line
        field.label = _LABELS[self._next().text]
        type_token = self._expect_kind("ident", "a field type")
        if type_token.text in _SCALAR_TYPES:
            field.type = _SCALAR_TYPES[type_token.text]
        else:
            field.type_name = type_token.text
        name = self._expect_kind("ident", "a field name")
        if "." in name.text:
            raise self._fail("a field name", name)
        field.name = name.text
        self._expect("=")
        field.number = self._integer("a field number")
        default = None
        if self._peek().text == "[":
            default = self._options(field)
        self._expect(";")
        self.pending.append((field, self.filename, line, default))

    def _options(self, field: descriptor_pb2.FieldDescriptorProto) -> Optional[str]:
        """Parse ``[name = value, ...]``; return the raw default, if any."""
        self._expect("[")
        default = None
        while True:
            option = self._expect_kind("ident", "an option name ('default' or 'packed')")
            self._expect("=")
            value = self._option_value()
            if option.text == "default":
                default = value
            elif option.text == "packed":
                if value not in ("true", "false"):
                    raise self._fail("true or false for packed", self.tokens[self.pos - 1])
                field.options.packed = value == "true"
            else:
                raise self._fail("'default' or 'packed'", option)
            if self._peek().text != ",":
                break
            self._next()
        self._expect("]")
        return default

    def _option_value(self) -> str:
        """One option value as source text, a leading minus sign included."""
        token = self._next()
        if token.text == "-":
            number = self._next()
            if number.kind not in ("number", "ident"):
                raise self._fail("a number after '-'", number)
            return "-" + number.text
        if token.kind in ("number", "ident", "string"):
            return token.text
        raise self._fail("an option value", token)


def _collect_types(fdp: descriptor_pb2.FileDescriptorProto) -> Dict[str, int]:
    """Map every fully-qualified message/enum name to TYPE_MESSAGE or TYPE_ENUM."""
    found: Dict[str, int] = {}

    def visit(prefix: str, messages, enums) -> None:
        for enum in enums:
            found[f"{prefix}.{enum.name}"] = _FDP.TYPE_ENUM
        for msg in messages:
            name = f"{prefix}.{msg.name}"
            found[name] = _FDP.TYPE_MESSAGE
            visit(name, msg.nested_type, msg.enum_type)

    visit("." + fdp.package if fdp.package else "", fdp.message_type, fdp.enum_type)
    return found


def _walk_fields(fdp: descriptor_pb2.FileDescriptorProto) -> Iterator[Tuple[str, _FDP]]:
    """Yield (enclosing message's full name, field) for every field."""
    def visit(prefix: str, messages) -> Iterator[Tuple[str, _FDP]]:
        for msg in messages:
            name = f"{prefix}.{msg.name}"
            for field in msg.field:
                yield name, field
            yield from visit(name, msg.nested_type)

    yield from visit("." + fdp.package if fdp.package else "", fdp.message_type)


def _lookup(scope: str, name: str, known: Dict[str, int]) -> Optional[str]:
    """Resolve ``name`` as protoc does: innermost enclosing scope first."""
    if name.startswith("."):
        return name if name in known else None
    parts = scope.split(".")
    while True:
        candidate = ".".join(parts + [name])
        if candidate in known:
            return candidate
        if not parts or parts == [""]:
            return None
        parts.pop()


def _enum_values(fdp: descriptor_pb2.FileDescriptorProto, full_name: str) -> List[str]:
    """Value names of the enum called ``full_name``."""
    prefix = "." + fdp.package if fdp.package else ""
    path = full_name[len(prefix) + 1:].split(".")
    messages, enums = fdp.message_type, fdp.enum_type
    for part in path[:-1]:
        msg = next(m for m in messages if m.name == part)
        messages, enums = msg.nested_type, msg.enum_type
    enum = next(e for e in enums if e.name == path[-1])
    return [value.name for value in enum.value]


def _default_text(field: _FDP, raw: str, enum_values: Callable[[], List[str]], where: str) -> str:
    """Convert a default as written in the .proto to descriptor form."""
    kind = field.type
    if kind in (_FDP.TYPE_STRING, _FDP.TYPE_BYTES):
        if raw[:1] not in ("'", '"'):
            raise ProtoSyntaxError(f"{where}: expected a quoted string default for {field.name}")
        value = ast.literal_eval(raw)
        if kind == _FDP.TYPE_BYTES:
            return value.encode("unicode_escape").decode("ascii")
        return value
    if kind == _FDP.TYPE_BOOL:
        if raw not in ("true", "false"):
            raise ProtoSyntaxError(f"{where}: expected true or false as default for {field.name}")
        return raw
    if kind == _FDP.TYPE_ENUM:
        if raw not in enum_values():
            raise ProtoSyntaxError(f"{where}: expected a value of {field.type_name} as default "
                                   f"for {field.name}, found {raw!r}")
        return raw
    if kind in _INT_TYPES:
        try:
            value = int(raw, 0)
        except ValueError:
            raise ProtoSyntaxError(f"{where}: expected an integer default for {field.name}, "
                                   f"found {raw!r}") from None
        if value < 0 and kind in _UNSIGNED_TYPES:
            raise ProtoSyntaxError(f"{where}: negative default for unsigned field {field.name}")
        return str(value)
    if kind in _FLOAT_TYPES:
        try:
            return repr(float(raw))
        except ValueError:
            raise ProtoSyntaxError(f"{where}: expected a number default for {field.name}, "
                                   f"found {raw!r}") from None
    raise ProtoSyntaxError(f"{where}: message field {field.name} cannot have a default")


def _resolve_types(fdp: descriptor_pb2.FileDescriptorProto,
                   pending: List[Tuple[_FDP, str, int, Optional[str]]]) -> None:
    """Qualify type names, set message/enum kinds and convert defaults."""
    known = _collect_types(fdp)
    scopes = {id(field): scope for scope, field in _walk_fields(fdp)}
    for field, filename, line, raw_default in pending:
        where = f"{filename}:{line}"
        if field.type_name:
            full = _lookup(scopes[id(field)], field.type_name, known)
            if full is None:
                raise ProtoSyntaxError(f"{where}: expected a known type for field {field.name}, "
                                       f"found {field.type_name!r}")
            field.type_name = full
            field.type = known[full]
        if field.options.HasField("packed") and (
                field.label != _FDP.LABEL_REPEATED
                or field.type in (_FDP.TYPE_STRING, _FDP.TYPE_BYTES, _FDP.TYPE_MESSAGE)):
            raise ProtoSyntaxError(f"{where}: [packed] needs a repeated scalar field, "
                                   f"not {field.name}")
        if raw_default is not None:
            if field.label == _FDP.LABEL_REPEATED:
                raise ProtoSyntaxError(f"{where}: repeated field {field.name} cannot have a default")
            field.default_value = _default_text(
                field, raw_default, lambda f=field: _enum_values(fdp, f.type_name), where)


def parse_proto(text: str, filename: str) -> descriptor_pb2.FileDescriptorProto:
    """Parse proto2 source into a fully resolved FileDescriptorProto."""
    parser = _Parser(text, filename)
    fdp = parser.parse()
    _resolve_types(fdp, parser.pending)
    return fdp


def _message_class(descriptor) -> type:
    """The runtime's message class for a descriptor, on any protobuf >= 4.21."""
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def load_proto(path: Path | str) -> Tuple[FileDescriptor, Dict[str, type]]:
    """Load a .proto file into a private pool.

    Returns the FileDescriptor and a dict mapping each top-level message name
    to its class (nested messages are attributes of their parents).
    """
    path = Path(path)
    fdp = parse_proto(path.read_text(encoding="utf-8"), path.name)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    file_descriptor = pool.FindFileByName(fdp.name)
    classes = {name: _message_class(desc)
               for name, desc in file_descriptor.message_types_by_name.items()}
    return file_descriptor, classes
