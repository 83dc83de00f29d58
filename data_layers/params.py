"""Reading a Python layer's ``param_str``, and checking each value's type and range.

Caffe hands a Python layer one string; the FCN release wrote a Python dict literal there. We parse it with
``ast.literal_eval`` (never ``eval``: a prototxt is data, and must not run code) and check the keys, so a
misspelt key is an error instead of a silently ignored setting. Values are checked too, each with a
one-line error naming the key, the expected type and range: ``bool('no')`` is True, so a flag written
as a string would silently switch the option on, and a value out of range (a jitter larger than any
image, an infinite mean) would quietly train on garbage.
"""
import ast
import math
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

#: Longer param_str texts are refused before parsing (a dict of settings is a few hundred characters).
MAX_PARAM_STR = 65536


def parse_param_str(text: str, required: Iterable[str], optional: Iterable[str],
                    where: str) -> Dict[str, Any]:
    """The dict in ``text``; raises ValueError naming ``where`` for non-literals, missing or unknown keys."""
    if len(text) > MAX_PARAM_STR:
        raise ValueError(f"{where}: param_str is {len(text)} characters long; at most {MAX_PARAM_STR} are read")
    try:
        params = ast.literal_eval(text) if text.strip() else {}
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as err:
        reason = f"{type(err).__name__}: nested too deeply" if isinstance(err, (RecursionError, MemoryError)) \
            else str(err)
        raise ValueError(f"{where}: param_str must be a Python dict literal, got {text[:80]!r} ({reason})") \
            from None
    if not isinstance(params, dict):
        raise ValueError(f"{where}: param_str must be a dict literal, got {type(params).__name__}")
    required, optional = list(required), list(optional)
    missing = [key for key in required if key not in params]
    if missing:
        raise ValueError(f"{where}: param_str lacks {', '.join(missing)}")
    unknown = sorted(set(params) - set(required) - set(optional), key=repr)
    if unknown:
        raise ValueError(f"{where}: unknown param_str key(s) {', '.join(map(repr, unknown))}; "
                         f"accepted: {', '.join(required + optional)}")
    return params


def _bad(where: str, key: str, expected: str, value: Any) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    return ValueError(f"{where}: param_str {key} must be {expected}, got {shown}")


def flag(params: Dict[str, Any], key: str, default: bool, where: str) -> bool:
    """A yes/no setting: True or False (1 and 0 too); a string such as 'no' is an error, not True."""
    value = params.get(key, default)
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
        return bool(value)
    raise _bad(where, key, "True or False", value)


def integer(params: Dict[str, Any], key: str, default: Optional[int], low: int, high: int, where: str,
            none_ok: bool = False) -> Optional[int]:
    """An int in ``[low, high]`` (None allowed with ``none_ok``); floats and bools are errors."""
    value = params.get(key, default)
    if value is None and none_ok:
        return None
    if type(value) is int and low <= value <= high:
        return value
    expected = f"an integer in [{low}, {high}]" + (" or None" if none_ok else "")
    raise _bad(where, key, expected, value)


def numbers(params: Dict[str, Any], key: str, default: Sequence[float], count: int, bound: float,
            where: str) -> Tuple[float, ...]:
    """``count`` finite numbers, each within ``[-bound, bound]``."""
    value = params.get(key, default)
    ok = isinstance(value, (list, tuple)) and len(value) == count and all(
        type(v) in (int, float) and math.isfinite(v) and abs(v) <= bound for v in value)
    if not ok:
        raise _bad(where, key, f"{count} finite numbers in [{-bound:g}, {bound:g}]", value)
    return tuple(float(v) for v in value)


def choice(params: Dict[str, Any], key: str, choices: Sequence[Any], where: str) -> Any:
    """One of ``choices`` (None: the key may be absent)."""
    value = params.get(key)
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    raise _bad(where, key, f"one of {', '.join(map(repr, choices))}", value)


def text(params: Dict[str, Any], key: str, where: str) -> str:
    """A non-empty string (a split name, a folder)."""
    value = params.get(key)
    if isinstance(value, str) and value:
        return value
    raise _bad(where, key, "a non-empty string", value)
