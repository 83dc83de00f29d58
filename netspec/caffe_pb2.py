"""Drop-in for protoc's ``caffe_pb2``, built from caffe.proto at import time.

Loading the schema at run time (see :mod:`netspec.proto_loader`) keeps this
package independent of protoc and of the gencode/runtime version pairing that
generated modules impose.  The module exposes what generated code does: each
top-level message class, each top-level enum as an ``EnumTypeWrapper`` with
its values as module constants, and ``DESCRIPTOR``.
"""
from pathlib import Path

from google.protobuf.internal import enum_type_wrapper

from netspec.proto_loader import load_proto

DESCRIPTOR, _classes = load_proto(Path(__file__).with_name("caffe.proto"))


def _ensure_nested_enums(cls: type) -> None:
    """Give ``cls`` (and its nested classes) the enum attributes generated classes have.

    Current runtimes already add them; older ones may not, so fill any gap:
    ``PoolingParameter.PoolMethod`` as a wrapper and ``PoolingParameter.MAX``
    as a value.
    """
    descriptor = cls.DESCRIPTOR
    for enum in descriptor.enum_types:
        if not hasattr(cls, enum.name):
            setattr(cls, enum.name, enum_type_wrapper.EnumTypeWrapper(enum))
        for value in enum.values:
            if not hasattr(cls, value.name):
                setattr(cls, value.name, value.number)
    for nested in descriptor.nested_types:
        _ensure_nested_enums(getattr(cls, nested.name))


for _name, _cls in _classes.items():
    _ensure_nested_enums(_cls)
    globals()[_name] = _cls

for _enum in DESCRIPTOR.enum_types_by_name.values():
    globals()[_enum.name] = enum_type_wrapper.EnumTypeWrapper(_enum)
    for _value in _enum.values:
        globals()[_value.name] = _value.number

del _name, _cls, _enum, _value
