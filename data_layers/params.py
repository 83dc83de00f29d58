"""Reading a Python layer's ``param_str``.

Caffe hands a Python layer one string; the FCN release wrote a Python dict literal there. We parse it with
``ast.literal_eval`` (never ``eval``: a prototxt is data, and must not run code) and check the keys, so a
misspelt key is an error instead of a silently ignored setting.
"""
import ast
from typing import Any, Dict, Iterable


def parse_param_str(text: str, required: Iterable[str], optional: Iterable[str],
                    where: str) -> Dict[str, Any]:
    """The dict in ``text``; raises ValueError naming ``where`` for non-literals, missing or unknown keys."""
    try:
        params = ast.literal_eval(text) if text.strip() else {}
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{where}: param_str must be a Python dict literal, got {text!r} ({err})") from err
    if not isinstance(params, dict):
        raise ValueError(f"{where}: param_str must be a dict literal, got {type(params).__name__}")
    required, optional = list(required), list(optional)
    missing = [key for key in required if key not in params]
    if missing:
        raise ValueError(f"{where}: param_str lacks {', '.join(missing)}")
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{where}: unknown param_str key(s) {', '.join(map(str, unknown))}; "
                         f"accepted: {', '.join(required + optional)}")
    return params
