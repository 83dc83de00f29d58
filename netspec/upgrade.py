"""Bring old nets to the current format, as Caffe does whenever it reads one.

Released models predate today's caffe.proto: VGG16's ILSVRC weights are V1
(``layers { type: CONVOLUTION blobs_lr: 1 }``), old deploy files declare
``input``/``input_dim`` instead of an Input layer.  Caffe upgrades these on
every read (UpgradeNetAsNeeded), and users expect the same layer names, types
and multipliers here; the result equals what Caffe's upgrade_net_proto_* tools
write.  The steps, in Caffe's order: V0 -> V1 (netspec.upgrade_v0), V1 data
transformation fields -> transform_param, V1 -> current ``layer``, net inputs
-> an Input layer named "input", BatchNorm with three ``param`` -> lr/decay 0.

Each step logs Caffe's lines (netspec.glog) when the net was read from a file.

Blob shapes are left alone (Caffe keeps legacy num/channels/height/width in
upgraded caffemodels); netspec.caffemodel.blob_shape reads either form.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from google.protobuf.message import Message

from netspec import caffe_pb2, glog
from netspec.upgrade_v0 import needs_v0_upgrade, upgrade_v0_net

# Caffe's type string for each V1LayerParameter.LayerType name.
_V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# V1 data layers that once held transformation fields in their own parameter.
_DATA_LAYER_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def needs_upgrade(net: "caffe_pb2.NetParameter") -> bool:
    """True if upgrade_net would change ``net`` (V0/V1 layers, net inputs, old BatchNorm params)."""
    return bool(net.layers) or _needs_input_upgrade(net) or any(map(_needs_batchnorm_upgrade, net.layer))


def upgrade_net(net: "caffe_pb2.NetParameter", source: Optional[str] = None) -> "caffe_pb2.NetParameter":
    """An upgraded copy of ``net``; a current net comes back equal (idempotent).

    ``source``: the file ``net`` was read from, to log Caffe's upgrade lines about it as Caffe does on
    every read (UpgradeNetAsNeeded); None upgrades silently (Caffe never upgrades a message built in
    memory). Raises ValueError where Caffe would abort or silently drop layers: a net with both
    ``layer`` and V1 ``layers``, an unknown V1 type, or fewer input shapes than inputs.
    """
    return upgrade_net_as_needed(net, source)[0]


def upgrade_net_as_needed(net: "caffe_pb2.NetParameter", source: Optional[str] = None
                          ) -> Tuple["caffe_pb2.NetParameter", bool]:
    """``upgrade_net`` and Caffe's success flag: False when V0 fields had to be dropped."""
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    say = glog.log if source is not None else _silent
    success = True
    if needs_v0_upgrade(upgraded):
        say(glog.INFO, "upgrade_proto.cpp:28", "Attempting to upgrade input file specified using deprecated "
            "V0LayerParameter: %s", source)
        problems: List[str] = []
        upgraded = upgrade_v0_net(upgraded, problems)
        success = not problems
        if problems:
            say(glog.ERROR, "upgrade_proto.cpp:33", "Warning: had one or more problems upgrading V0NetParameter "
                "to NetParameter (see above); continuing anyway.")
        else:
            say(glog.INFO, "upgrade_proto.cpp:36", "Successfully upgraded file specified using deprecated "
                "V0LayerParameter")
        say(glog.WARNING, "upgrade_proto.cpp:39", "Note that future Caffe releases will not support "
            "V0NetParameter; use ./build/tools/upgrade_net_proto_text for prototxt and "
            "./build/tools/upgrade_net_proto_binary for model weights upgrade this and any other net protos "
            "to the new format.")
    if any(map(_has_transform_fields, upgraded.layers)):
        say(glog.INFO, "upgrade_proto.cpp:46", "Attempting to upgrade input file specified using deprecated "
            "transformation parameters: %s", source)
        for v1 in upgraded.layers:
            _move_transform_fields(v1)
        say(glog.INFO, "upgrade_proto.cpp:49", "Successfully upgraded file specified using deprecated data "
            "transformation parameters.")
        say(glog.WARNING, "upgrade_proto.cpp:51", "Note that future Caffe releases will only support "
            "transform_param messages for transformation fields.")
    if upgraded.layers:
        say(glog.INFO, "upgrade_proto.cpp:55", "Attempting to upgrade input file specified using deprecated "
            "V1LayerParameter: %s", source)
        _upgrade_v1_net(upgraded)
        say(glog.INFO, "upgrade_proto.cpp:63", "Successfully upgraded file specified using deprecated "
            "V1LayerParameter")
    if _needs_input_upgrade(upgraded):
        say(glog.INFO, "upgrade_proto.cpp:69", "Attempting to upgrade input file specified using deprecated "
            "input fields: %s", source)
        _upgrade_input(upgraded)
        say(glog.INFO, "upgrade_proto.cpp:72", "Successfully upgraded file specified using deprecated input "
            "fields.")
        say(glog.WARNING, "upgrade_proto.cpp:74", "Note that future Caffe releases will only support input "
            "layers and not input fields.")
    if any(map(_needs_batchnorm_upgrade, upgraded.layer)):
        say(glog.INFO, "upgrade_proto.cpp:79", "Attempting to upgrade batch norm layers using deprecated "
            "params: %s", source)
        for layer in upgraded.layer:
            if _needs_batchnorm_upgrade(layer):
                for spec in layer.param:
                    spec.lr_mult = 0
                    spec.decay_mult = 0
        say(glog.INFO, "upgrade_proto.cpp:82", "Successfully upgraded batch norm layers using deprecated params.")
    return upgraded, success


