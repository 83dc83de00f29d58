"""HDF5 both ways against real Caffe's files (tests/fixtures/caffe_reference, README sections 4b and 9).

Snapshots: restoring Caffe's own ``snap_iter_3.solverstate.h5`` continues like Caffe; the files we write
with ``snapshot_format: HDF5`` have Caffe's layout (same datasets, shapes, dtypes, string type) and
restore to a bitwise identical continuation. Weights: every entry point loads Caffe's ``.caffemodel.h5``
bit for bit. Layers: HDF5Data gives Caffe's three batches (with wrap-around), HDF5Output writes the file
Caffe's HDF5Output wrote; bad input is a one-line error naming the file.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List

import h5py
import numpy as np
import pytest

from caffe_cases import ROOT
from netspec.hdf5 import HDF5FormatError
from runner.net import TEST, TRAIN, Net
from solvers.api import get_solver
from test_solvers import feed, params_of, working_dir

SNAPSHOT = os.path.join(ROOT, "solvers", "sgd_hdf5_snapshot")
WRAP = os.path.join(ROOT, "data", "hdf5data_batch4_wrap")
RESUME_AT, STEPS = 3, 6


def snapshot_file(name: str) -> str:
    return os.path.join(SNAPSHOT, name)


def npz(path: str) -> Dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


REF = npz(snapshot_file("params_per_step.npz"))
with open(snapshot_file("meta.json")) as _f:
    META = json.load(_f)


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=what)


def layout(path: str) -> List[tuple]:
    """Every object of an HDF5 file with what Caffe's readers depend on: name, kind, shape, dtype, and for
    strings their fixed size and padding."""
    entries: List[tuple] = []
    with h5py.File(path, "r") as handle:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Group):
                entries.append((name, "group"))
                return
            kind = obj.id.get_type()
            pad = kind.get_strpad() if isinstance(kind, h5py.h5t.TypeStringID) else None
            entries.append((name, "dataset", obj.shape, obj.dtype.str, kind.get_class(), pad))
        handle.visititems(visit)
    return entries


def read_h5(path: str) -> Dict[str, object]:
    with h5py.File(path, "r") as handle:
        out: Dict[str, object] = {}
        handle.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out


def write_solver(folder: str, extra: str = "") -> str:
    """The case's solver.prototxt in ``folder``, pointing at the case's train net."""
    text = open(snapshot_file("solver.prototxt")).read()
    text = text.replace('net: "train.prototxt"', f'net: "{snapshot_file("train.prototxt")}"') + extra
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as f:
        f.write(text)
    return path


# ----- solver snapshots -----

def test_restoring_caffes_hdf5_snapshot_continues_like_caffe(tmp_path):
    with working_dir(str(tmp_path)):
        solver = get_solver(write_solver(str(tmp_path)))
        solver.restore(snapshot_file(f"snap_iter_{RESUME_AT}.solverstate.h5"))
        assert solver.iter == RESUME_AT
        for key, got in params_of(solver).items():
            np.testing.assert_array_equal(got, REF[f"restored/{key}"][0], err_msg=key)
        losses = feed(solver, RESUME_AT)
        for step in range(1, STEPS - RESUME_AT + 1):
            solver.step(1)
            for key, got in params_of(solver).items():
                assert_close(got, REF[f"restored/{key}"][step], f"{key} after step {RESUME_AT + step}")
    assert_close(np.array(losses), REF["restored/loss_per_step"], "losses of steps 4-6")
    assert_close(np.array(losses), np.array(META["loss_per_step_restored"]), "losses in meta.json")


@pytest.fixture(scope="module")
def our_run(tmp_path_factory):
    """Caffe's run with our solver: 3 steps, an HDF5 snapshot, 3 more; then a fresh solver restored from
    our snapshot runs steps 4-6."""
    folder = str(tmp_path_factory.mktemp("hdf5_run"))
    with working_dir(folder):
        solver = get_solver(write_solver(folder))
        solver.net.copy_from(snapshot_file("init.caffemodel"))
        losses = feed(solver, 0)
        solver.step(RESUME_AT)
        solver.snapshot()
        solver.step(STEPS - RESUME_AT)
        resumed = get_solver(write_solver(folder))
        resumed.restore(f"snap_iter_{RESUME_AT}.solverstate.h5")
        resumed_losses = feed(resumed, RESUME_AT)
        resumed.step(STEPS - RESUME_AT)
    return {"folder": folder, "losses": losses, "params": params_of(solver), "resumed_losses": resumed_losses,
            "resumed_params": params_of(resumed)}


def test_our_run_matches_caffes_losses_and_weights(our_run):
    assert_close(np.array(our_run["losses"]), REF["loss_per_step"], "loss per step")
    for key, got in our_run["params"].items():
        assert_close(got, REF[key][STEPS], f"{key} after step {STEPS}")


def test_our_hdf5_snapshot_has_caffes_layout_and_values(our_run):
    for name in (f"snap_iter_{RESUME_AT}.caffemodel.h5", f"snap_iter_{RESUME_AT}.solverstate.h5"):
        ours, caffes = os.path.join(our_run["folder"], name), snapshot_file(name)
        assert layout(ours) == layout(caffes), name
        got, want = read_h5(ours), read_h5(caffes)
        for key, value in want.items():
            if isinstance(value, bytes) or np.asarray(value).dtype.kind == "i":
                np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")
            else:
                assert_close(got[key], value, f"{name}: {key}")
    assert sorted(os.listdir(our_run["folder"])) == [f"snap_iter_{RESUME_AT}.caffemodel.h5",
                                                     f"snap_iter_{RESUME_AT}.datastate",  # ours; Caffe ignores it
                                                     f"snap_iter_{RESUME_AT}.solverstate.h5", "solver.prototxt"]


def test_restoring_our_hdf5_snapshot_continues_bitwise(our_run):
    assert our_run["resumed_losses"] == our_run["losses"][RESUME_AT:]
    for key, want in our_run["params"].items():
        np.testing.assert_array_equal(our_run["resumed_params"][key], want, err_msg=key)


def test_snapshot_diff_writes_caffes_diff_group(tmp_path):
    with working_dir(str(tmp_path)):
        solver = get_solver(write_solver(str(tmp_path), "snapshot_diff: true\n"))
        solver.net.copy_from(snapshot_file("init.caffemodel"))
        feed(solver, 0)
        solver.step(1)
        solver.snapshot()
        diffs = {f"diff/{layer}/{i}": blob.diff.copy() for layer, blobs in solver.net.params.items()
                 for i, blob in enumerate(blobs)}
    saved = read_h5(str(tmp_path / "snap_iter_1.caffemodel.h5"))
    groups = [entry[0] for entry in layout(str(tmp_path / "snap_iter_1.caffemodel.h5")) if entry[1] == "group"]
    assert {g for g in groups if g.startswith("diff/")} == {g.replace("data/", "diff/") for g in groups
                                                            if g.startswith("data/")}
    assert set(k for k in saved if k.startswith("diff/")) == set(diffs)
    for key, value in diffs.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)


# ----- loading and saving weights -----

def test_every_weight_entry_point_loads_caffes_caffemodel_h5_bitwise(tmp_path):
    weights = snapshot_file(f"snap_iter_{RESUME_AT}.caffemodel.h5")
    prototxt = snapshot_file("train.prototxt")
    unsuffixed = str(tmp_path / "weights.bin")  # Caffe tells HDF5 by its signature, not the name
    shutil.copy(weights, unsuffixed)
    nets = {"weights=": Net(prototxt, TEST, weights=weights), "positional": Net(prototxt, weights, TEST),
            "no .h5 suffix": Net(prototxt, TEST, weights=unsuffixed)}
    for how in ("copy_from", "load_hdf5"):
        nets[how] = Net(prototxt, TEST)
        getattr(nets[how], how)(weights)
    want = npz(snapshot_file("params_loaded_by_copy_from.npz"))
    for how, net in nets.items():
        got = {f"{layer}/{i}": blob.data for layer, blobs in net.params.items() for i, blob in enumerate(blobs)}
        assert set(got) == set(want), how
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{how}: {key}")


def test_save_hdf5_writes_caffes_layout_and_loads_back(tmp_path):
    net = Net(snapshot_file("train.prototxt"), TRAIN, weights=snapshot_file(f"snap_iter_{RESUME_AT}.caffemodel.h5"))
    path = str(tmp_path / "net.caffemodel.h5")
    net.save_hdf5(path)
    assert layout(path) == layout(snapshot_file(f"snap_iter_{RESUME_AT}.caffemodel.h5"))
    copy = Net(snapshot_file("train.prototxt"), TEST)
    copy.copy_from(path)
    for layer, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(copy.params[layer][i].data, blob.data)


SHARED_NET = """
name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param { name: "w" } inner_product_param { num_output: 3 bias_term: false weight_filler { type: "gaussian" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param { name: "w" } inner_product_param { num_output: 3 bias_term: false } }
"""


def shared_net_file(folder) -> str:
    path = folder / "shared.prototxt"
    path.write_text(SHARED_NET)
    return str(path)


def test_shared_weights_are_written_once_and_load_back(tmp_path):
    prototxt = shared_net_file(tmp_path)
    net = Net(prototxt, TEST)
    path = str(tmp_path / "shared.caffemodel.h5")
    net.save_hdf5(path)
    assert set(read_h5(path)) == {"data/ip1/0"}  # Net::ToHDF5 writes a shared blob under its owner only
    copy = Net(prototxt, TEST)
    copy.copy_from(path)
    for layer in ("ip1", "ip2"):  # ip2 has no dataset of its own: it keeps sharing ip1's loaded blob
        np.testing.assert_array_equal(copy.params[layer][0].data, net.params["ip1"][0].data)


def test_bad_caffemodel_h5_is_a_one_line_error_naming_the_file(tmp_path):
    prototxt = snapshot_file("train.prototxt")
    wrong_shape = tmp_path / "wrong.caffemodel.h5"
    with h5py.File(wrong_shape, "w") as handle:
        handle.create_dataset("data/conv1/0", data=np.zeros((5, 3, 3, 3), np.float32))
    no_bias = tmp_path / "no_bias.caffemodel.h5"
    with h5py.File(no_bias, "w") as handle:
        handle.create_dataset("data/conv1/0", data=np.zeros((4, 3, 3, 3), np.float32))
    no_data = tmp_path / "no_data.caffemodel.h5"
    with h5py.File(no_data, "w") as handle:
        handle.create_group("weights")
    not_hdf5 = tmp_path / "text.caffemodel.h5"
    not_hdf5.write_text("not an HDF5 file\n")
    cases = [(wrong_shape, r"param 0 of layer 'conv1'.*\(5, 3, 3, 3\).*\(4, 3, 3, 3\)"),
             (no_bias, r"layer 'conv1' has no blob data/conv1/1"),
             (no_data, r"no group 'data'"),
             (not_hdf5, r"not a readable HDF5 file")]
    net = Net(prototxt, TEST)
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            net.copy_from(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.solverstate.h5"):
        get_solver(write_solver(str(tmp_path))).restore(str(tmp_path / "missing.solverstate.h5"))


# ----- HDF5Data and HDF5Output -----

@pytest.fixture
def wrap_case(tmp_path):
    """The HDF5Data case in a scratch copy; the working directory is its folder, as when Caffe ran it."""
    folder = tmp_path / "case"
    shutil.copytree(WRAP, folder)
    with working_dir(str(folder)):
        yield folder


def test_hdf5data_batches_wrap_around_like_caffe(wrap_case):
    want = npz(str(wrap_case / "tops_per_forward.npz"))
    with open(wrap_case / "meta.json") as f:
        meta = json.load(f)
    net = Net("net.prototxt", TRAIN)
    assert {name: list(net.blobs[name].shape) for name in ("data", "label")} == meta["top_shapes"]
    for i in range(3):
        tops = net.forward()
        for name in ("data", "label"):
            np.testing.assert_array_equal(tops[name], want[f"forward{i}/{name}"], err_msg=f"forward {i}: {name}")


def test_hdf5data_runs_outside_compiled_stretches(wrap_case):
    text = open("net.prototxt").read() + 'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }\n'
    with open("relu.prototxt", "w") as f:
        f.write(text)
    net = Net("relu.prototxt", TRAIN)
    net.set_speed(compile="aot_eager")
    assert [stretch is None for _, _, stretch in net.graph._plan()] == [True, False]
    want = npz("tops_per_forward.npz")
    for i in range(2):
        np.testing.assert_array_equal(net.forward()["label"], want[f"forward{i}/label"])


def test_hdf5data_reads_several_files_in_turn_and_1d_labels(wrap_case):
    inputs = npz("inputs.npz")
    with h5py.File("first.h5", "w") as handle:  # integer data is read as float, as Caffe does
        handle["data"], handle["label"] = (inputs["data"][:3] * 100).astype(np.int32), inputs["label"][:3]
    with h5py.File("second.h5", "w") as handle:
        handle["data"], handle["label"] = (inputs["data"][3:] * 100).astype(np.int32), inputs["label"][3:]
    with open("two.txt", "w") as f:
        f.write("first.h5\nsecond.h5\n")
    with open("two.prototxt", "w") as f:
        f.write(open("net.prototxt").read().replace("train_list.txt", "two.txt"))
    net = Net("two.prototxt", TRAIN)
    assert net.blobs["label"].shape == (4,)
    rows = np.arange(12) % 6
    for i in range(3):
        tops = net.forward()
        batch = rows[4 * i:4 * i + 4]
        np.testing.assert_array_equal(tops["label"], inputs["label"][batch])
        np.testing.assert_array_equal(tops["data"], (inputs["data"][batch] * 100).astype(np.int32))


def test_hdf5data_shuffle_visits_every_row_once_per_pass(wrap_case):
    with open("shuffle.prototxt", "w") as f:
        f.write(open("net.prototxt").read().replace("batch_size: 4", "batch_size: 6 shuffle: true"))
    net = Net("shuffle.prototxt", TRAIN)
    for _ in range(2):
        assert sorted(net.forward()["label"].ravel()) == sorted(npz("inputs.npz")["label"])


def test_hdf5data_in_a_data_parallel_run_keeps_every_world_size_th_row(wrap_case):
    labels = npz("inputs.npz")["label"]
    for rank in (0, 1):
        net = Net("net.prototxt", TRAIN)
        layer = net.graph.slots[0].impl
        layer.rank, layer.world_size = rank, 2  # what _shard() reads from torch.distributed under torchrun
        stream = np.arange(rank, 24, 2) % len(labels)  # Caffe's Skip(): stream positions rank, rank + 2, ...
        for i in range(3):
            np.testing.assert_array_equal(net.forward()["label"].ravel(), labels[stream[4 * i:4 * i + 4]])


def test_hdf5data_bad_input_is_a_one_line_error_naming_the_file(wrap_case):
    with open("empty.txt", "w") as f:
        f.write("\n")
    with open("missing_file.txt", "w") as f:
        f.write("nowhere.h5\n")
    with h5py.File("uneven.h5", "w") as handle:
        handle["data"], handle["label"] = np.zeros((6, 3), np.float32), np.zeros((5,), np.float32)
    with open("uneven.txt", "w") as f:
        f.write("uneven.h5\n")
    base = open("net.prototxt").read()
    cases = [("train_list.txt", "absent.txt", FileNotFoundError, "absent.txt"),
             ("train_list.txt", "empty.txt", ValueError, "empty.txt' lists no HDF5 file"),
             ("train_list.txt", "missing_file.txt", FileNotFoundError, "nowhere.h5.*missing_file.txt"),
             ('top: "label"', 'top: "labels"', HDF5FormatError, "train.h5: no dataset 'labels'"),
             ("train_list.txt", "uneven.txt", ValueError, "uneven.h5: dataset 'label' has 5 rows, 'data' has 6")]
    for old, new, error, message in cases:
        with open("bad.prototxt", "w") as f:
            f.write(base.replace(old, new))
        with pytest.raises(error, match=message) as err:
            Net("bad.prototxt", TRAIN)
        assert "layer 'data' (HDF5Data)" in str(err.value) and "\n" not in str(err.value)


def test_hdf5output_writes_the_file_caffe_wrote(wrap_case):
    inputs = npz("inputs.npz")
    os.rename("train.h5", "caffes.h5")
    net = Net("write_h5.prototxt", TEST)
    net.forward(data=inputs["data"], label=inputs["label"])
    assert layout("train.h5") == layout("caffes.h5")  # the (6,) label stored as 6x1x1x1 (Blob::LegacyShape)
    assert (net.blobs["label"].num, net.blobs["label"].channels, net.blobs["label"].width) == (6, 1, 1)
    got, want = read_h5("train.h5"), read_h5("caffes.h5")
    for name in ("data", "label"):
        np.testing.assert_array_equal(got[name], want[name])
    with pytest.raises(ValueError, match="train.h5 already holds"):
        net.forward()
    reader = Net("net.prototxt", TRAIN)  # and HDF5Data reads it back as it read Caffe's
    np.testing.assert_array_equal(reader.forward()["label"], npz("tops_per_forward.npz")["forward0/label"])


# ----- fcn convert -----

def test_convert_between_caffemodel_h5_and_the_other_formats(tmp_path):
    from fcn.convert import convert_weights, read_tensors
    caffes = snapshot_file(f"snap_iter_{RESUME_AT}.caffemodel.h5")
    prototxt = snapshot_file("train.prototxt")
    want = npz(snapshot_file("params_loaded_by_copy_from.npz"))
    binary, tensors = str(tmp_path / "w.caffemodel"), str(tmp_path / "w.safetensors")
    assert convert_weights(caffes, binary, model=prototxt) == len(want)
    assert convert_weights(caffes, tensors) == len(want)
    back = str(tmp_path / "back.caffemodel.h5")
    convert_weights(binary, back, model=prototxt)
    assert layout(back) == layout(caffes)  # with the prototxt: a group for every layer, as Net::ToHDF5
    for path in (binary, tensors, back):
        got = read_tensors(path)
        assert set(got) == set(want), path
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{path}: {key}")
    with pytest.raises(ValueError, match="params for layers the net does not have: conv1"):
        convert_weights(tensors, str(tmp_path / "x.caffemodel.h5"), model=shared_net_file(tmp_path))

