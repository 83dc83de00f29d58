"""Using trained nets: `fcn infer` and Segmenter, weight conversion, ONNX export, `fcn time`, `fcn draw`.

Nets are FCN-8s with the real topology but a few channels per layer and random weights, so that every
path (crops, skips, any picture size) runs in well under a second.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fcn
from fcn import cli
from fcn.convert import read_tensors
from malformed import png_header_only
from fcn.segmenter import VOC_MEAN, Segmenter
from netspec import caffe_pb2
from netspec.backbones import deploy, fcn8s
from netspec.caffemodel import load_caffemodel
from netspec.net_spec import L, NetSpec
from netspec.prototxt import write_prototxt
from runner.net import Net
from solvers.score import voc_palette

UPGRADE = Path(__file__).parent / "fixtures" / "caffe_reference" / "upgrade"
WIDTHS = (4, 8, 8, 16, 16)


def _small_fcn8s(widths=WIDTHS) -> caffe_pb2.NetParameter:
    return deploy(fcn8s, shape=(1, 3, 64, 64), num_classes=21, widths=widths, fc_width=16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(deploy prototxt, caffemodel) of a small FCN-8s with random weights."""
    folder = tmp_path_factory.mktemp("model")
    prototxt, weights = folder / "deploy.prototxt", folder / "random.caffemodel"
    write_prototxt(prototxt, _small_fcn8s())
    net = Net(str(prototxt), caffe_pb2.TEST)
    rng = np.random.RandomState(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.2, blob.shape)
    net.save(str(weights))
    return str(prototxt), str(weights)


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


def _reference_scores(prototxt: str, weights: str, rgb: np.ndarray, mean=VOC_MEAN) -> np.ndarray:
    """What the FCN release's infer.py does with pycaffe, step by step."""
    net = Net(prototxt, caffe_pb2.TEST, weights=weights)
    in_ = np.array(rgb, dtype=np.float32)[:, :, ::-1] - np.array(mean, dtype=np.float32)
    in_ = in_.transpose((2, 0, 1))
    net.blobs["data"].reshape(1, *in_.shape)
    net.blobs["data"].data[...] = in_
    with torch.no_grad():
        net.forward()
    return net.blobs["score"].data[0].copy()


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=0))
    return e / e.sum(axis=0)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


# ----- Segmenter -----

def test_segmenter_is_exported_lazily_and_matches_pycaffe_steps(model) -> None:
    assert fcn.Segmenter is Segmenter
    segmenter = fcn.Segmenter(*model, device="cpu")
    for height, width, seed in ((40, 52, 1), (33, 47, 2)):
        rgb = _picture(height, width, seed)
        reference = _reference_scores(*model, rgb)
        labels = segmenter.predict(rgb)
        probs = segmenter.predict_proba(Image.fromarray(rgb))
        assert labels.shape == (height, width) and labels.dtype == np.uint8
        assert probs.shape == (21, height, width) and probs.dtype == np.float32
        np.testing.assert_array_equal(labels, reference.argmax(axis=0))
        np.testing.assert_allclose(probs, _softmax(reference), rtol=1e-5, atol=1e-6)
        both = segmenter.predict_with_proba(rgb)
        np.testing.assert_array_equal(both[0], labels)
        np.testing.assert_allclose(both[1], probs, rtol=1e-6)


def test_segmenter_mean_and_image_forms(model, tmp_path) -> None:
    rgb = _picture(30, 41, 3)
    Image.fromarray(rgb).save(tmp_path / "picture.png")
    zero_mean = Segmenter(*model, mean=(0, 0, 0), device="cpu")
    reference = _reference_scores(*model, rgb, mean=(0, 0, 0))
    np.testing.assert_array_equal(zero_mean.predict(tmp_path / "picture.png"), reference.argmax(axis=0))
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(zero_mean.predict(grey), zero_mean.predict(np.dstack([grey] * 3)))
    with pytest.raises(ValueError, match="mean must hold 3 values"):
        Segmenter(*model, mean=(1, 2), device="cpu")
    with pytest.raises(ValueError, match="no blob 'nope'"):
        Segmenter(*model, blob="nope", device="cpu")
    with pytest.raises(ValueError, match="HxWx3"):
        zero_mean.predict(np.zeros((4, 5, 2)))


