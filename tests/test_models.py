"""The model zoo (models/<experiment>/): committed prototxts are what each net.py writes now; the
released experiments' nets equal real pycaffe's output of the release's net.py scripts, up to
the differences each README lists; and every net of every experiment runs in the runner.
"""
import ast
import functools
import importlib
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from caffe_cases import ROOT
from models.make_nets import experiment_folders, load, main, stale
from netspec import caffe_pb2
from netspec.ablations import fcn_pool
from netspec.backbones import vgg16_convs
from netspec.googlenet import fcn_googlenet
from netspec.net_spec import L, NetSpec
from netspec.prototxt import read_prototxt, write_prototxt
from runner.net import TEST, TRAIN, Net
from runner.python_layer import RELEASE_MODULES

EXPERIMENTS = [
    "voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
    "voc-fcn-googlenet", "voc-fcn32s-fixed", "voc-fcn-pool5", "voc-fcn-pool4", "voc-fcn-pool3",
    "nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-d", "nyud-fcn32s-color-hha",
    "nyud-fcn16s-color-hha", "siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s",
    "pascalcontext-fcn32s", "pascalcontext-fcn16s", "pascalcontext-fcn8s",
]
FOLDERS = experiment_folders()
REFERENCE = Path(ROOT) / "netspec"
RELEASED = sorted(folder.name for folder in REFERENCE.iterdir() if folder.is_dir())
RELEASED_NETS = [(name, path.name) for name in RELEASED
                 for path in sorted((REFERENCE / name).glob("*.prototxt"))
                 if path.name != "solver.prototxt"]

# The intended differences from the release, undone before comparing: our data layer modules
# (runner.python_layer.RELEASE_MODULES),
# and dataset paths relative to models/<experiment>/ rather than to the release's folders.
UP_DIRS = re.compile(r"^(\.\./)+")


@functools.cache
def _nets(name):
    return load(FOLDERS[name]).nets()


def test_the_zoo_has_every_experiment():
    assert sorted(FOLDERS) == sorted(EXPERIMENTS)


# ----- (a) committed prototxts are fresh ----------------------------------------------------

@pytest.mark.parametrize("name", EXPERIMENTS)
def test_committed_prototxts_are_what_net_py_writes(name):
    assert stale(FOLDERS[name], load(FOLDERS[name])) == []


def test_a_stale_or_missing_prototxt_is_caught(tmp_path):
    folder = tmp_path / "voc-fcn32s"
    shutil.copytree(FOLDERS["voc-fcn32s"], folder)
    experiment = load(folder)
    assert stale(folder, experiment) == []
    edited = read_prototxt(folder / "train.prototxt")
    edited.layer[1].convolution_param.num_output = 63
    write_prototxt(folder / "train.prototxt", edited)
    (folder / "deploy.prototxt").unlink()
    assert stale(folder, experiment) == ["train.prototxt", "deploy.prototxt"]


