"""Command-line flags as Google gflags parses them, for the ports of Caffe's tools.

Caffe's tools (``caffe``, ``convert_imageset``, ``compute_image_mean``) take gflags flags, and scripts
call them with every spelling gflags accepts: ``-flag=value``, ``--flag=value``, ``-flag value``; bool
flags as ``--flag``, ``--noflag`` or ``--flag=false``; ``--`` ends the flags; flags and positional
arguments may be interleaved. Errors read exactly as gflags writes them (``ERROR: unknown command line
flag 'x'``) and, through ``parse_or_exit``, end the program with status 1 as gflags does. The usage
text is gflags' ``ShowUsageWithFlagsRestrict`` layout.

Usage::

    flags = Flags("Compute the mean image ...", source="tools/compute_image_mean.cpp")
    flags.define("backend", "lmdb", "The backend {leveldb, lmdb} containing the images")
    define_glog_flags(flags)  # --minloglevel, --logtostderr ..., as every Caffe tool takes them
    values, args = flags.parse_or_exit(sys.argv[1:], program="compute_image_mean")
    values.backend, args

API: ``Flags(usage, source)``, ``define(name, default, help, kind=None, shown=True)``, ``parse(argv)``
(raises FlagError), ``parse_or_exit(argv, program)``, ``usage(program)``; ``define_glog_flags(flags)``.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: gflags' types and the range of the integer ones.
_INT_RANGES = {"int32": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1), "uint64": (0, 2 ** 64 - 1)}
_TRUE, _FALSE = ("1", "t", "true", "y", "yes"), ("0", "f", "false", "n", "no")
_DECIMAL = re.compile(r"\s*[+-]?[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_DOUBLE = re.compile(r"\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf(inity)?|nan)", re.IGNORECASE)
_LINE = 80  # gflags' kLineLength
#: gflags' own help flags: each prints the usage and exits with status 1, as gflags does.
HELP_FLAGS = ("help", "helpfull", "helpshort")


class FlagError(Exception):
    """A command line gflags refuses; the message is gflags' own text, one ``ERROR: ...`` line per problem."""


@dataclass
class Flag:
    """One defined flag: gflags type name (bool, int32, int64, uint64, double, string), default, help."""
    name: str
    kind: str
    default: Any
    help: str
    shown: bool = True


class Flags:
    """The flags of one program: define them, then parse a command line."""

    def __init__(self, usage: str, source: str = "") -> None:
        self.usage_message = usage
        self.source = source
        self._flags: Dict[str, Flag] = {}
        for name in HELP_FLAGS:
            self.define(name, False, "show help on all flags", shown=False)

    def define(self, name: str, default: Any, help: str, kind: Optional[str] = None, shown: bool = True) -> None:
        """A flag; its type follows the default (bool, int -> int32, float -> double, str -> string) unless
        ``kind`` names one. ``shown=False`` keeps it out of the usage text (flags accepted for
        compatibility, like glog's)."""
        if kind is None:
            kind = {bool: "bool", int: "int32", float: "double", str: "string"}.get(type(default))
        if kind not in ("bool", "double", "string") + tuple(_INT_RANGES):
            raise ValueError(f"flag {name!r}: unknown gflags type {kind!r}")
        if name in self._flags:
            raise ValueError(f"flag {name!r} defined twice")
        self._flags[name] = Flag(name, kind, default, help, shown)

    # ----- parsing -----
    def parse(self, argv: Sequence[str]) -> Tuple[SimpleNamespace, List[str]]:
        """gflags' ParseCommandLineFlags on ``argv`` (without the program name): the flag values (every
        defined flag, by name) and the positional arguments in their order. FlagError lists every
        problem, one gflags line each, sorted by flag name as gflags reports them."""
        values = {name: flag.default for name, flag in self._flags.items()}
        positional: List[str] = []
        errors: Dict[str, str] = {}
        index = 0
        while index < len(argv):
            arg = argv[index]
            index += 1
            if not arg.startswith("-") or arg == "-":
                positional.append(arg)
                continue
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body:  # "--" alone: the rest is positional
                positional.extend(argv[index:])
                break
            flag, key, value, error = self._split(body)
            if flag is None:
                errors[key] = error
                continue
            if value is None:
                if index >= len(argv):
                    text = f"ERROR: flag '{arg}' is missing its argument"
                    errors[key] = text + (f"; flag description: {flag.help}" if flag.help else "")
                    break  # gflags treats this as unrecoverable
                value = argv[index]
                index += 1
            parsed = _parse_value(flag, value)
            if parsed is None:
                errors[key] = f"ERROR: illegal value '{value}' specified for {flag.kind} flag '{flag.name}'"
            else:
                values[flag.name] = parsed
        if errors:
            raise FlagError("\n".join(errors[key] for key in sorted(errors)))
        return SimpleNamespace(**values), positional

    def _split(self, body: str) -> Tuple[Optional[Flag], str, Optional[str], str]:
        """gflags' SplitArgumentLocked: the flag, its key, the value given (None: take the next argument)."""
        key, equals, value = body.partition("=")
        given: Optional[str] = value if equals else None
        flag = self._flags.get(key)
        if flag is None:
            unknown = f"ERROR: unknown command line flag '{key}'"
            if not key.startswith("no") or key[2:] not in self._flags:
                return None, key, None, unknown
            flag = self._flags[key[2:]]
            if flag.kind != "bool":
                return None, key, None, f"ERROR: boolean value ({key}) specified for {flag.kind} command line flag"
            return flag, key[2:], "0", ""
        if given is None and flag.kind == "bool":
            given = "1"
        return flag, key, given, ""

    def parse_or_exit(self, argv: Sequence[str], program: str) -> Tuple[SimpleNamespace, List[str]]:
        """``parse``, and on an error print gflags' message to stderr and exit with status 1; a help flag
        prints the usage to stdout and exits with status 1, as gflags does."""
        try:
            values, positional = self.parse(argv)
        except FlagError as err:
            sys.stderr.write(f"{err}\n")
            raise SystemExit(1) from None
        if any(getattr(values, name) for name in HELP_FLAGS):
            sys.stdout.write(self.usage(program))
            raise SystemExit(1)
        return values, positional

    # ----- usage -----
    def usage(self, program: str) -> str:
        """gflags' ShowUsageWithFlagsRestrict for this program's flags (sorted by name)."""
        text = f"{program}: {self.usage_message}\n"
        shown = [self._flags[name] for name in sorted(self._flags) if self._flags[name].shown]
        if shown:
            text += f"\n  Flags from {self.source}:\n" + "".join(_describe(flag) for flag in shown)
        return text