@pytest.mark.parametrize("prototxt, weights", [("v1_deploy.prototxt", "v1.caffemodel"),
                                               ("upgraded_deploy.prototxt", "upgraded.caffemodel")])
def test_segmenter_reads_v1_and_legacy_dim_caffemodels(prototxt, weights) -> None:
    """Real Caffe's V1 caffemodel (legacy num/channels/height/width blobs) and its upgrade, through the
    Segmenter: with a zero mean, the picture whose BGR planes are Caffe's input gives Caffe's output."""
    data = np.load(UPGRADE / "inputs.npz")["data"][0]
    caffe = np.load(UPGRADE / "forward.npz")
    segmenter = Segmenter(str(UPGRADE / prototxt), str(UPGRADE / weights), mean=(0, 0, 0), blob="fc8",
                          device="cpu")
    rgb = data[::-1].transpose(1, 2, 0)
    np.testing.assert_allclose(segmenter.predict_proba(rgb), caffe["prob"][0], rtol=1e-4, atol=1e-7)
    assert segmenter.predict(rgb) == caffe["prob"][0].argmax()
    loaded = np.load(UPGRADE / "params_as_loaded.npz")
    for layer, blobs in segmenter.net.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(blob.data, loaded[f"{layer}/{i}"])


def test_segmenter_weight_mismatch_names_layer_and_shapes(model, tmp_path) -> None:
    wider = tmp_path / "wider.prototxt"
    write_prototxt(wider, _small_fcn8s(widths=(4, 8, 8, 16, 24)))
    with pytest.raises(ValueError, match=r"conv5_1.*\(16, 16, 3, 3\).*\(24, 16, 3, 3\)"):
        Segmenter(str(wider), model[1], device="cpu")


# ----- Python layers are refused unless allowed -----

_PASSTHROUGH = '''
from runner.python_layer import Layer


class Passthrough(Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
'''


def _python_layer_deploy(folder: Path, module: str) -> str:
    n = NetSpec()
    n.data = L.Input(name="input", shape=dict(dim=[1, 3, 64, 64]))
    n.pre = L.Python(n.data, module=module, layer="Passthrough")
    fcn8s(n, n.pre, num_classes=21, widths=WIDTHS, fc_width=16, dropout=False)
    path = folder / "python_deploy.prototxt"
    write_prototxt(path, n.to_proto())
    return str(path)


