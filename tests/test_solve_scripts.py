"""The experiments' solve.py scripts: every command line starts, missing inputs are one-line errors, the
release's init recipes do what they claim (on tiny nets shaped like the real ones, whose layer names are
checked against the real prototxts), and one narrowed voc-fcn32s trains end to end through the same
recipe its solve.py runs."""
import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_layers.synthetic import write_dataset
from models import solve_common
from models.experiment import Experiment, single
from models.make_nets import experiment_folders
from models.solve_common import NYUD, SIFTFLOW, VOC, Recipe, SetupError, imagenet, imagenet_body, stage
from models.sources import voc
from netspec import caffe_pb2
from netspec.backbones import deploy, fcn16s, fcn32s, input_layer, score_layer, upsample, vgg16
from netspec.caffemodel import load_caffemodel
from netspec.net_spec import L, NetSpec, P
from netspec.prototxt import read_prototxt
from runner.net import Net
from surgery import upsample_filt

REPO = Path(__file__).resolve().parents[1]
FOLDERS = experiment_folders()
TINY = dict(widths=2, fc_width=4)


def _solve(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = REPO / "models" / name / "solve.py"
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def _load_recipe(name: str) -> Recipe:
    """The RECIPE a solve.py defines (its folder name has dashes: load it as a file)."""
    spec = importlib.util.spec_from_file_location(f"solve_{name.replace('-', '_')}",
                                                  REPO / "models" / name / "solve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE


def _randomize(net: Net, seed: int) -> Net:
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.01, blob.shape).astype(np.float32)
    return net


def _saved(net: Net, path: Path) -> Path:
    net.save(str(path))
    return path


def _param_layers(prototxt: Path) -> dict[str, str]:
    """Learned-or-fixed layer name -> type, from a real prototxt (no net built)."""
    net = read_prototxt(prototxt, caffe_pb2.NetParameter)
    return {layer.name: layer.type for layer in net.layer if layer.type in ("Convolution", "Deconvolution")}


def _assert_bilinear(blob) -> None:
    channels, _, size, _ = blob.shape
    expected = np.zeros(blob.shape, np.float32)
    expected[range(channels), range(channels)] = upsample_filt(size)
    np.testing.assert_array_equal(blob.data, expected)


# ----- (1) every experiment has a solve.py whose --help runs from anywhere -----

def test_every_experiment_has_a_solve_script() -> None:
    assert sorted(FOLDERS) == sorted(p.parent.name for p in (REPO / "models").glob("*/solve.py"))


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_help_runs_from_any_directory(name, tmp_path) -> None:
    done = _solve(name, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for option in ("--weights", "--data", "--iters", "--score-every", "--out", "--gpu"):
        assert option in done.stdout


# ----- (2) missing weights or data: exit 2, one line naming the path -----

def test_missing_weights_is_one_line_naming_the_path(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "fcn16s.caffemodel"
    done = _solve("voc-fcn8s", "--weights", str(missing), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(missing) in done.stderr
    assert "fcn16s-heavy-pascal.caffemodel" in done.stderr  # how to get it
    assert not (tmp_path / "out").exists()


def test_missing_data_is_one_line_naming_the_path(tmp_path) -> None:
    weights = tmp_path / "body.caffemodel"
    weights.write_bytes(b"")  # never read: the data is missing first
    done = _solve("voc-fcn32s", "--weights", str(weights), "--data", str(tmp_path / "nodata"),
                  "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(tmp_path / "nodata") in done.stderr


def test_missing_imagenet_body_says_how_to_convert(tmp_path) -> None:
    body = dataclasses.replace(imagenet("vgg16"), defaults=lambda: [tmp_path / "vgg16-fcn.caffemodel"])
    with pytest.raises(SetupError) as err:
        body.locate(None)
    message = str(err.value)
    assert str(tmp_path / "vgg16-fcn.caffemodel") in message
    assert "VGG_ILSVRC_16_layers.caffemodel" in message and "convolutionalize" in message
    assert "\n" not in message


def test_stage_defaults_are_best_then_latest_snapshot(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(solve_common, "MODELS", tmp_path)
    weights = stage("voc-fcn32s", "fcn32s-heavy-pascal")
    snapshots = tmp_path / "voc-fcn32s" / "train" / "snapshot"
    snapshots.mkdir(parents=True)
    for iteration in (900, 10000):
        (snapshots / f"train_iter_{iteration}.caffemodel").write_bytes(b"x")
    assert weights.locate(None) == snapshots / "train_iter_10000.caffemodel"
    (snapshots.parent / "best.caffemodel").write_bytes(b"x")
    assert weights.locate(None) == snapshots.parent / "best.caffemodel"


# ----- (3) the init recipes, on tiny nets named as the real ones -----

def test_staged_copy_then_interp(tmp_path) -> None:
    """voc-fcn16s from voc-fcn32s: shared layers copied, the new skip scorer left at zero, every
    upsampling layer bilinear."""
    previous = _randomize(Net(deploy(fcn32s, (1, 3, 32, 32), **TINY), caffe_pb2.TEST), seed=0)
    path = _saved(previous, tmp_path / "fcn32s.caffemodel")
    net = Net(deploy(fcn16s, (1, 3, 32, 32), **TINY), caffe_pb2.TEST)
    _load_recipe("voc-fcn16s").initialize(net, [path])
    for layer in ("conv1_1", "conv5_3", "fc6", "fc7", "score_fr"):
        for new, old in zip(net.params[layer], previous.params[layer]):
            np.testing.assert_array_equal(new.data, old.data)
    assert not net.params["score_pool4"][0].data.any()
    for layer in ("upscore2", "upscore16"):
        _assert_bilinear(net.params[layer][0])


def _early_fusion_net() -> Net:
    """nyud-fcn32s-color-d's layout, narrow: color and depth concatenated into conv1_1_bgrd."""
    n = NetSpec()
    color, depth = input_layer(n, {"color": (1, 3, 32, 32), "depth": (1, 1, 32, 32)})
    n.data = L.Concat(color, depth)
    features = vgg16(n, n.data, dropout=False, first_conv="conv1_1_bgrd", **TINY)
    n.score_fr = score_layer(features, 5)
    n.upscore = upsample(n.score_fr, 5, 32, 64)
    return Net(n.to_proto(), caffe_pb2.TEST)


def _body_net(seed: int) -> Net:
    """A narrow VGG16 FCN body as models/ilsvrc-nets/vgg16-fcn.caffemodel holds it: no score layer."""
    n = NetSpec()
    data, = input_layer(n, {"data": (1, 3, 32, 32)})
    vgg16(n, data, dropout=False, **TINY)
    return _randomize(Net(n.to_proto(), caffe_pb2.TEST), seed)


def test_color_depth_adds_the_mean_of_the_bgr_filters_for_depth(tmp_path) -> None:
    body = _body_net(seed=1)
    path = _saved(body, tmp_path / "body.caffemodel")
    net = _early_fusion_net()
    _load_recipe("nyud-fcn32s-color-d").initialize(net, [path])
    weight, bias = (blob.data for blob in net.params["conv1_1_bgrd"])
    bgr, bgr_bias = (blob.data for blob in body.params["conv1_1"])
    np.testing.assert_array_equal(weight[:, :3], bgr)
    np.testing.assert_allclose(weight[:, 3], bgr.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(bias, bgr_bias)
    np.testing.assert_array_equal(net.params["fc7"][0].data, body.params["fc7"][0].data)
    _assert_bilinear(net.params["upscore"][0])


def test_color_depth_names_match_the_real_net() -> None:
    """The real color-d net is the VGG16 body with conv1_1 renamed, plus score_fr and upscore."""
    real = _param_layers(FOLDERS["nyud-fcn32s-color-d"] / "trainval.prototxt")
    body = {layer.name for layer in imagenet_body("vgg16").layer if layer.type == "Convolution"}
    assert set(real) == (body - {"conv1_1"}) | {"conv1_1_bgrd", "score_fr", "upscore"}


def _single_net(seed: int) -> Net:
    n = NetSpec()
    data, = input_layer(n, {"data": (1, 3, 32, 32)})
    n.score_fr = score_layer(vgg16(n, data, dropout=False, **TINY), 5)
    n.upscore = upsample(n.score_fr, 5, 32, 64)
    return _randomize(Net(n.to_proto(), caffe_pb2.TEST), seed)


def _late_fusion_net() -> Net:
    """nyud-fcn32s-color-hha's layout, narrow: one suffixed stream per input, scores averaged."""
    n = NetSpec()
    inputs = input_layer(n, {"color": (1, 3, 32, 32), "hha": (1, 3, 32, 32)})
    scores = []
    for suffix, data in zip(("color", "hha"), inputs):
        n["score_fr" + suffix] = top = score_layer(vgg16(n, data, dropout=False, suffix=suffix, **TINY), 5)
        scores.append(top)
    n.score_fused = L.Eltwise(*scores, operation=P.Eltwise.SUM, coeff=[0.5, 0.5])
    n.upscore = upsample(n.score_fused, 5, 32, 64)
    return Net(n.to_proto(), caffe_pb2.TEST)


def test_late_fusion_fills_each_stream_from_its_own_net(tmp_path) -> None:
    color, hha = _single_net(seed=2), _single_net(seed=3)
    paths = [_saved(color, tmp_path / "color.caffemodel"), _saved(hha, tmp_path / "hha.caffemodel")]
    net = _late_fusion_net()
    _load_recipe("nyud-fcn32s-color-hha").initialize(net, paths)
    for suffix, source in (("color", color), ("hha", hha)):
        for layer in ("conv1_1", "conv3_2", "fc6", "score_fr"):
            for new, old in zip(net.params[layer + suffix], source.params[layer]):
                np.testing.assert_array_equal(new.data, old.data)
    _assert_bilinear(net.params["upscore"][0])


def test_late_fusion_suffixes_match_the_real_nets() -> None:
    """Every learned layer of the real fused net is a single-modality net's layer plus 'color' or 'hha'."""
    fused = _param_layers(FOLDERS["nyud-fcn32s-color-hha"] / "trainval.prototxt")
    color = _param_layers(FOLDERS["nyud-fcn32s-color"] / "trainval.prototxt")
    hha = _param_layers(FOLDERS["nyud-fcn32s-hha"] / "trainval.prototxt")
    learned = {name for name, kind in fused.items() if kind == "Convolution"}
    expected = {name + "color" for name, kind in color.items() if kind == "Convolution"} | \
               {name + "hha" for name, kind in hha.items() if kind == "Convolution"}
    assert learned == expected


@pytest.mark.parametrize("backbone,experiment", [("vgg16", "voc-fcn32s"), ("alexnet", "voc-fcn-alexnet"),
                                                 ("googlenet", "voc-fcn-googlenet")])
def test_imagenet_body_names_the_nets_layers(backbone, experiment) -> None:
    """The body caffemodel holds exactly the FCN's layers before its score layer, with their widths."""
    net = read_prototxt(FOLDERS[experiment] / "train.prototxt", caffe_pb2.NetParameter)
    real = {layer.name: layer.convolution_param.num_output for layer in net.layer
            if layer.type == "Convolution" and not layer.name.startswith("score")}
    body = {layer.name: layer.convolution_param.num_output for layer in imagenet_body(backbone).layer
            if layer.type == "Convolution"}
    assert body == real


def test_recipes_follow_the_release() -> None:
    """Where each experiment starts (the solver comments and the release's solve.py files)."""
    starts = {name: [w.what for w in _load_recipe(name).weights] for name in FOLDERS}
    assert starts["voc-fcn16s"] == ["voc-fcn32s weights"] and starts["voc-fcn8s"] == ["voc-fcn16s weights"]
    assert starts["nyud-fcn32s-color-hha"] == ["nyud-fcn32s-color weights", "nyud-fcn32s-hha weights"]
    assert starts["voc-fcn-alexnet"] == ["alexnet FCN body"]
    assert starts["voc-fcn-googlenet"] == ["googlenet FCN body"]
    for name in ("voc-fcn32s", "voc-fcn8s-atonce", "voc-fcn32s-fixed", "voc-fcn-pool3", "nyud-fcn32s-color-d",
                 "siftflow-fcn32s", "pascalcontext-fcn32s"):
        assert starts[name] == ["vgg16 FCN body"]
    assert _load_recipe("siftflow-fcn8s").scoring == SIFTFLOW
    assert _load_recipe("siftflow-fcn8s").scoring.heads[0] == ("score_sem", "sem", True)   # present only
    assert _load_recipe("nyud-fcn32s-hha").scoring == NYUD and _load_recipe("voc-fcn8s").scoring == VOC


# ----- (4) end to end: a narrowed voc-fcn32s through its own recipe and command line -----

def test_narrowed_voc_fcn32s_trains_end_to_end(tmp_path) -> None:
    data = tmp_path / "data"
    write_dataset("voc", data, n=2, size=(48, 64))
    write_dataset("sbd", data, n=2, size=(48, 64))
    folder = tmp_path / "voc-fcn32s"
    Experiment(voc(), single(fcn32s, widths=4, fc_width=8)).write(folder)
    shutil.copy(FOLDERS["voc-fcn32s"] / "solver.prototxt", folder)
    body = _randomize(Net(str(folder / "deploy.prototxt"), caffe_pb2.TEST), seed=4)
    weights = _saved(body, tmp_path / "vgg16-fcn.caffemodel")
    out = tmp_path / "run"

    argv = ["--weights", str(weights), "--data", str(data), "--iters", "2", "--score-every", "2", "--out", str(out)]
    assert solve_common.solve(folder, _load_recipe("voc-fcn32s"), argv) == 0

    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    scores = [r for r in records if "mean_iu" in r]
    assert [r["iter"] for r in scores] == [2] and 0 <= scores[0]["mean_iu"] <= 1
    assert (out / "curves.png").is_file() and (out / "solver.prototxt").is_file()
    _, best = load_caffemodel(out / "best.caffemodel")
    np.testing.assert_allclose(best["conv1_1"][0], body.params["conv1_1"][0].data, atol=1e-6)  # base_lr 1e-10
    expected = body.params["upscore"][0].data.copy()  # the release's interp writes the diagonal only
    expected[range(21), range(21)] = upsample_filt(64)
    np.testing.assert_array_equal(best["upscore"][0], expected)

    state = out / "snapshot" / "train_iter_2.solverstate"
    assert state.is_file()
    resumed = ["--restore", str(state), "--data", str(data), "--iters", "1", "--score-every", "10", "--out", str(out)]
    assert solve_common.solve(folder, _load_recipe("voc-fcn32s"), resumed) == 0
    assert (out / "snapshot" / "train_iter_3.caffemodel").is_file()

