"""The `fcn` command line, run as a user runs it (a real process)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fcn(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcn", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_synth_writes_a_voc_layout_the_layer_reads(tmp_path) -> None:
    result = _fcn("synth", "voc", "--out", str(tmp_path), "--n", "2", "--size", "40x48", "--seed", "3")
    assert result.returncode == 0, result.stderr
    voc = tmp_path / "pascal" / "VOC2011"
    assert f"voc_dir: {voc}" in result.stdout
    names = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(names) == 2
    assert all((voc / "JPEGImages" / f"{n}.jpg").exists() and (voc / "SegmentationClass" / f"{n}.png").exists()
               for n in names)


def test_bad_arguments_give_one_line_errors(tmp_path) -> None:
    result = _fcn("synth", "voc", "--out", str(tmp_path), "--size", "forty")
    assert result.returncode == 2 and "--size must be HxW" in result.stderr
    result = _fcn("pycaffe", str(tmp_path / "missing.py"))
    assert result.returncode == 2 and "missing.py" in result.stderr


def test_demo_pipeline_end_to_end_at_a_tiny_budget(tmp_path) -> None:
    """The whole demo recipe (data, classifier, surgery, 32s/16s/8s staged, 8s at once, report) with a
    few iterations each; `make demo` runs the same code at its full budget."""
    from fcn.demo import Budget, run_demo
    report = run_demo(str(tmp_path / "demo"), Budget(images=4, size=(48, 64), classifier=3, fcn32s=4, fcn16s=2,
                                                     fcn8s=2, atonce=2, score_points=2))
    text = open(report).read()
    for net in ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"):
        assert f"| {net} |" in text
    assert "Fine structure: fcn8s" in text and "one seed, so no verdict" in text
    for stage in ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"):
        assert (tmp_path / "demo" / stage / "deploy.prototxt").is_file()
    for picture in ("curves.png", "predictions.png"):
        assert os.path.getsize(tmp_path / "demo" / picture) > 5000