def define_glog_flags(flags: Flags) -> None:
    """glog's own flags, which every Caffe tool accepts (glog defines them through gflags), with the
    ``GLOG_*`` environment as their defaults, as glog has it; hidden from the usage, which shows only the
    tool's flags. Only ``minloglevel`` changes anything here: the tools log to stderr anyway
    (alsologtostderr) and no log files are written (``netspec.glog``)."""
    from netspec import glog
    flags.define("minloglevel", glog.env_int("GLOG_minloglevel", 0),
                 "Messages logged at a lower level than this don't actually get logged anywhere", shown=False)
    for name, help in (("logtostderr", "log messages go to stderr instead of logfiles"),
                       ("alsologtostderr", "log messages go to stderr in addition to logfiles"),
                       ("colorlogtostderr", "color messages logged to stderr (if supported by terminal)")):
        flags.define(name, glog.env_bool(f"GLOG_{name}"), help, shown=False)
    flags.define("stderrthreshold", glog.env_int("GLOG_stderrthreshold", 2),
                 "log messages at or above this level are copied to stderr in addition to logfiles", shown=False)
    flags.define("log_dir", os.environ.get("GLOG_log_dir", ""),
                 "If specified, logfiles are written into this directory instead of the default logging "
                 "directory.", shown=False)
    flags.define("v", glog.env_int("GLOG_v", 0), "Show all VLOG(m) messages for m <= this.", shown=False)


def _parse_value(flag: Flag, value: str) -> Any:
    """gflags' FlagValue::ParseFrom: the value, or None when gflags calls it illegal."""
    if flag.kind == "string":
        return value
    if flag.kind == "bool":
        lowered = value.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else None
    if flag.kind == "double":
        return float(value) if _DOUBLE.fullmatch(value) else None
    if _HEX.fullmatch(value):
        number = int(value, 16)
    elif _DECIMAL.fullmatch(value):
        number = int(value)
    else:
        return None
    low, high = _INT_RANGES[flag.kind]
    return number if low <= number <= high else None


def _describe(flag: Flag) -> str:
    """gflags' DescribeOneFlag: ``-name (help) type: T default: D``, wrapped before 80 columns."""
    rest = f"    -{flag.name} ({flag.help})"
    out, column = "", 0
    while True:
        newline = rest.find("\n")
        if newline < 0 and column + len(rest) < _LINE:
            out += rest
            column += len(rest)
            break
        if 0 <= newline < _LINE - column:
            out += rest[:newline]
            rest = rest[newline + 1:]
        else:
            cut = _LINE - column - 1
            while cut > 0 and not rest[cut].isspace():
                cut -= 1
            if cut <= 0:
                out += rest
                column = _LINE
                break
            out += rest[:cut]
            column += cut
            rest = rest[cut:].lstrip()
        if not rest:
            break
        out += "\n      "
        column = 6
    for part in (f"type: {flag.kind}", f"default: {_default_text(flag)}"):
        if column + 1 + len(part) >= _LINE:
            out += "\n      " + part
            column = 6 + len(part)
        else:
            out += " " + part
            column += 1 + len(part)
    return out + "\n"


def _default_text(flag: Flag) -> str:
    if flag.kind == "string":
        return f'"{flag.default}"'
    if flag.kind == "bool":
        return "true" if flag.default else "false"
    if flag.kind == "double":
        return f"{flag.default:.17g}"
    return str(flag.default)
