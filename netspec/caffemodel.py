"""Binary Caffe files: ``.caffemodel`` (NetParameter) and ``.solverstate`` (SolverState).

Why not just ``NetParameter.FromString``: parsing is fast, but getting the
weights out of protobuf's repeated float fields costs a Python object per
element (minutes for the 540 MB FCN-8s release).  The loaders here walk the
wire format down to each BlobProto (:mod:`netspec.wire`), take its packed
``data``/``double_data`` bytes as a numpy view of the file buffer, and let
protobuf parse only what is left (names, shapes, layer parameters).  The
arrays are writable and share memory with one buffer per file; they may be
unaligned, so copy them (``np.array``/``torch.tensor``) before heavy use.

Input may be gzip-compressed (detected by its magic bytes).  Anything that is
not the expected message (empty, truncated, a PNG, a prototxt) raises
CaffemodelError with one line naming the file; writes are atomic.
"""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

from netspec import caffe_pb2, limits, wire
from netspec.atomic import PathLike, write_atomically

Layer = Union["caffe_pb2.LayerParameter", "caffe_pb2.V1LayerParameter"]
Params = Dict[str, List[np.ndarray]]

_NET = "Caffe NetParameter (.caffemodel)"
_STATE = "Caffe SolverState (.solverstate)"
_GZIP_MAGIC = b"\x1f\x8b"
_LEGACY_DIMS = ("num", "channels", "height", "width")

# Where BlobProtos sit, as {field number: BLOB or nested schema}. A V1 layer may
# still wrap a V0 layer whose blobs live one level deeper.
_BLOB = "blob"
_V0_LAYER = {caffe_pb2.V0LayerParameter.BLOBS_FIELD_NUMBER: _BLOB}
_V1_LAYER = {caffe_pb2.V1LayerParameter.LAYER_FIELD_NUMBER: _V0_LAYER,
             caffe_pb2.V1LayerParameter.BLOBS_FIELD_NUMBER: _BLOB}
_LAYER = {caffe_pb2.LayerParameter.BLOBS_FIELD_NUMBER: _BLOB}
_NET_SCHEMA = {caffe_pb2.NetParameter.LAYER_FIELD_NUMBER: _LAYER,
               caffe_pb2.NetParameter.LAYERS_FIELD_NUMBER: _V1_LAYER}
_STATE_SCHEMA = {caffe_pb2.SolverState.HISTORY_FIELD_NUMBER: _BLOB}
# BlobProto payload fields: number -> (dtype, wire type of one unpacked element).
_PAYLOADS = {caffe_pb2.BlobProto.DATA_FIELD_NUMBER: (np.dtype("<f4"), wire.I32),
             caffe_pb2.BlobProto.DOUBLE_DATA_FIELD_NUMBER: (np.dtype("<f8"), wire.I64)}


class CaffemodelError(ValueError):
    """A binary Caffe file could not be read; one line naming the file and the problem."""


def blob_shape(blob: "caffe_pb2.BlobProto") -> Tuple[int, ...]:
    """The array shape a BlobProto declares, as Caffe's Blob::FromProto reads it.

    Legacy num/channels/height/width (any of them set, the rest default 0) win
    over ``shape``; released models use both, e.g. InnerProduct weights stored
    as 1x1xOxK.
    """
    if any(blob.HasField(name) for name in _LEGACY_DIMS):
        return tuple(getattr(blob, name) for name in _LEGACY_DIMS)
    return tuple(blob.shape.dim)


def load_caffemodel(path: PathLike) -> Tuple["caffe_pb2.NetParameter", Params]:
    """Read a caffemodel fast: (the net without blob data, {layer name: [arrays]}).

    The returned net keeps every field, blobs included with their shape fields
    and diffs, but with ``data``/``double_data`` emptied; the arrays (float32,
    or float64 for ``double_data``) carry the declared shapes (see blob_shape).
    V1 ``layers`` are included under their names, not upgraded.  Layers without
    blobs are not in the dict; if two layers share a name the later one wins,
    as in Caffe's CopyTrainedLayersFrom.
    """
    net, layers = load_caffemodel_layers(path)
    return net, dict(layers)


def load_caffemodel_layers(path: PathLike) -> Tuple["caffe_pb2.NetParameter", List[Tuple[str, List[np.ndarray]]]]:
    """As ``load_caffemodel``, with the arrays as ``(layer name, arrays)`` in file order, every layer that
    has blobs, two layers of one name included (a dict would keep only the later)."""
    net, per_layer = _load_net(Path(path))
    return net, [(_layer_name(layer), arrays) for layer, arrays in zip(_layers(net), per_layer) if arrays]


