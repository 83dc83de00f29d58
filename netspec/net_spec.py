"""The NetSpec DSL: write a Caffe net as Python calls and get the NetParameter pycaffe would.

A net script calls ``L.<Type>(bottoms..., **fields)`` to make layers, passes the returned
``Top`` objects on as bottoms, and names blobs by assigning tops to a ``NetSpec``. The rules
are pycaffe's, so scripts written for ``caffe.net_spec`` produce equal messages:

* a layer is named after the attribute its first top is assigned to; unnamed tops (and
  layers without tops) get ``<Type><k>`` names, counted per type in serialisation order;
* ``in_place=True`` makes the tops reuse the bottoms' blob names;
* ``ntop=`` sets the number of tops: 0 returns the layer itself, 1 a ``Top``, more a tuple;
* a keyword ending in ``param`` is a LayerParameter field; any other keyword goes into the
  layer type's own ``<type>_param`` message when that message has such a field, else into
  LayerParameter; lists fill repeated fields, dicts fill sub-messages;
* ``to_proto`` emits every layer after the layers it reads from, walking the assigned tops
  in assignment order and each layer's bottoms in order (depth first).

Unlike pycaffe, keywords are checked when the layer is written, so a typo fails at the line
that made it, naming the layer type and the keyword.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Union

from google.protobuf.message import Message

from netspec import caffe_pb2

__all__ = [
    "Function",
    "L",
    "LayerParamError",
    "Layers",
    "NetSpec",
    "P",
    "Parameters",
    "Top",
    "layers",
    "param_name_dict",
    "params",
    "to_proto",
]

# Layer types that read another type's parameter message. pycaffe only derives names from
# message names, so there `L.Deconvolution(x, num_output=...)` fails and scripts must spell
# `convolution_param=dict(...)`; accepting the flat form too is safe because none of these
# messages shares a field name with LayerParameter (tests check that).
_SHARED_PARAM_MESSAGES = {
    "Deconvolution": "convolution",
    "Im2col": "convolution",
    "LSTM": "recurrent",
    "RNN": "recurrent",
}


class LayerParamError(TypeError):
    """A layer keyword that names no field, or a value its field cannot hold.

    A TypeError, as Python raises for any unexpected keyword argument.
    """


def param_name_dict() -> dict[str, str]:
    """Map layer type names to the prefix of the ``<prefix>_param`` field they use.

    Derived from caffe.proto as pycaffe does (``ConvolutionParameter convolution_param``
    gives ``Convolution -> convolution``), plus the types that borrow another's message.
    """
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name.removesuffix("Parameter")
            names[type_name] = field.name.removesuffix("_param")
    names.update(_SHARED_PARAM_MESSAGES)
    return names


_PARAM_NAMES = param_name_dict()


def _fill_message(message: Message, value: Any, where: str, path: str) -> None:
    """Merge a dict (or a message of the same type) into ``message``."""
    if isinstance(value, dict):
        for key, item in value.items():
            _assign(message, key, item, where, path)
    elif isinstance(value, Message) and value.DESCRIPTOR is message.DESCRIPTOR:
        message.MergeFrom(value)
    else:
        raise LayerParamError(
            f"{where}: {path} is a {message.DESCRIPTOR.name} message, give a dict, "
            f"not {value!r}")


def _assign(message: Message, name: str, value: Any, where: str, path: str = "") -> None:
    """Set field ``name`` of ``message`` from a Python value, recursing into dicts.

    ``where`` names the layer call and ``path`` the dotted field path down to ``message``,
    so that an error says exactly which field of which layer was wrong. A value that is
    not a list, given to a repeated field, is taken as a one-element list (as in pycaffe).
    """
    here = f"{path}.{name}" if path else name
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        owner = f"{path} ({message.DESCRIPTOR.name})" if path else message.DESCRIPTOR.name
        raise LayerParamError(f"{where}: {owner} has no field '{name}'")
    current = getattr(message, name)
    try:
        if hasattr(current, "extend"):  # repeated (FieldDescriptor.label is gone in protobuf 7)
            items = value if isinstance(value, (list, tuple)) else [value]
            for i, item in enumerate(items):
                if field.message_type is not None:
                    _fill_message(current.add(), item, where, f"{here}[{i}]")
                else:
                    current.append(item)
        elif field.message_type is not None:
            _fill_message(current, value, where, here)
        else:
            setattr(message, name, value)
    except LayerParamError:
        raise
    except (TypeError, ValueError) as err:
        raise LayerParamError(f"{where}: {here} cannot hold {value!r} ({err})") from err


_LAYER_FIELDS = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name


def _layer_fields(type_name: str, kwargs: dict[str, Any]) -> caffe_pb2.LayerParameter:
    """Route a layer call's keywords into a LayerParameter, as pycaffe routes them."""
    fields = caffe_pb2.LayerParameter()
    where = f"L.{type_name}"
    prefix = _PARAM_NAMES.get(type_name)
    # Reading a sub-message does not mark it set: an unused one stays out of the output.
    own = getattr(fields, prefix + "_param") if prefix else None
    for key, value in kwargs.items():
        if own is not None and not key.endswith("param") and key in own.DESCRIPTOR.fields_by_name:
            _assign(own, key, value, where, prefix + "_param")
        elif key.endswith("param") or key in _LAYER_FIELDS:
            _assign(fields, key, value, where)
        else:
            own_text = f"{own.DESCRIPTOR.name} ({prefix}_param) nor of " if own is not None else ""
            raise LayerParamError(
                f"{where}: keyword '{key}' is not a field of {own_text}LayerParameter")
    return fields