def _silent(level: int, where: str, message: str, *args: Any) -> None:
    """An in-memory net upgrades without a word, as Caffe does not upgrade those at all."""


def _upgrade_v1_net(net: "caffe_pb2.NetParameter") -> None:
    """Replace the V1 ``layers`` of ``net`` with current ``layer`` entries, in place."""
    if net.layer:
        raise ValueError(f"net {net.name!r} has both 'layer' and legacy 'layers' entries; "
                         "Caffe would drop the 'layer' ones, so fix the file")
    v1_layers = list(net.layers)
    net.ClearField("layers")
    for v1 in v1_layers:
        net.layer.add().CopyFrom(_upgrade_v1_layer(v1))


def _data_param_of(v1: "caffe_pb2.V1LayerParameter") -> Optional[Message]:
    """The data/image_data/window_data parameter of an old data layer, if it has one."""
    param_name = _DATA_LAYER_PARAMS.get(caffe_pb2.V1LayerParameter.LayerType.Name(v1.type))
    return getattr(v1, param_name) if param_name is not None and v1.HasField(param_name) else None


def _has_transform_fields(v1: "caffe_pb2.V1LayerParameter") -> bool:
    """Caffe's NetNeedsDataUpgrade for one layer: scale/mean_file/crop_size/mirror in its data param."""
    param = _data_param_of(v1)
    return param is not None and any(param.HasField(field) for field in _TRANSFORM_FIELDS)


def _move_transform_fields(v1: "caffe_pb2.V1LayerParameter") -> None:
    """Move scale/mean_file/crop_size/mirror of an old data layer into transform_param."""
    param = _data_param_of(v1)
    if param is None:
        return
    for field in _TRANSFORM_FIELDS:
        if param.HasField(field):
            setattr(v1.transform_param, field, getattr(param, field))
            param.ClearField(field)


def _upgrade_v1_layer(v1: "caffe_pb2.V1LayerParameter") -> "caffe_pb2.LayerParameter":
    """The current-format LayerParameter for one V1 layer."""
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        type_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
        if type_name not in _V1_TYPE_NAMES:
            raise ValueError(f"V1 layer {v1.name!r}: unknown type {type_name}")
        layer.type = _V1_TYPE_NAMES[type_name]
    layer.blobs.extend(v1.blobs)
    for i, name in enumerate(v1.param):
        _param_spec(layer, i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        mode_name = caffe_pb2.V1LayerParameter.DimCheckMode.Name(mode)
        _param_spec(layer, i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(mode_name)
    for i, lr in enumerate(v1.blobs_lr):
        _param_spec(layer, i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        _param_spec(layer, i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for field, value in v1.ListFields():
        if field.name.endswith("_param"):  # every V1 *_param has a same-named, same-typed twin
            getattr(layer, field.name).CopyFrom(value)
    return layer


def _param_spec(layer: "caffe_pb2.LayerParameter", index: int) -> "caffe_pb2.ParamSpec":
    """``layer.param[index]``, adding empty ParamSpecs up to it as Caffe does."""
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


def _needs_input_upgrade(net: "caffe_pb2.NetParameter") -> bool:
    return bool(net.input) or bool(net.input_shape) or bool(net.input_dim)


def _upgrade_input(net: "caffe_pb2.NetParameter") -> None:
    """Turn ``input`` + ``input_shape``/``input_dim`` into a leading Input layer named "input".

    Inputs without any shape (old caffemodels list them bare) are just dropped.
    """
    if net.input_shape or net.input_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input", top=net.input)
        if net.input_shape:
            if len(net.input_shape) < len(net.input):
                raise ValueError(f"net {net.name!r}: {len(net.input)} inputs but only "
                                 f"{len(net.input_shape)} input_shape entries")
            layer.input_param.shape.extend(net.input_shape[:len(net.input)])
        else:
            if len(net.input_dim) < 4 * len(net.input):
                raise ValueError(f"net {net.name!r}: {len(net.input)} inputs need "
                                 f"{4 * len(net.input)} input_dim values, got {len(net.input_dim)}")
            for i in range(len(net.input)):
                layer.input_param.shape.add().dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer, *net.layer]
        net.ClearField("layer")
        net.layer.extend(layers)
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)


def _needs_batchnorm_upgrade(layer: "caffe_pb2.LayerParameter") -> bool:
    """An old-style BatchNorm (three ``param``) whose multipliers are not all explicitly 0."""
    return layer.type == "BatchNorm" and len(layer.param) == 3 and not all(
        spec.HasField("lr_mult") and spec.lr_mult == 0 and spec.HasField("decay_mult") and spec.decay_mult == 0
        for spec in layer.param)
