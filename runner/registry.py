"""One registry of layer implementations, keyed by Caffe type name.

Layer modules register themselves with ``@register("Convolution")``; the Net looks types up here so that
an unknown type fails with one clear message listing what is supported.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Type, TypeVar

_LAYERS: Dict[str, type] = {}
#: Types the Net itself implements (input blobs, the Python-layer host) rather than a layer class.
NET_HANDLED_TYPES = ("Input", "Python")
T = TypeVar("T", bound=type)


def register(*type_names: str) -> Callable[[T], T]:
    """Class decorator: make the class the implementation of each given Caffe layer type."""
    def decorate(cls: T) -> T:
        for name in type_names:
            if name in _LAYERS and _LAYERS[name] is not cls:
                raise ValueError(f"layer type {name!r} registered twice ({_LAYERS[name].__name__}, {cls.__name__})")
            _LAYERS[name] = cls
        return cls
    return decorate


def layer_class(type_name: str, layer_name: str = "?") -> Type:
    """The implementation of ``type_name``; an error naming the layer and the supported types if none."""
    _load_builtin_layers()
    try:
        return _LAYERS[type_name]
    except KeyError:
        raise ValueError(f"layer {clipped(layer_name)}: unsupported layer type {clipped(type_name)}; "
                         f"supported types: {', '.join(layer_type_list())}") from None


def clipped(text: str, keep: int = 60) -> str:
    """``text`` quoted for an error message, cut after ``keep`` characters: a malformed file may hold a
    ten-megabyte name, which no message should echo whole."""
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep]!r}... ({len(text):,} characters)"


def layer_type_list() -> List[str]:
    """Every registered Caffe type, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    _load_builtin_layers()
    return sorted(set(_LAYERS) | set(NET_HANDLED_TYPES))


def _load_builtin_layers() -> None:
    # Importing the package runs each family module's @register decorators.
    import runner.layers  # noqa: F401
