"""Caffe's text and binary formats: every file real Caffe wrote must read back and re-write byte for byte,
and anything else must fail with one line that names the file."""
import glob
import gzip
import json
import os

import numpy as np
import pytest
from caffe_cases import ROOT, Case, case_names

from netspec import caffe_pb2
from netspec.caffemodel import (CaffemodelError, blob_shape, load_caffemodel, load_solverstate, read_caffemodel,
                                save_caffemodel, save_solverstate, with_blob_data)
from netspec.prototxt import PrototxtError, parse_prototxt, read_prototxt, write_prototxt

CAFFEMODELS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "**", "*.caffemodel*"),
                                                                  recursive=True))
SOLVERSTATES = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "solvers", "*",
                                                                                "*.solverstate")))
PROTOTXTS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "**", "*.prototxt"),
                                                               recursive=True))


def _raw(relpath: str) -> bytes:
    with open(os.path.join(ROOT, relpath), "rb") as f:
        data = f.read()
    return gzip.decompress(data) if relpath.endswith(".gz") else data


def _one_line_naming(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


# -- prototxt -------------------------------------------------------------------------------

def test_fixture_inventory_is_complete():
    assert len(CAFFEMODELS) >= 109 and len(SOLVERSTATES) >= 16 and len(PROTOTXTS) > 100  # none went missing


@pytest.mark.parametrize("relpath", PROTOTXTS)
def test_every_fixture_prototxt_parses(relpath):
    message_class = caffe_pb2.SolverParameter if "solver" in os.path.basename(relpath) else caffe_pb2.NetParameter
    message = read_prototxt(os.path.join(ROOT, relpath), message_class)
    assert message.ByteSize() > 0


def test_solver_prototxt_fields():
    solver = read_prototxt(os.path.join(ROOT, "solvers", "sgd_fixed", "solver.prototxt"), caffe_pb2.SolverParameter)
    assert (solver.type, solver.net, solver.max_iter) == ("SGD", "train.prototxt", 6)
    assert solver.base_lr == pytest.approx(0.002)


def test_write_prototxt_round_trips_atomically(tmp_path):
    net = read_prototxt(os.path.join(ROOT, "fcn", "tiny_fcn8s", "net.prototxt"))
    out = tmp_path / "net.prototxt"
    out.write_text("old content")
    write_prototxt(out, net)
    assert read_prototxt(out) == net
    assert os.listdir(tmp_path) == ["net.prototxt"]  # no temporary file left behind


def test_parse_error_is_one_line_with_path_line_and_column(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  bogus: 3\n}\n')
    with pytest.raises(PrototxtError) as error:
        read_prototxt(bad)
    assert str(error.value) == f'{bad}:4:3: Message type "caffe.LayerParameter" has no field named "bogus".'


def test_parse_error_for_unclosed_brace_and_duplicate_field():
    with pytest.raises(ValueError, match=r'^<string>:3:\d+: Expected "}"\.$'):
        parse_prototxt('name: "x"\nlayer {\n  name: "a"\n')
    with pytest.raises(PrototxtError, match=r'^solver:2:\d+: .*multiple "base_lr"'):
        parse_prototxt("base_lr: 0.1\nbase_lr: 0.2\n", caffe_pb2.SolverParameter, source="solver")


def test_missing_prototxt_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        read_prototxt(tmp_path / "nope.prototxt")
    _one_line_naming(error, tmp_path / "nope.prototxt")


def test_binary_file_as_prototxt_is_a_clear_error():
    path = os.path.join(ROOT, "upgrade", "v1.caffemodel")
    with pytest.raises(PrototxtError) as error:
        read_prototxt(path)
    assert "not a text prototxt" in _one_line_naming(error, path)


# -- caffemodel: reading and writing --------------------------------------------------------

@pytest.mark.parametrize("relpath", CAFFEMODELS)
def test_caffemodel_load_save_is_byte_identical(relpath, tmp_path):
    raw = _raw(relpath)
    net, params = load_caffemodel(os.path.join(ROOT, relpath))
    out = tmp_path / "out.caffemodel"
    save_caffemodel(out, net, params)
    assert out.read_bytes() == raw
    assert read_caffemodel(os.path.join(ROOT, relpath)).SerializeToString() == raw


@pytest.mark.parametrize("relpath", CAFFEMODELS)
def test_fast_reader_matches_protobuf(relpath):
    reference = caffe_pb2.NetParameter.FromString(_raw(relpath))
    net, params = load_caffemodel(os.path.join(ROOT, relpath))
    layers = [*reference.layer, *reference.layers]
    assert [layer.name for layer in layers] == [layer.name for layer in [*net.layer, *net.layers]]
    with_blobs = {layer.name: layer.blobs for layer in layers if layer.blobs}
    assert set(params) == set(with_blobs)
    for name, blobs in with_blobs.items():
        assert len(params[name]) == len(blobs)
        for array, blob in zip(params[name], blobs):
            assert array.dtype == np.float32 and array.shape == blob_shape(blob)
            np.testing.assert_array_equal(array.ravel(), np.array(blob.data, dtype=np.float32))
    for layer in [*net.layer, *net.layers]:  # the stripped net keeps shapes, drops only the values
        assert all(len(blob.data) == 0 for blob in layer.blobs)


@pytest.mark.parametrize("name", case_names("layers")[:3] + case_names("fcn"))
def test_caffemodel_arrays_equal_the_weights_caffe_was_given(name):
    section = "fcn" if name.startswith("tiny_fcn") else "layers"
    case = Case(section, name)
    _, params = load_caffemodel(glob.glob(case.path("net.caffemodel*"))[0])
    want = case.arrays("params")
    assert {f"{layer}/{i}" for layer, arrays in params.items() for i in range(len(arrays))} == set(want)
    for key, value in want.items():
        layer, index = key.split("/")
        np.testing.assert_array_equal(params[layer][int(index)], value)


def test_arrays_are_writable_views():
    _, params = load_caffemodel(os.path.join(ROOT, "layers", "conv_k3_p1", "net.caffemodel"))
    weights = params["out"][0]
    weights[0, 0, 0, 0] = 42.0
    assert weights.flags.writeable and weights[0, 0, 0, 0] == 42.0


def test_legacy_blob_dims_give_the_array_shape():
    with open(os.path.join(ROOT, "upgrade", "meta.json")) as f:
        legacy = json.load(f)["legacy_blob_dims_in_v1_caffemodel"]
    net, params = load_caffemodel(os.path.join(ROOT, "upgrade", "v1.caffemodel"))
    assert {name: [list(a.shape) for a in arrays] for name, arrays in params.items()} == legacy
    assert all(blob.HasField("num") and not blob.HasField("shape") for layer in net.layers for blob in layer.blobs)


def test_with_blob_data_creates_blobs_and_keeps_float64(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="conv", type="Convolution")
    net.layer.add(name="relu", type="ReLU")
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    bias = np.array([0.5, -1.5])  # float64 goes to double_data
    path = tmp_path / "w.caffemodel"
    save_caffemodel(path, net, {"conv": [weights, bias]})
    full = read_caffemodel(path)
    assert list(full.layer[0].blobs[0].shape.dim) == [2, 3, 2, 2] and len(full.layer[0].blobs[1].double_data) == 2
    _, params = load_caffemodel(path)
    np.testing.assert_array_equal(params["conv"][0], weights)
    assert params["conv"][1].dtype == np.float64 and list(params["conv"][1]) == [0.5, -1.5]
    assert set(params) == {"conv"}


def test_with_blob_data_rejects_mismatches():
    net, params = load_caffemodel(os.path.join(ROOT, "layers", "conv_k3_p1", "net.caffemodel"))
    with pytest.raises(ValueError, match="does not have: nope"):
        with_blob_data(net, {"nope": [np.zeros(1)]})
    with pytest.raises(ValueError, match="has 2 blobs but 1 arrays"):
        with_blob_data(net, {"out": params["out"][:1]})
    with pytest.raises(ValueError, match=r"blob 1: shape \(4,\) needs 4 values"):
        with_blob_data(net, {"out": [params["out"][0], np.zeros(5, np.float32)]})


def _encoded_blob(values, packed_chunks: int) -> bytes:
    """A BlobProto with ``values`` as unpacked floats (packed_chunks=0) or split into several packed runs."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.append(len(values))
    body = bytearray(blob.SerializeToString())
    floats = np.asarray(values, "<f4")
    if packed_chunks == 0:
        for value in floats:
            body += bytes([0x2D]) + value.tobytes()  # field 5, wire type 5
    else:
        for chunk in np.array_split(floats, packed_chunks):
            body += bytes([0x2A, chunk.nbytes]) + chunk.tobytes()  # field 5, wire type 2
    return bytes(body)


@pytest.mark.parametrize("packed_chunks", [0, 3])
def test_unpacked_or_chunked_float_data_reads_like_protobuf(tmp_path, packed_chunks):
    values = [1.5, -2.0, 3.25, 0.0, 7.0]
    blob = _encoded_blob(values, packed_chunks)
    layer = caffe_pb2.LayerParameter(name="ip").SerializeToString() + bytes([0x3A, len(blob)]) + blob
    raw = bytes([0xA2, 0x06, len(layer)]) + layer  # NetParameter.layer is field 100
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(raw)
    _, params = load_caffemodel(path)
    np.testing.assert_array_equal(params["ip"][0], values)
    assert list(caffe_pb2.NetParameter.FromString(raw).layer[0].blobs[0].data) == values


# -- solverstate ----------------------------------------------------------------------------

@pytest.mark.parametrize("relpath", SOLVERSTATES)
def test_solverstate_history_and_round_trip(relpath, tmp_path):
    state, history = load_solverstate(os.path.join(ROOT, relpath))
    assert state.iter == 6 and state.learned_net == "snap_iter_6.caffemodel"
    with np.load(os.path.join(ROOT, os.path.dirname(relpath), "solverstate_history.npz")) as want:
        assert len(history) == len(want.files)
        for i, array in enumerate(history):
            np.testing.assert_array_equal(array, want[f"history/{i}"])
    out = tmp_path / "s.solverstate"
    save_solverstate(out, state, history)
    assert out.read_bytes() == _raw(relpath)


def test_save_solverstate_replaces_history(tmp_path):
    state = caffe_pb2.SolverState(iter=3, learned_net="x.caffemodel", current_step=1)
    out = tmp_path / "s.solverstate"
    save_solverstate(out, state, [np.ones((2, 3), np.float32), np.zeros(4, np.float32)])
    loaded, history = load_solverstate(out)
    assert (loaded.iter, loaded.current_step) == (3, 1)
    assert [a.shape for a in history] == [(2, 3), (4,)] and history[0].sum() == 6


# -- bad input ------------------------------------------------------------------------------

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x1f\x15\xc4\x89"


@pytest.mark.parametrize("content", [
    b"", PNG, b'name: "net"\nlayer {\n  name: "data"\n}\n',
    np.random.RandomState(0).bytes(4096), caffe_pb2.NetParameter(name="no layers").SerializeToString(),
    _raw(os.path.join("solvers", "adam", "snap_iter_6.solverstate")),
], ids=["empty", "png", "prototxt", "random", "no-layers", "solverstate"])
def test_foreign_files_are_one_line_caffemodel_errors(tmp_path, content):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CaffemodelError) as error:
        load_caffemodel(path)
    assert "Caffe NetParameter" in _one_line_naming(error, path)


@pytest.mark.parametrize("relpath", ["upgrade/v1.caffemodel", "fcn/tiny_fcn16s/net.caffemodel.gz"])
@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.5, 0.9, 0.99999])
def test_truncated_caffemodel_is_a_clean_error(tmp_path, relpath, fraction):
    data = open(os.path.join(ROOT, relpath), "rb").read()  # the .gz is cut as a gzip stream
    path = tmp_path / os.path.basename(relpath)
    path.write_bytes(data[:max(1, int(len(data) * fraction))])
    with pytest.raises(CaffemodelError) as error:
        load_caffemodel(path)
    _one_line_naming(error, path)


@pytest.mark.parametrize("cut", [5, 100, 500, -1])
def test_truncated_solverstate_is_a_clean_error(tmp_path, cut):
    data = _raw(os.path.join("solvers", "sgd_fixed", "snap_iter_6.solverstate"))
    path = tmp_path / "s.solverstate"
    path.write_bytes(data[:cut])
    with pytest.raises(CaffemodelError) as error:
        load_solverstate(path)
    _one_line_naming(error, path)


def test_caffemodel_as_solverstate_and_missing_files(tmp_path):
    path = os.path.join(ROOT, "layers", "relu", "net.caffemodel")
    with pytest.raises(CaffemodelError) as error:
        load_solverstate(path)
    assert "SolverState" in _one_line_naming(error, path)
    with pytest.raises(FileNotFoundError) as missing:
        load_caffemodel(tmp_path / "absent.caffemodel")
    _one_line_naming(missing, tmp_path / "absent.caffemodel")


def test_blob_count_mismatch_names_layer_and_blob(tmp_path):
    net = read_caffemodel(os.path.join(ROOT, "layers", "conv_k3_p1", "net.caffemodel"))
    out_layer = next(layer for layer in net.layer if layer.name == "out")
    out_layer.blobs[1].shape.dim[0] = 5
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(CaffemodelError, match=r"layer 'out' blob 1 declares shape \(5,\) \(5 values\) but holds 4"):
        load_caffemodel(path)