def test_make_nets_check_passes_on_the_committed_tree(capsys):
    assert main(["--check"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_data_layers_named_by_the_nets_exist(name):
    for file, net in _nets(name).items():
        for layer in net.layer:
            if layer.type == "Python":
                module = importlib.import_module(layer.python_param.module)
                assert hasattr(module, layer.python_param.layer), (file, layer.python_param.layer)


# ----- (b) the release's nets, as real pycaffe wrote them -----------------------------------

def _normalised(net):
    """``net`` with python_param's module and dataset paths undone to compare with the release,
    and its param_str literals apart (compared as Python values: key order is free)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    literals = []
    for layer in out.layer:
        if layer.HasField("python_param"):
            python = layer.python_param
            params = ast.literal_eval(python.param_str)
            literals.append({key: UP_DIRS.sub("", value) if key.endswith("_dir") else value
                             for key, value in params.items()})
            python.ClearField("param_str")
            python.module = RELEASE_MODULES.get(python.module, python.module)
    return literals, out


@pytest.mark.parametrize("name,file", RELEASED_NETS, ids=[f"{n}/{f}" for n, f in RELEASED_NETS])
def test_nets_equal_the_release_net_py_output(name, file):
    want = read_prototxt(REFERENCE / name / file)
    assert _normalised(_nets(name)[file]) == _normalised(want)


def test_voc_fcn8s_deploy_is_the_released_one_exactly():
    assert _nets("voc-fcn8s")["deploy.prototxt"] == read_prototxt(
        REFERENCE / "voc-fcn8s" / "deploy.prototxt")


@pytest.mark.parametrize("name", RELEASED)
def test_solvers_equal_the_release(name):
    def solver(folder):
        return read_prototxt(folder / "solver.prototxt", caffe_pb2.SolverParameter)
    assert solver(FOLDERS[name]) == solver(REFERENCE / name)


@pytest.mark.parametrize("name", RELEASED)
def test_readme_lists_the_intended_differences(name):
    readme = (FOLDERS[name] / "README.md").read_text()
    module = _nets(name)[next(iter(_nets(name)))].layer[0].python_param.module
    release_module = next(k for k, v in RELEASE_MODULES.items() if v == module)
    assert f"`{module}`" in readme and f"`{release_module}`" in readme
    assert "`../../data/...`" in readme


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_solver_names_this_folders_nets_and_readme_gives_figures(name):
    solver = read_prototxt(FOLDERS[name] / "solver.prototxt", caffe_pb2.SolverParameter)
    assert {solver.train_net, *solver.test_net} == set(_nets(name)) - {"deploy.prototxt"}
    assert "## Published figures" in (FOLDERS[name] / "README.md").read_text()


# ----- (c) every net runs -------------------------------------------------------------------

SIDE = 64  # input height and width
WIDTH = 8  # most outputs any (de)convolution keeps
ONE_CHANNEL = {"label", "sem", "geo", "depth"}


def _runnable(net, width=WIDTH):
    """``net`` with its data layers (Python, or deploy's Input) made Inputs of SIDE x SIDE, one
    channel for labels and depth, and every (de)convolution capped at ``width`` outputs (None:
    not): the same layers, crops and losses at a cost the suite can pay (a full-width VGG16
    FCN takes ~5 s to build and run on two cores, this ~0.2 s)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        if layer.type in ("Python", "Input"):
            layer.ClearField("python_param")
            layer.type = "Input"
            layer.input_param.Clear()
            for top in layer.top:
                channels = 1 if top in ONE_CHANNEL else 3
                layer.input_param.shape.add().dim.extend([1, channels, SIDE, SIDE])
        elif layer.type in ("Convolution", "Deconvolution") and width:
            param = layer.convolution_param
            param.num_output = min(param.num_output, width)
    return out


def _run(net_param, phase):
    """Build, fill the inputs (zero labels, random images), forward, backward."""
    net = Net(net_param, phase)
    rng = np.random.default_rng(0)
    for name in net.inputs:
        blob = net.blobs[name].data
        blob[...] = 0 if name in ONE_CHANNEL - {"depth"} else rng.standard_normal(blob.shape)
    net.forward()
    net.backward()
    return net


def _check_outputs(net, runnable, file):
    """Every loss is the uniform one of zero weights, every score the input's size."""
    losses = [layer for layer in runnable.layer if layer.type == "SoftmaxWithLoss"]
    for layer in losses:
        # Zero weights: uniform scores over K classes, label 0 on every pixel.
        classes = net.blobs[layer.bottom[0]].data.shape[1]
        pixels = 1 if layer.loss_param.normalize else SIDE * SIDE
        assert net.blobs[layer.top[0]].data.item() == pytest.approx(
            pixels * math.log(classes), rel=1e-5), (file, layer.name)
    scores = [layer.bottom[0] for layer in losses] or net.outputs
    for score in scores:
        assert net.blobs[score].data.shape[2:] == (SIDE, SIDE), (file, score)

@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_net_runs_forward_and_backward(name):
    for file, net_param in _nets(name).items():
        runnable = _runnable(net_param)
        _check_outputs(_run(runnable, TRAIN if file.startswith("train") else TEST), runnable, file)


@pytest.mark.parametrize("name", ["voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet"])
def test_each_body_runs_at_full_width(name):
    runnable = _runnable(_nets(name)["train.prototxt"], width=None)
    _check_outputs(_run(runnable, TRAIN), runnable, "train.prototxt")


@pytest.mark.parametrize("name", ["voc-fcn-alexnet", "voc-fcn-googlenet", "voc-fcn-pool5",
                                  "voc-fcn-pool4", "voc-fcn-pool3"])
def test_crops_fit_inputs_of_any_size(name):
    net = Net(_runnable(_nets(name)["deploy.prototxt"]), TEST)
    for height, width in [(33, 500), (97, 64), (130, 131), (211, 47)]:
        net.blobs["data"].reshape(1, 3, height, width)
        net.forward()
        assert net.blobs["score"].data.shape[2:] == (height, width)


# ----- the new builders' own rules ----------------------------------------------------------

def test_googlenet_crop_offset_is_derived_across_inception_modules():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    fcn_googlenet(n, n.data, dropout=False)
    crops = [layer.crop_param for layer in n.to_proto().layer if layer.type == "Crop"]
    assert [(c.axis, list(c.offset)) for c in crops] == [(2, [1])]


def test_fixed_fcn32s_learns_only_its_classifier():
    net = _nets("voc-fcn32s-fixed")["train.prototxt"]
    learning = {layer.name for layer in net.layer
                if any(p.lr_mult != 0 for p in layer.param) or
                (layer.type == "Convolution" and len(layer.param) < 2)}
    assert learning == {"score_fr"}


def test_truncated_bodies_are_checked():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    with pytest.raises(ValueError, match="stages 1 to 5"):
        vgg16_convs(n, n.data, stages=6)
    with pytest.raises(ValueError, match="pool3, pool4 or pool5"):
        fcn_pool(n, n.data, pool=2)