def test_python_layers_are_refused_before_anything_is_imported(model, tmp_path, capsys) -> None:
    module = "fcn_test_module_that_must_never_be_imported"
    prototxt = _python_layer_deploy(tmp_path, module)
    Image.fromarray(_picture(20, 20, 0)).save(tmp_path / "a.png")
    code = cli.main(["infer", "--model", prototxt, "--weights", model[1], str(tmp_path / "a.png"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "layer 'pre' is a Python layer" in err and "--allow-python-layers" in err
    assert module not in sys.modules and not (tmp_path / "out").exists()
    for command in (["export", "--onnx", prototxt, model[1], str(tmp_path / "x.onnx")], ["time", prototxt]):
        assert cli.main(command) == 2 and "layer 'pre' is a Python layer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="layer 'pre' is a Python layer"):
        Segmenter(prototxt, model[1], device="cpu")


def test_python_layers_run_when_allowed(model, tmp_path) -> None:
    (tmp_path / "fcn_test_passthrough.py").write_text(_PASSTHROUGH)
    prototxt = _python_layer_deploy(tmp_path, "fcn_test_passthrough")
    rgb = _picture(24, 30, 4)
    allowed = Segmenter(prototxt, model[1], device="cpu", allow_python_layers=True)
    np.testing.assert_array_equal(allowed.predict(rgb), Segmenter(*model, device="cpu").predict(rgb))


# ----- fcn infer -----

def test_infer_labels_a_folder_with_overlays_and_probabilities(model, tmp_path, capsys) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    sizes = {"first": (40, 52), "second": (27, 35)}
    for i, (name, (height, width)) in enumerate(sizes.items()):
        Image.fromarray(_picture(height, width, i)).save(pictures / f"{name}.{'png' if i else 'jpg'}")
    (pictures / "notes.txt").write_text("not a picture")
    out = tmp_path / "labels"
    code = cli.main(["infer", "--model", model[0], "--weights", model[1], str(pictures), "--out", str(out),
                     "--overlay", "--probs", "--cpu"])
    assert code == 0, capsys.readouterr().err
    assert "6 files written" in capsys.readouterr().out
    segmenter = Segmenter(*model, device="cpu")
    for name, (height, width) in sizes.items():
        source = next(pictures.glob(f"{name}.*"))
        rgb = np.asarray(Image.open(source).convert("RGB"))
        with Image.open(out / f"{name}.png") as png:
            assert png.mode == "P" and png.size == (width, height)
            assert np.array_equal(np.array(png.getpalette()[:768], dtype=np.uint8).reshape(256, 3), voc_palette())
            labels = np.asarray(png)
        np.testing.assert_array_equal(labels, segmenter.predict(rgb))
        probs = np.load(out / f"{name}_probs.npy")
        assert probs.shape == (21, height, width) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=0), 1, rtol=1e-5)
        np.testing.assert_array_equal(probs.argmax(axis=0), labels)
        with Image.open(out / f"{name}_overlay.jpg") as overlay:
            assert overlay.format == "JPEG" and overlay.size == (width, height)
    assert _no_temp_files(out)


def test_infer_single_files_and_bad_inputs(model, tmp_path, capsys) -> None:
    picture = tmp_path / "one.png"
    Image.fromarray(_picture(21, 23, 5)).save(picture)
    out = tmp_path / "out"
    assert cli.main(["infer", "--model", model[0], "--weights", model[1], str(picture), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.png"]
    capsys.readouterr()
    (tmp_path / "fake.jpg").write_text("text, not JPEG")
    for inputs, target, message in (
            ([tmp_path / "missing.png"], out, "missing.png: no such image file or folder"),
            ([picture, out / "one.png"], out, "would both write one.png"),
            ([tmp_path], tmp_path, "would overwrite a picture")):
        command = ["infer", "--model", model[0], "--weights", model[1], *map(str, inputs), "--out", str(target)]
        assert cli.main(command) == 2
        assert message in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["infer", "--model", model[0], "--weights", model[1], str(picture), "--out", str(out),
                         "--gpu", "0"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_infer_names_and_skips_unreadable_pictures_and_labels_the_rest(model, tmp_path, capsys) -> None:
    """One truncated, foreign or gigapixel file in a folder costs that file only, named on stderr."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(_picture(21, 23, 5)).save(folder / "a_good.png")
    whole = (folder / "a_good.png").read_bytes()
    (folder / "b_truncated.png").write_bytes(whole[:-34])
    (folder / "c_fake.jpg").write_text("text, not JPEG")
    (folder / "d_bomb.png").write_bytes(png_header_only(20000, 20000))
    Image.fromarray(_picture(17, 19, 6)).save(folder / "e_good.png")
    out = tmp_path / "out"
    assert cli.main(["infer", "--model", model[0], "--weights", model[1], str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_good.png", "e_good.png"]
    for name in ("b_truncated.png", "c_fake.jpg: not an image file", "d_bomb.png"):
        assert f"skipped {folder / name}" in err
    assert "20000x20000" in err or "decompression bomb" in err
    assert "3 picture(s) could not be read" in err and "Traceback" not in err


# ----- fcn convert -----

def _assert_same_weights(a: str, b: str) -> None:
    """Same layers, shapes, dtypes and bits."""
    (_, first), (_, second) = load_caffemodel(a), load_caffemodel(b)
    assert list(first) == list(second)
    for layer in first:
        for x, y in zip(first[layer], second[layer], strict=True):
            assert x.shape == y.shape and x.dtype == y.dtype
            assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_convert_round_trip_is_bit_exact(model, tmp_path, suffix) -> None:
    tensors, back = tmp_path / f"weights{suffix}", tmp_path / "back.caffemodel"
    assert cli.main(["convert", model[1], "--to", str(tensors)]) == 0
    read = read_tensors(tensors)
    assert "conv1_1/0" in read and "conv1_1/1" in read and read["upscore8/0"].shape == (21, 21, 16, 16)
    assert cli.main(["convert", str(tensors), "--to", str(back), "--model", model[0]]) == 0
    _assert_same_weights(model[1], str(back))
    again = tmp_path / f"again{suffix}"
    assert cli.main(["convert", str(back), "--to", str(again)]) == 0
    if suffix == ".safetensors":
        assert again.read_bytes() == tensors.read_bytes()
    rgb = _picture(25, 31, 6)
    np.testing.assert_array_equal(Segmenter(model[0], str(back), device="cpu").predict_proba(rgb),
                                  Segmenter(*model, device="cpu").predict_proba(rgb))
    assert _no_temp_files(tmp_path)


def test_convert_v1_caffemodel_keeps_or_reshapes_legacy_dims(tmp_path) -> None:
    v1, deploy_file = str(UPGRADE / "v1.caffemodel"), str(UPGRADE / "v1_deploy.prototxt")
    declared, shaped = tmp_path / "declared.safetensors", tmp_path / "shaped.safetensors"
    assert cli.main(["convert", v1, "--to", str(declared)]) == 0
    assert read_tensors(declared)["fc6/0"].shape == (1, 1, 32, 512)
    assert cli.main(["convert", v1, "--to", str(shaped), "--model", deploy_file]) == 0
    loaded = np.load(UPGRADE / "params_as_loaded.npz")
    tensors = read_tensors(shaped)
    assert sorted(tensors) == sorted(loaded.files)
    for key in loaded.files:
        np.testing.assert_array_equal(tensors[key], loaded[key])
    back = tmp_path / "back.caffemodel"
    assert cli.main(["convert", str(declared), "--to", str(back), "--model", deploy_file]) == 0
    _assert_same_weights(v1, str(back))
    net = Net(deploy_file, caffe_pb2.TEST, weights=str(back))
    out = net.forward(data=np.load(UPGRADE / "inputs.npz")["data"])
    np.testing.assert_allclose(out["prob"], np.load(UPGRADE / "forward.npz")["prob"], rtol=1e-4, atol=1e-7)


def test_convert_errors_are_one_line(model, tmp_path, capsys) -> None:
    tensors = tmp_path / "w.safetensors"
    cases = [(["convert", model[1], "--to", str(tmp_path / "w.npy")], "unknown weights format '.npy'"),
             (["convert", model[1], "--to", str(tmp_path / "w.caffemodel")], "both caffemodels"),
             (["convert", str(tensors), "--to", str(tmp_path / "w.caffemodel")], "needs the net's prototxt")]
    assert cli.main(["convert", model[1], "--to", str(tensors)]) == 0
    for command, message in cases:
        assert cli.main(command) == 2 and message in capsys.readouterr().err
    v1_deploy = str(UPGRADE / "v1_deploy.prototxt")
    assert cli.main(["convert", str(tensors), "--to", str(tmp_path / "w.caffemodel"), "--model", v1_deploy]) == 2
    assert "params for layers the net does not have" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a pickle")
    assert cli.main(["convert", str(tmp_path / "bad.pt"), "--to", str(tmp_path / "x.safetensors")]) == 2
    assert "bad.pt" in capsys.readouterr().err


# ----- fcn export --onnx -----

def test_onnx_export_matches_the_runner_at_two_sizes(model, tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "fcn8s.onnx"
    assert cli.main(["export", "--onnx", model[0], model[1], str(out)]) == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"] and [o.name for o in session.get_outputs()] == ["score"]
    net = Net(model[0], caffe_pb2.TEST, weights=model[1])
    # 64x64 is the traced size; 45x37 gives odd sizes at other pooling layers than 64 does.
    for shape in ((1, 3, 64, 64), (1, 3, 45, 37)):
        data = np.random.RandomState(shape[2]).normal(0, 60, shape).astype(np.float32)
        (exported,) = session.run(None, {"data": data})
        net.blobs["data"].reshape(*shape)
        with torch.no_grad():
            expected = net.forward(data=data)["score"]
        assert exported.shape == expected.shape == (1, 21) + shape[2:]
        assert np.abs(exported - expected).max() <= 1e-4 * np.abs(expected).max()
    assert _no_temp_files(tmp_path)


# ----- fcn time, fcn draw -----

def test_time_prints_a_per_layer_table(model, capsys) -> None:
    assert cli.main(["time", model[0], "--iterations", "2", "--weights", model[1]]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "type", "forward", "ms", "backward", "ms"]
    net = Net(model[0], caffe_pb2.TRAIN)
    assert [line.split()[0] for line in lines[1:len(net.layers) + 1]] == list(net._layer_names)
    conv = next(line for line in lines if line.startswith("conv1_1 "))
    assert float(conv.split()[-1]) > 0 and float(conv.split()[-2]) > 0
    assert "Average Forward pass" in table and "Average Forward-Backward" in table
    assert cli.main(["time", model[0], "--iterations", "1", "--forward-only", "--phase", "test"]) == 0
    table = capsys.readouterr().out
    assert "backward" not in table and "Average Forward pass" in table
    assert cli.main(["time", model[0], "--iterations", "0"]) == 2


def test_draw_writes_a_png_top_to_bottom(model, tmp_path, capsys) -> None:
    out = tmp_path / "fcn8s.png"
    assert cli.main(["draw", model[0], str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.height > 3 * picture.width
    assert _no_temp_files(tmp_path)
    assert cli.main(["draw", str(UPGRADE / "v1_deploy.prototxt"), str(tmp_path / "v1.png"), "--phase", "test"]) == 0
    assert (tmp_path / "v1.png").exists()


def test_segmenter_speeds_agree_with_exact_float32(model) -> None:
    rgb = _picture(40, 52, 3)

    def scores(segmenter):
        labels = segmenter.predict(rgb)
        return labels, segmenter.net.blobs[segmenter.blob].data.copy()

    labels, exact = scores(Segmenter(*model, device="cpu"))
    for speed, tolerance in (("winograd", 1e-4), ("bf16", 5e-2)):
        fast_labels, fast = scores(Segmenter(*model, device="cpu", speed=speed))
        assert fast.dtype == np.float32 and fast.shape == exact.shape
        assert np.abs(fast - exact).max() / np.abs(exact).max() < tolerance, speed
        assert (fast_labels == labels).mean() > 0.9, speed
    with pytest.raises(ValueError, match="speed must be one of exact, winograd, bf16"):
        Segmenter(*model, device="cpu", speed="fast")
    # a blob that is not an output stays bfloat16 in the net: the probabilities still come out float32
    inner = Segmenter(*model, device="cpu", speed="bf16", blob="upscore8").predict_proba(rgb)
    assert inner.dtype == np.float32 and np.isfinite(inner).all()
