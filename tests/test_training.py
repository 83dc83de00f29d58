"""The solve loop on a synthetic VOC dataset in the real on-disk format: logs, scoring, best weights,
the unset-weights warning, non-finite losses, signals (a real process) and data-parallel training
(real processes under torchrun, gloo on CPU)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from data_layers.synthetic import write_dataset
from netspec import caffe_pb2
from netspec.caffemodel import load_caffemodel
from runner.device import set_random_seed
from runner.net import Net
from solvers.training import NonFiniteLoss, TrainConfig, train, unset_parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _net_text(voc_dir: str, split: str, extra: str = "", filler: bool = True, randomize: bool = False) -> str:
    fill = 'weight_filler { type: "gaussian" std: 0.05 }' if filler else ""
    params = repr(dict(voc_dir=voc_dir, split=split, seed=1, randomize=randomize, prefetch=0))
    return textwrap.dedent(f"""
    layer {{ name: "data" type: "Python" top: "data" top: "label"
            python_param {{ module: "data_layers.voc" layer: "VOCSegDataLayer" param_str: "{params}" }} }}
    layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
            convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 {fill} }} }}
    layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
    layer {{ name: "score" type: "Convolution" bottom: "conv1" top: "score"
            param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
            convolution_param {{ num_output: 21 kernel_size: 1 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
    {extra}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
            loss_param {{ ignore_label: 255 normalize: false }} }}
    """)


def _experiment(tmp_path, snapshot: int = 0, iter_size: int = 1, base_lr: float = 1e-6, **net_kwargs) -> str:
    keys = write_dataset("voc", tmp_path / "data", n=4, size=(24, 32), seed=0)
    (tmp_path / "train.prototxt").write_text(_net_text(keys["voc_dir"], "train", **net_kwargs))
    (tmp_path / "val.prototxt").write_text(_net_text(keys["voc_dir"], "val", **net_kwargs))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(textwrap.dedent(f"""
    train_net: "{tmp_path / 'train.prototxt'}"
    test_net: "{tmp_path / 'val.prototxt'}"
    test_iter: 4
    test_interval: 999999
    display: 1
    average_loss: 1
    lr_policy: "fixed"
    base_lr: {base_lr}
    momentum: 0.9
    iter_size: {iter_size}
    weight_decay: 0.0005
    max_iter: 6
    snapshot: {snapshot}
    snapshot_prefix: "{tmp_path / 'snapshots' / 'train'}"
    random_seed: 5
    """))
    (tmp_path / "snapshots").mkdir()
    return str(solver)


def test_loop_logs_scores_and_keeps_the_best(tmp_path) -> None:
    solver = _experiment(tmp_path)
    result = train(TrainConfig(solver, iters=6, score_every=3, out_dir=str(tmp_path / "out"), progress=False))
    assert result.iterations == 6 and not result.interrupted
    records = [json.loads(line) for line in open(result.log_path)]
    losses = [r for r in records if "loss" in r and "mean_iu" not in r]
    scores = [r for r in records if "mean_iu" in r]
    assert [r["iter"] for r in losses] == list(range(6))
    assert all({"lr", "seconds", "data_wait_seconds"} <= set(r) for r in losses)
    assert [s["iter"] for s in scores] == [3, 6]
    assert all(0 <= s["mean_iu"] <= 1 and 0 <= s["pixel_accuracy"] <= 1 and len(s["per_class_iu"]) == 21
               for s in scores)
    assert result.best_mean_iu == max(s["mean_iu"] for s in scores)
    best = Net(str(tmp_path / "val.prototxt"), caffe_pb2.TEST, weights=result.best_weights)
    assert best.params["score"][0].data.any()
    assert os.path.getsize(result.plot_path) > 1000
    assert os.path.exists(str(tmp_path / "snapshots" / "train_iter_6.caffemodel"))  # snapshot after train


def test_further_heads_are_scored_and_logged_apart(tmp_path) -> None:
    second = """layer { name: "score2" type: "Convolution" bottom: "conv1" top: "score2"
            convolution_param { num_output: 21 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "score2" bottom: "label" top: "loss2"
            loss_param { ignore_label: 255 normalize: false } }"""
    solver = _experiment(tmp_path, extra=second)
    result = train(TrainConfig(solver, iters=4, score_every=2, out_dir=str(tmp_path / "out"), progress=False,
                               heads=(("score", "label", False), ("score2", "label", True))))
    records = [json.loads(line) for line in open(result.log_path)]
    main = [r for r in records if "mean_iu" in r and "head" not in r]
    heads = [r for r in records if r.get("head") == "score2"]
    assert [r["iter"] for r in main] == [2, 4] and [r["iter"] for r in heads] == [2, 4]
    assert all(0 <= r["mean_iu"] <= 1 for r in heads)
    assert [r["mean_iu"] for r in heads] != [r["mean_iu"] for r in main]   # another layer was scored
    assert result.best_mean_iu == max(r["mean_iu"] for r in main)           # the best follows the main head


def test_fcn_train_scores_the_heads_it_is_given(tmp_path, capsys) -> None:
    from fcn.cli import main
    second = """layer { name: "score_label" type: "Convolution" bottom: "conv1" top: "score_label"
            convolution_param { num_output: 21 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "score_label" bottom: "label" top: "loss2"
            loss_param { ignore_label: 255 normalize: false } }"""
    solver = _experiment(tmp_path, extra=second)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.replace(solver, model_dir / "solver.prototxt")
    out = tmp_path / "run"
    args = ["train", str(model_dir), "--iters", "2", "--score-every", "2", "--out", str(out)]
    assert main(args + ["--score", "score_label:label", "--score", "score:label"]) == 0
    records = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert [r.get("head") for r in records if "mean_iu" in r] == [None, "score"]
    assert main(args) == 0   # by the release's names: score against label, one head
    records = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert [r.get("head") for r in records if "mean_iu" in r][-1:] == [None]
    assert main(args + ["--score", "score"]) == 2
    lines = len(open(out / "train_log.jsonl").readlines())
    assert main(args + ["--score", "score:lable"]) == 2
    assert "the test net has no blob 'lable'" in capsys.readouterr().err
    assert len(open(out / "train_log.jsonl").readlines()) == lines   # refused before any training


def test_a_training_step_touches_host_memory_only_for_the_data_layer(tmp_path, monkeypatch) -> None:
    """Issue 7: the Blob views never force a device sync on the hot path. Every host (numpy) view of a blob
    goes through ``_Synced.numpy``; a step may take them only for the Python data layer's two tops (the
    loss comes back as one float, not through a blob)."""
    from solvers.api import get_solver
    import runner.blob as blob_module
    solver = get_solver(_experiment(tmp_path))
    solver.step(1)
    callers = []
    through = blob_module._Synced.numpy

    def counted(synced):
        callers.append(sys._getframe(2).f_code.co_filename)
        return through(synced)
    monkeypatch.setattr(blob_module._Synced, "numpy", counted)
    solver.step(3)
    assert len(callers) == 3 * 2
    assert all(path.endswith(os.path.join("data_layers", "base.py")) for path in callers), set(callers)


def test_unset_weights_are_reported(tmp_path, caplog) -> None:
    solver = _experiment(tmp_path, filler=False)
    net = Net(str(tmp_path / "train.prototxt"), caffe_pb2.TRAIN)
    assert unset_parameters(net) == ["conv1"]
    result = train(TrainConfig(solver, iters=1, out_dir=str(tmp_path / "out"), progress=False))
    assert result.unset_parameters == ["conv1"]
    assert any("conv1" in r.message and "constant" in r.message for r in caplog.records)


NAN_LAYER = '''
from fcn.caffe import Layer

class NanAfter(Layer):
    """Passes its bottom through, but poisons it from the 4th forward on."""
    def setup(self, bottom, top):
        self.count = 0
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        self.count += 1
        top[0].data[...] = bottom[0].data * (float("nan") if self.count > 3 else 1.0)
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def test_non_finite_loss_stops_before_the_update(tmp_path, monkeypatch) -> None:
    (tmp_path / "nan_layer.py").write_text(NAN_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    extra = 'layer { name: "poison" type: "Python" bottom: "score" top: "score" python_param { module: "nan_layer" layer: "NanAfter" } }'
    solver = _experiment(tmp_path, snapshot=2, extra=extra)
    with pytest.raises(NonFiniteLoss, match="iteration 3"):
        train(TrainConfig(solver, iters=6, score_every=100, out_dir=str(tmp_path / "out"), progress=False))
    good = Net(str(tmp_path / "train.prototxt"), caffe_pb2.TEST,
               weights=str(tmp_path / "snapshots" / "train_iter_2.caffemodel"))
    assert np.isfinite(good.params["conv1"][0].data).all()
    assert not os.path.exists(tmp_path / "snapshots" / "train_iter_4.caffemodel")


SLOW_LAYER = '''
import time
from fcn.caffe import Layer

class Slow(Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        time.sleep(0.2)
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def test_sigint_snapshots_and_exits_cleanly(tmp_path) -> None:
    (tmp_path / "slow_layer.py").write_text(SLOW_LAYER)
    extra = 'layer { name: "slow" type: "Python" bottom: "score" top: "score" python_param { module: "slow_layer" layer: "Slow" } }'
    solver = _experiment(tmp_path, extra=extra)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(tmp_path)!r})
    from solvers.training import TrainConfig, train
    result = train(TrainConfig({solver!r}, iters=500, score_every=1000, out_dir={str(tmp_path / 'out')!r},
                               progress=False))
    print("interrupted", result.interrupted, result.exit_status, result.iterations)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO))
    log = tmp_path / "out" / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    iterations = int(out.split()[-1])
    assert out.startswith("interrupted True 130") and 0 < iterations < 500
    assert os.path.exists(tmp_path / "snapshots" / f"train_iter_{iterations}.solverstate")
    assert json.loads(log.read_text().splitlines()[-1]) == {"iter": iterations, "event": "interrupted"}


DDP_SCRIPT = '''
import sys
from solvers.training import TrainConfig, train
train(TrainConfig(sys.argv[1], iters=3, score_every=1000, out_dir=sys.argv[2], progress=False))
'''


def test_two_ranks_equal_one_rank_with_iter_size_two(tmp_path) -> None:
    one = tmp_path / "one"
    two = tmp_path / "two"
    one.mkdir(), two.mkdir()
    solver_one = _experiment(one, iter_size=2, base_lr=1e-4)
    solver_two = _experiment(two, iter_size=1, base_lr=1e-4)
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    run_one = subprocess.run([sys.executable, str(tmp_path / "ddp.py"), solver_one, str(one / "out")], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert run_one.returncode == 0, run_one.stderr
    run_two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                              "--master_port=29533", str(tmp_path / "ddp.py"), solver_two, str(two / "out")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run_two.returncode == 0, run_two.stderr
    _, params_one = load_caffemodel(one / "snapshots" / "train_iter_3.caffemodel")
    _, params_two = load_caffemodel(two / "snapshots" / "train_iter_3.caffemodel")
    for layer in ("conv1", "score"):
        for a, b in zip(params_one[layer], params_two[layer]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The equality is not trivial: training moved the weights away from the seeded initial ones.
    set_random_seed(5)
    initial = Net(str(one / "train.prototxt"), caffe_pb2.TRAIN)
    assert np.abs(initial.params["score"][0].data - params_one["score"][0]).max() > 1e-6


def test_fcn_train_cli_points_the_nets_at_a_data_root(tmp_path) -> None:
    data = tmp_path / "data"
    write_dataset("voc", data, n=2, size=(24, 32), seed=0)
    model = tmp_path / "model"
    model.mkdir()
    for name, split in (("train", "train"), ("val", "val")):
        (model / f"{name}.prototxt").write_text(_net_text("../data/pascal/VOC2011", split))  # release-style path
    (model / "solver.prototxt").write_text(textwrap.dedent("""
    train_net: "train.prototxt"
    test_net: "val.prototxt"
    test_iter: 2
    test_interval: 999999
    base_lr: 1e-6
    lr_policy: "fixed"
    momentum: 0.9
    max_iter: 100
    display: 1
    snapshot: 0
    snapshot_prefix: "snapshot/train"
    """))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "fcn", "train", str(model), "--data", str(data), "--iters", "2",
                             "--score-every", "2", "--out", str(out)], cwd=str(tmp_path), capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert "done at iteration 2" in result.stdout and "best mean IU" in result.stdout
    assert (out / "snapshot" / "train_iter_2.caffemodel").exists() and (out / "best.caffemodel").exists()
    resolved = (out / "train.prototxt").read_text()
    assert str(data / "pascal" / "VOC2011") in resolved
