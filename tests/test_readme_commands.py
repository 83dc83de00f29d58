"""Every command README.md shows runs as printed, after a tiny `fcn demo` in a fresh folder.

The commands are read from README.md itself (its indented and ```python blocks), so a README edit that
breaks a command breaks this test. Not run: the two `make` lines (CI runs `make test`; `make demo` is the
full demo) and commands marked "needs VGG16 weights" (the ILSVRC classifier cannot be downloaded here).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
RUNNERS = ("fcn ", "python ", "torchrun ")


def shell_commands(text: str) -> List[str]:
    """Indented code lines that start with a command this project installs, comments removed."""
    commands = []
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and stripped.startswith(RUNNERS):
            commands.append(stripped)
    return commands


def runnable(command: str) -> bool:
    return "needs VGG16 weights" not in command


def python_blocks(text: str) -> List[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _run(argv: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _argv(command: str) -> List[str]:
    words = shlex.split(command, comments=True)
    if words[0] == "fcn":
        return [sys.executable, "-m", "fcn", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"no way to run {command!r} here")


def test_readme_lists_the_commands_it_promises() -> None:
    commands = shell_commands(README)
    assert any(c.startswith("fcn infer --model demo/fcn8s/deploy.prototxt") for c in commands)
    assert sum(not runnable(c) for c in commands) == 3  # the VGG16 trainings, each marked
    assert python_blocks(README), "the pycaffe example"


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    result = _run([sys.executable, "-m", "fcn", "demo", "--budget", "tiny", "--out", "demo"], folder)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.strip().splitlines()[-1].strip()
    assert printed.startswith("fcn infer") and printed in shell_commands(README), \
        "the demo's closing command is the one README shows"
    return folder


def test_every_readme_command_runs_as_printed(demo_folder: Path) -> None:
    for command in filter(runnable, shell_commands(README)):
        result = _run(_argv(command), demo_folder)
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    assert len(list((demo_folder / "demo" / "infer").glob("*_overlay.jpg"))) == 8  # 4 train + 4 val pictures
    assert (demo_folder / "demo" / "fcn8s.onnx").stat().st_size > 0
    assert (demo_folder / "demo" / "fcn8s-more" / "train_log.jsonl").is_file()


def test_readme_pycaffe_example_runs(demo_folder: Path) -> None:
    script = demo_folder / "example.py"
    script.write_text(python_blocks(README)[0] + "\nprint(labels.shape, labels.max())\n")
    result = _run([sys.executable, str(script)], demo_folder)
    assert result.returncode == 0, result.stderr[-2000:]
    height, width = (int(v) for v in re.findall(r"\d+", result.stdout)[:2])
    assert 36 <= height <= 48 and 48 <= width <= 64  # a picture of the tiny demo, labelled at full size