def read_caffemodel(path: PathLike) -> "caffe_pb2.NetParameter":
    """Read a caffemodel as one complete NetParameter, blob data included."""
    net, per_layer = _load_net(Path(path))
    for layer, arrays in zip(_layers(net), per_layer):
        for proto, array in zip(_blob_protos(layer), arrays):
            _set_blob_data(proto, array)
    return net


def with_blob_data(net: "caffe_pb2.NetParameter", params: Mapping[str, Sequence[np.ndarray]]
                   ) -> "caffe_pb2.NetParameter":
    """A copy of ``net`` whose layers named in ``params`` hold those arrays as blob data.

    A layer that already has blobs keeps their shape fields (the arrays must
    have as many values); a layer without blobs gets new ones shaped like the
    arrays.  float64 arrays go to ``double_data``, all others to ``data`` as
    float32.  A name in ``params`` that no layer has is an error.
    """
    full = caffe_pb2.NetParameter()
    full.CopyFrom(net)
    unused = set(params)
    for layer in _layers(full):
        name = _layer_name(layer)
        if name in params:
            unused.discard(name)
            _fill_layer(layer, name, params[name])
    if unused:
        raise ValueError(f"params for layers the net does not have: {', '.join(sorted(unused))}")
    return full


def fill_layer_blobs(layer: Layer, arrays: Sequence[np.ndarray]) -> None:
    """Put ``arrays`` into this one layer's blobs (see with_blob_data): for writers that go layer by layer,
    as two layers may share a name."""
    _fill_layer(layer, _layer_name(layer), arrays)


def save_caffemodel(path: PathLike, net: "caffe_pb2.NetParameter",
                    params: Optional[Mapping[str, Sequence[np.ndarray]]] = None) -> None:
    """Write ``net`` (with ``params`` filled in, see with_blob_data) as a binary caffemodel, atomically."""
    full = net if params is None else with_blob_data(net, params)
    write_atomically(path, full.SerializeToString())


def load_solverstate(path: PathLike) -> Tuple["caffe_pb2.SolverState", List[np.ndarray]]:
    """Read a solverstate: (the state without history data, history arrays in order)."""
    file = Path(path)
    buf = _read_buffer(file, _STATE)
    state, units = _parse(file, buf, caffe_pb2.SolverState, _STATE_SCHEMA, _STATE)
    arrays = units[caffe_pb2.SolverState.HISTORY_FIELD_NUMBER]
    return state, [_shaped(file, flat, proto, f"history blob {i}")
                   for i, ((flat,), proto) in enumerate(zip(arrays, state.history))]


def save_solverstate(path: PathLike, state: "caffe_pb2.SolverState",
                     history: Optional[Sequence[np.ndarray]] = None) -> None:
    """Write ``state`` as a binary solverstate, atomically.

    With ``history``, the state's history blobs are replaced by blobs shaped
    like those arrays.
    """
    full = state
    if history is not None:
        full = caffe_pb2.SolverState()
        full.CopyFrom(state)
        full.ClearField("history")
        for array in history:
            _new_blob(full.history, array)
    write_atomically(path, full.SerializeToString())


def _load_net(path: Path) -> Tuple["caffe_pb2.NetParameter", List[List[np.ndarray]]]:
    """The stripped net and, aligned with _layers(net), each layer's shaped arrays."""
    buf = _read_buffer(path, _NET)
    net, units = _parse(path, buf, caffe_pb2.NetParameter, _NET_SCHEMA, _NET)
    if not net.layer and not net.layers:
        raise CaffemodelError(f"{path}: not a valid {_NET}: it has no layers")
    flat_arrays = (units[caffe_pb2.NetParameter.LAYER_FIELD_NUMBER]
                   + units[caffe_pb2.NetParameter.LAYERS_FIELD_NUMBER])
    per_layer = []
    for layer, flats in zip(_layers(net), flat_arrays):
        name = _layer_name(layer)
        per_layer.append([_shaped(path, flat, proto, f"layer {name!r} blob {i}")
                          for i, (flat, proto) in enumerate(zip(flats, _blob_protos(layer)))])
    return net, per_layer


