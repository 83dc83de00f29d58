"""The oldest Caffe net format (V0, 2013): ``layers { layer { type: "conv" ... } }`` -> V1.

V0 kept every setting flat in one V0LayerParameter and padding in separate
"padding" layers.  Caffe still reads such files by converting them to V1
first (UpgradeV0Net); netspec.upgrade then takes them on to the current
format.  The conversion is data-driven: _V0_FIELDS says, per V0 field and V0
layer type, which V1 field receives the value.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional

from google.protobuf.message import Message

from netspec import caffe_pb2
from netspec.wire import is_repeated

# V0 type string -> V1LayerParameter.LayerType name.
_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS", "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}
_ANY = "*"
_CONV_IP = {"conv": "convolution_param", "innerproduct": "inner_product_param"}
_CONV_POOL = {"conv": "convolution_param", "pool": "pooling_param"}
_SOURCES = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
            "window_data": "window_data_param"}


def _targets(params: Dict[str, str], field: str) -> Dict[str, str]:
    """{V0 type: "param.field"} for one field name shared by several parameter messages."""
    return {v0_type: f"{param}.{field}" for v0_type, param in params.items()}


# V0 field -> {V0 layer type (or _ANY): dotted V1 destination}.
_V0_FIELDS: Dict[str, Dict[str, str]] = {
    "num_output": _targets(_CONV_IP, "num_output"),
    "biasterm": _targets(_CONV_IP, "bias_term"),
    "weight_filler": _targets(_CONV_IP, "weight_filler"),
    "bias_filler": _targets(_CONV_IP, "bias_filler"),
    "pad": _targets(_CONV_POOL, "pad"),
    "kernelsize": _targets(_CONV_POOL, "kernel_size"),
    "stride": _targets(_CONV_POOL, "stride"),
    "group": {"conv": "convolution_param.group"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    **{name: {"lrn": f"lrn_param.{name}"} for name in ("local_size", "alpha", "beta", "k")},
    "source": {**_targets(_SOURCES, "source"), "infogain_loss": "infogain_loss_param.source"},
    "batchsize": _targets(_SOURCES, "batch_size"),
    "rand_skip": {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"},
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "scale": {_ANY: "transform_param.scale"},
    "meanfile": {_ANY: "transform_param.mean_file"},
    "cropsize": {_ANY: "transform_param.crop_size"},
    "mirror": {_ANY: "transform_param.mirror"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}
# Copied as they are (or handled before the table); Caffe ignores the remaining V0 fields.
_DIRECT_FIELDS = {"name", "type", "blobs", "blobs_lr", "weight_decay"}


def needs_v0_upgrade(net: "caffe_pb2.NetParameter") -> bool:
    """True if any V1 ``layers`` entry still wraps a V0 ``layer``."""
    return any(layer.HasField("layer") for layer in net.layers)


def upgrade_v0_net(net: "caffe_pb2.NetParameter", problems: Optional[List[str]] = None
                   ) -> "caffe_pb2.NetParameter":
    """The V1 form of a V0 net: padding layers folded into their consumers, fields moved.

    Like Caffe, only name, layers, input, input_dim and force_backward carry
    over.  A V0 field given for a layer type it does not apply to is dropped
    with a warning, also appended to ``problems`` if given (Caffe logs it, goes
    on, and calls the upgrade not fully compatible); an unknown V0 type or an
    unknown bottom blob raises ValueError.
    """
    upgraded = caffe_pb2.NetParameter()
    if net.HasField("name"):
        upgraded.name = net.name
    for layer in _fold_padding_layers(net):
        upgraded.layers.add().CopyFrom(_upgrade_v0_layer(layer, problems))
    upgraded.input.extend(net.input)
    upgraded.input_dim.extend(net.input_dim)
    if net.HasField("force_backward"):
        upgraded.force_backward = net.force_backward
    return upgraded


def _fold_padding_layers(net: "caffe_pb2.NetParameter") -> List["caffe_pb2.V1LayerParameter"]:
    """The net's layers without "padding" layers, their pad moved into the conv/pool they feed."""
    last_writer = {blob: -1 for blob in net.input}  # blob -> index of the layer that wrote it last
    kept: List[caffe_pb2.V1LayerParameter] = []
    for index, layer in enumerate(net.layers):
        if layer.layer.type != "padding":
            kept.append(caffe_pb2.V1LayerParameter())
            kept[-1].CopyFrom(layer)
        for j, blob in enumerate(layer.bottom):
            if blob not in last_writer:
                raise ValueError(f"V0 layer {layer.layer.name!r}: unknown bottom blob {blob!r}")
            source = net.layers[last_writer[blob]] if last_writer[blob] >= 0 else None
            if source is not None and source.layer.type == "padding":
                if layer.layer.type not in ("conv", "pool") or len(layer.bottom) != 1 \
                        or len(source.bottom) != 1 or len(source.top) != 1:
                    raise ValueError(f"V0 padding layer {source.layer.name!r} must have one bottom and "
                                     f"one top and feed a single-bottom conv or pool layer, "
                                     f"not {layer.layer.name!r}")
                kept[-1].layer.pad = source.layer.pad
                kept[-1].bottom[j] = source.bottom[0]
        for blob in layer.top:
            last_writer[blob] = index
    return kept


def _upgrade_v0_layer(connection: "caffe_pb2.V1LayerParameter", problems: Optional[List[str]]
                      ) -> "caffe_pb2.V1LayerParameter":
    """One V1 layer from a V1 connection (bottom/top) wrapping its V0 layer."""
    layer = caffe_pb2.V1LayerParameter()
    layer.bottom.extend(connection.bottom)
    layer.top.extend(connection.top)
    v0 = connection.layer
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        if v0.type not in _V0_TYPES:
            raise ValueError(f"V0 layer {v0.name!r}: unknown type {v0.type!r}")
        layer.type = caffe_pb2.V1LayerParameter.LayerType.Value(_V0_TYPES[v0.type])
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        if field.name in _DIRECT_FIELDS or field.name not in _V0_FIELDS:
            continue
        destinations = _V0_FIELDS[field.name]
        destination = destinations.get(v0.type, destinations.get(_ANY))
        if destination is None:
            problem = f"V0 layer {v0.name!r}: parameter {field.name} does not apply to type {v0.type!r}; dropped"
            warnings.warn(problem, stacklevel=3)
            if problems is not None:
                problems.append(problem)
            continue
        _assign(layer, destination, field, value)
    return layer


def _assign(layer: Message, destination: str, source_field, value) -> None:
    """Store ``value`` at the dotted ``destination`` of ``layer`` (append if repeated, map enums by name)."""
    *path, name = destination.split(".")
    message = layer
    for step in path:
        message = getattr(message, step)
    target = message.DESCRIPTOR.fields_by_name[name]
    if target.message_type is not None:
        getattr(message, name).CopyFrom(value)
        return
    if target.enum_type is not None:
        value = target.enum_type.values_by_name[source_field.enum_type.values_by_number[value].name].number
    if is_repeated(target):
        getattr(message, name).append(value)
    else:
        setattr(message, name, value)

