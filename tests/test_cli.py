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


def test_demo_runs_end_to_end(tmp_path) -> None:
    result = _fcn("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "reload reproduces it exactly: True" in result.stdout
    assert (tmp_path / "demo" / "fcn8s-demo-labels.png").exists()