def _read_buffer(path: Path, expected: str) -> bytearray:
    """The file's bytes (gunzipped if gzip) in a bytearray, so numpy views are writable."""
    try:
        with open(path, "rb") as handle:
            buf = bytearray(os.fstat(handle.fileno()).st_size)
            with memoryview(buf) as view:
                got = 0
                while got < len(buf):
                    count = handle.readinto(view[got:])
                    if not count:
                        break
                    got += count
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found (expected a {expected})") from None
    except OSError as error:  # a folder, no permission...
        raise CaffemodelError(f"{path}: cannot read it as a {expected} ({error.strerror or error})") from None
    del buf[got:]
    if buf[:2] == _GZIP_MAGIC:
        buf = _gunzip(path, buf)
    if not buf:
        raise CaffemodelError(f"{path}: empty file, expected a {expected}")
    return buf


def _gunzip(path: Path, compressed: bytearray, chunk: int = 1 << 26) -> bytearray:
    """The gunzipped bytes, decompressed a chunk at a time so that a gzip bomb stops at the limit."""
    limit = limits.DECOMPRESSED_BYTES
    out = bytearray()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = bytes(compressed)
    try:
        while pending and not inflater.eof:
            out += inflater.decompress(pending, chunk)
            pending = inflater.unconsumed_tail
            limit.check(len(out), f"{path}: gunzipped")
        if not inflater.eof:
            raise EOFError("the gzip stream ends early")
    except (EOFError, zlib.error) as error:
        raise CaffemodelError(f"{path}: corrupt or truncated gzip data ({error})") from None
    return out


def _parse(path: Path, buf: bytearray, message_class: type, schema: dict, expected: str
           ) -> Tuple[Message, Dict[int, List[List[np.ndarray]]]]:
    """Strip blob payloads out of ``buf`` and parse the rest; errors name ``path``."""
    try:
        stripped, units = _split_top(buf, message_class.DESCRIPTOR, schema)
        return message_class.FromString(stripped), units
    except (wire.WireError, DecodeError) as error:
        raise CaffemodelError(f"{path}: not a valid {expected}: {error}") from None
    except limits.ResourceLimitError as error:
        raise limits.ResourceLimitError(f"{path}: {error}") from None


def _split_top(buf: bytearray, descriptor: Descriptor, schema: dict
               ) -> Tuple[bytes, Dict[int, List[List[np.ndarray]]]]:
    """Walk the top-level message: check wire types of known fields, strip blob payloads.

    Returns the stripped encoding and, per schema field, one list of flat
    arrays for each occurrence of that field (one per layer, or per history
    blob), in file order.  Strict wire types are what makes a PNG or a
    prototxt fail here instead of parsing as unknown fields.
    """
    known = {field.number: (field.name, wire.allowed_wire_types(field)) for field in descriptor.fields}
    kept = bytearray()
    units: Dict[int, List[List[np.ndarray]]] = {number: [] for number in schema}
    occurrences = 0
    for field in wire.fields(buf, 0, len(buf)):
        name, allowed = known.get(field.number, (None, None))
        if field.number in schema:
            occurrences += 1
            if occurrences > limits.NET_LAYERS.value:
                limits.NET_LAYERS.check(occurrences, f"{descriptor.name} entries ({name})")
        if allowed is not None and field.wire not in allowed:
            raise wire.WireError(field.start, f"field {field.number} ({name}) of {descriptor.name} "
                                              f"has wire type {field.wire}")
        child = schema.get(field.number)
        if child is None:
            kept += buf[field.start:field.end]
            continue
        arrays: List[np.ndarray] = []
        kept += _stripped_field(buf, field, child, arrays)
        units[field.number].append(arrays)
    return bytes(kept), units


def _stripped_field(buf: bytearray, field: wire.Field, child, arrays: List[np.ndarray]) -> bytes:
    """Re-encode a message field with the blob payloads below it moved into ``arrays``."""
    if field.wire != wire.LEN:
        raise wire.WireError(field.start, f"field {field.number} should be a message")
    if child is _BLOB:
        body = _strip_blob(buf, field.value_start, field.end, arrays)
    else:
        body = bytearray()
        for inner in wire.fields(buf, field.value_start, field.end):
            grandchild = child.get(inner.number)
            if grandchild is None:
                body += buf[inner.start:inner.end]
            else:
                body += _stripped_field(buf, inner, grandchild, arrays)
    return wire.length_delimited(field.number, bytes(body))