class Top:
    """One output blob of a layer: what a net script passes on as a bottom.

    ``fn`` is the producing layer and ``n`` the index among its tops. ``spec_name`` is the
    NetSpec attribute it was last assigned to, kept only to name it in error messages.
    """

    def __init__(self, fn: Function, n: int) -> None:
        self.fn = fn
        self.n = n
        self.spec_name: str | None = None

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The layers needed to compute this top, with generated blob names."""
        return to_proto(self)

    def __str__(self) -> str:
        """How error messages name it: by its NetSpec name where it has one."""
        if self.spec_name is not None:
            return f"top '{self.spec_name}' ({self.fn.type_name})"
        return f"top {self.n} of an unnamed {self.fn.type_name} layer"

    def __repr__(self) -> str:
        return f"<{self}>"


class Function:
    """One layer: its type, its bottoms, the fields its keywords set, and its tops."""

    def __init__(self, type_name: str, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        ntop = kwargs.pop("ntop", 1)
        in_place = kwargs.pop("in_place", False)
        if not isinstance(ntop, int) or isinstance(ntop, bool) or ntop < 0:
            raise LayerParamError(f"L.{type_name}: ntop must be an int >= 0, not {ntop!r}")
        for i, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(
                    f"L.{type_name}: bottom {i} is a {type(bottom).__name__}, not a Top "
                    "(unpack multi-top layers: a, b = L.X(..., ntop=2))")
        if in_place and not inputs:
            raise LayerParamError(f"L.{type_name}: in_place needs a bottom to write over")
        self.type_name = type_name
        self.inputs = inputs
        self.ntop = ntop
        self.in_place = bool(in_place)
        self.fields = _layer_fields(type_name, kwargs)
        self.tops = tuple(Top(self, n) for n in range(ntop))

    def __repr__(self) -> str:
        return f"<{self.type_name} layer with {self.ntop} top(s)>"


Named = Union[Top, Function]


def _auto_name(key: Named, type_name: str, names: dict[Named, str], counter: Counter) -> str:
    """The name given to ``key``, or the next ``<Type><k>`` if it has none yet."""
    if key not in names:
        counter[type_name] += 1
        names[key] = f"{type_name}{counter[type_name]}"
    return names[key]


def _layer_proto(fn: Function, built: dict[Function, caffe_pb2.LayerParameter],
                 names: dict[Named, str], counter: Counter) -> caffe_pb2.LayerParameter:
    """Serialise one layer whose bottoms are already built; names are settled here."""
    layer = caffe_pb2.LayerParameter(type=fn.type_name)
    layer.bottom.extend(built[bottom.fn].top[bottom.n] for bottom in fn.inputs)
    if fn.in_place:
        layer.top.extend(layer.bottom)
    else:
        layer.top.extend(_auto_name(top, fn.type_name, names, counter) for top in fn.tops)
    if fn in names or not fn.tops:
        layer.name = _auto_name(fn, fn.type_name, names, counter)
    else:
        layer.name = _auto_name(fn.tops[0], fn.type_name, names, counter)
    # Keyword fields last: a `name=` or `top=` keyword acts on the result as in pycaffe.
    layer.MergeFrom(fn.fields)
    return layer


def _serialize(roots: Iterable[Named], names: dict[Named, str]) -> caffe_pb2.NetParameter:
    """Emit the layers behind ``roots`` in depth-first post-order (pycaffe's order).

    Iterative, so arbitrarily deep nets do not hit Python's recursion limit.
    """
    built: dict[Function, caffe_pb2.LayerParameter] = {}
    counter: Counter = Counter()
    for root in roots:
        stack = [(root.fn if isinstance(root, Top) else root, 0)]
        while stack:
            fn, next_input = stack.pop()
            if fn in built:
                continue
            if next_input < len(fn.inputs):
                stack.append((fn, next_input + 1))
                stack.append((fn.inputs[next_input].fn, 0))
            else:
                built[fn] = _layer_proto(fn, built, names, counter)
    net = caffe_pb2.NetParameter()
    net.layer.extend(built.values())
    return net


def to_proto(*tops: Named) -> caffe_pb2.NetParameter:
    """The layers needed to compute ``tops``, every blob named ``<Type><k>``."""
    return _serialize(tops, {})


class NetSpec:
    """Tops named by assignment: ``n.conv1 = L.Convolution(n.data, ...)`` names blob and layer.

    ``to_proto()`` serialises everything the assigned tops need, in assignment order.
    Item access (``n['conv1' + suffix] = ...``) works as attribute access does.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "tops", {})

    def __setattr__(self, name: str, value: Named) -> None:
        self[name] = value

    def __setitem__(self, name: str, value: Named) -> None:
        if not isinstance(value, (Top, Function)):
            raise TypeError(
                f"NetSpec.{name}: assign a Top (or an ntop=0 layer), not a "
                f"{type(value).__name__}; unpack multi-top layers: n.a, n.b = L.X(..., ntop=2)")
        if isinstance(value, Top):
            value.spec_name = name
        self.tops[name] = value

    def __getattr__(self, name: str) -> Named:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __getitem__(self, name: str) -> Named:
        return self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def keys(self) -> list[str]:
        """Assigned names, in assignment order."""
        return list(self.tops)

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer the assigned tops need, named by assignment."""
        names: dict[Named, str] = {value: name for name, value in self.tops.items()}
        return _serialize(self.tops.values(), names)


class Layers:
    """``L.<Type>(*bottoms, **fields)`` makes a layer of that Caffe type.

    Any type name is accepted, as Caffe registers layer types at run time (Python layers,
    custom C++ layers); only the keywords are checked against caffe.proto.
    """

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def make_layer(*bottoms: Top, **kwargs: Any) -> Top | tuple[Top, ...] | Function:
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops

        make_layer.__name__ = make_layer.__qualname__ = type_name
        return make_layer


class Parameters:
    """``P.<Type>`` is caffe.proto's ``<Type>Parameter``: ``P.Pooling.MAX`` is an enum value."""

    def __getattr__(self, type_name: str) -> type:
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        try:
            return getattr(caffe_pb2, type_name + "Parameter")
        except AttributeError:
            raise AttributeError(f"caffe.proto has no message {type_name}Parameter") from None


layers = L = Layers()
params = P = Parameters()