def _strip_blob(buf: bytearray, start: int, end: int, arrays: List[np.ndarray]) -> bytes:
    """Append the BlobProto's values as one flat array to ``arrays``; return the rest of it."""
    kept = bytearray()
    chunks: Dict[int, List[np.ndarray]] = {number: [] for number in _PAYLOADS}
    for field in wire.fields(buf, start, end):
        payload = _PAYLOADS.get(field.number)
        if payload is None:
            kept += buf[field.start:field.end]
            continue
        dtype, unpacked_wire = payload
        if field.wire not in (wire.LEN, unpacked_wire):
            raise wire.WireError(field.start, f"blob field {field.number} has wire type {field.wire}")
        nbytes = field.end - field.value_start
        if nbytes % dtype.itemsize:
            raise wire.WireError(field.start, f"packed blob data of {nbytes} bytes is not a whole "
                                              f"number of {dtype.itemsize}-byte values")
        chunks[field.number].append(np.frombuffer(buf, dtype, nbytes // dtype.itemsize, field.value_start))
    floats, doubles = (chunks[number] for number in _PAYLOADS)
    if floats and doubles:
        raise wire.WireError(start, "blob has both data and double_data")
    parts = doubles or floats
    if len(parts) == 1:
        arrays.append(parts[0])
    else:
        arrays.append(np.concatenate(parts) if parts else np.empty(0, np.float32))
    return bytes(kept)


#: Caffe's Blob refuses more than INT_MAX values.
_MAX_COUNT = 2 ** 31 - 1


def _shaped(path: Path, flat: np.ndarray, proto: "caffe_pb2.BlobProto", what: str) -> np.ndarray:
    """``flat`` reshaped to the blob's declared shape; a count mismatch names the file and blob."""
    shape = blob_shape(proto)
    if any(dim < 0 or dim > _MAX_COUNT for dim in shape):
        raise CaffemodelError(f"{path}: {what} declares shape {shape}: every dimension must be 0..{_MAX_COUNT} "
                              f"(Caffe's blob limit)")
    if flat.size != math.prod(shape):
        raise CaffemodelError(f"{path}: {what} declares shape {shape} ({math.prod(shape)} values) "
                              f"but holds {flat.size} values")
    return flat.reshape(shape)


def _layers(net: "caffe_pb2.NetParameter") -> List[Layer]:
    """Current ``layer`` entries, then V1 ``layers``: the order _load_net aligns arrays with."""
    return [*net.layer, *net.layers]


def _layer_name(layer: Layer) -> str:
    """A layer's name; a V1 layer converted from V0 may carry it only in its inner V0 layer."""
    if isinstance(layer, caffe_pb2.V1LayerParameter) and not layer.name:
        return layer.layer.name
    return layer.name


def _blob_protos(layer: Layer) -> List["caffe_pb2.BlobProto"]:
    """A layer's BlobProtos in file order (a V1 layer's inner V0 layer, field 1, comes first)."""
    if isinstance(layer, caffe_pb2.V1LayerParameter):
        return [*layer.layer.blobs, *layer.blobs]
    return list(layer.blobs)


def _fill_layer(layer: Layer, name: str, arrays: Sequence[np.ndarray]) -> None:
    """Put ``arrays`` into the layer's blobs (creating them if it has none)."""
    protos = _blob_protos(layer)
    if not protos:
        for array in arrays:
            _new_blob(layer.blobs, array)
        return
    if len(protos) != len(arrays):
        raise ValueError(f"layer {name!r} has {len(protos)} blobs but {len(arrays)} arrays were given")
    for i, (proto, array) in enumerate(zip(protos, arrays)):
        shape = blob_shape(proto)
        if np.size(array) != math.prod(shape):
            raise ValueError(f"layer {name!r} blob {i}: shape {shape} needs {math.prod(shape)} values, "
                             f"got an array of shape {np.shape(array)}")
        _set_blob_data(proto, array)


def _new_blob(container, array: np.ndarray) -> None:
    """Append a BlobProto with ``shape { dim }`` and the values of ``array``."""
    proto = container.add()
    if np.ndim(array):  # Caffe's Blob::ToProto writes no shape message at all for a 0-d blob
        proto.shape.dim.extend(np.shape(array))
    _set_blob_data(proto, array)


def _set_blob_data(proto: "caffe_pb2.BlobProto", array: np.ndarray) -> None:
    """Replace the blob's values with ``array`` in one packed field.

    Merging the encoded bytes lets protobuf copy the values in bulk instead of
    appending them one Python float at a time.
    """
    values = np.asarray(array)
    number = (caffe_pb2.BlobProto.DOUBLE_DATA_FIELD_NUMBER if values.dtype == np.float64
              else caffe_pb2.BlobProto.DATA_FIELD_NUMBER)
    dtype = _PAYLOADS[number][0]
    proto.ClearField("data")
    proto.ClearField("double_data")
    if values.size:
        proto.MergeFromString(wire.length_delimited(number, values.astype(dtype, copy=False).tobytes()))
