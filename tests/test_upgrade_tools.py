"""Caffe's upgrade tools as console scripts (issue #16), run as real processes on real Caffe files: the V1
net and weights of fixture ``upgrade/`` must come out as the files Caffe's own tools wrote, byte for byte."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest
from caffe_cases import ROOT

from netspec.prototxt import parse_prototxt, read_prototxt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPGRADE = os.path.join(ROOT, "upgrade")
TOOL = os.path.join(ROOT, "caffe_tool")
GLOG_LINE = re.compile(r"^([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d{6} +\d+ ([\w.]+:\d+)\] (.*)$")


def run(tool: str, *args: str, cwd: str) -> Tuple[int, List[Tuple[str, str, str]], List[str]]:
    """Exit status, glog lines as (severity, file:line, message), and the other stderr lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    done = subprocess.run([sys.executable, "-m", f"fcn.tools.{tool}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**env, "PYTHONPATH": REPO})
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    glog = [GLOG_LINE.match(line).groups() for line in lines if GLOG_LINE.match(line)]
    return done.returncode, glog, [line for line in lines if not GLOG_LINE.match(line)]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_text_tool_writes_what_caffes_wrote(tmp_path):
    status, glog, other = run("upgrade_net_proto_text", os.path.join(UPGRADE, "v1_deploy.prototxt"), "new.prototxt",
                              cwd=str(tmp_path))
    assert status == 0 and other == []
    assert _read(tmp_path / "new.prototxt") == _read(os.path.join(UPGRADE, "upgraded_deploy.prototxt"))
    assert [where for _, where, _ in glog] == ["upgrade_proto.cpp:55", "upgrade_proto.cpp:63", "upgrade_proto.cpp:69",
                                               "upgrade_proto.cpp:72", "upgrade_proto.cpp:74",
                                               "upgrade_net_proto_text.cpp:49"]
    assert glog[0][2].endswith("V1LayerParameter: " + os.path.join(UPGRADE, "v1_deploy.prototxt"))
    assert glog[4][0] == "W" and glog[-1] == ("I", "upgrade_net_proto_text.cpp:49",
                                              "Wrote upgraded NetParameter text proto to new.prototxt")
    assert os.listdir(tmp_path) == ["new.prototxt"]  # no temporary file left behind


def test_binary_tool_writes_what_caffes_wrote(tmp_path):
    status, glog, other = run("upgrade_net_proto_binary", os.path.join(UPGRADE, "v1.caffemodel"), "new.caffemodel",
                              cwd=str(tmp_path))
    assert status == 0 and other == []
    assert _read(tmp_path / "new.caffemodel") == _read(os.path.join(UPGRADE, "upgraded.caffemodel"))
    assert glog[-1] == ("I", "upgrade_net_proto_binary.cpp:48",
                        "Wrote upgraded NetParameter binary proto to new.caffemodel")


@pytest.mark.parametrize("tool, current", [("upgrade_net_proto_text", "upgraded_deploy.prototxt"),
                                           ("upgrade_net_proto_binary", "upgraded.caffemodel")])
def test_current_files_are_written_back_unchanged(tmp_path, tool, current):
    source = os.path.join(UPGRADE, current)
    status, glog, _ = run(tool, source, "out", cwd=str(tmp_path))
    assert status == 0
    assert glog[0] == ("E", f"{tool}.cpp:43", f"File already in latest proto format: {source}")
    assert _read(tmp_path / "out") == _read(source)


def test_solver_tool_upgrades_solver_type_and_writes_caffes_text(tmp_path):
    """The written text is the solver as Caffe prints it: the real caffe tool's echo of the same file."""
    with open(os.path.join(TOOL, "train_resume_snapshot.stderr.txt")) as f:
        echo = f.read().split("Initializing solver from parameters: \n", 1)[1].split("train_state {")[0]
    legacy = tmp_path / "legacy.prototxt"
    legacy.write_text(open(os.path.join(TOOL, "solver_resume.prototxt")).read() + "solver_type: NESTEROV\n")
    status, glog, other = run("upgrade_solver_proto_text", "legacy.prototxt", "new.prototxt", cwd=str(tmp_path))
    assert status == 0 and other == []
    assert [where for _, where, _ in glog] == ["upgrade_proto.cpp:1084", "upgrade_proto.cpp:1091",
                                               "upgrade_proto.cpp:1093", "upgrade_solver_proto_text.cpp:49"]
    written = (tmp_path / "new.prototxt").read_text()
    assert written == echo + 'type: "Nesterov"\n'
    status, glog, _ = run("upgrade_solver_proto_text", "new.prototxt", "again.prototxt", cwd=str(tmp_path))
    assert status == 0 and glog[0][1:] == ("upgrade_solver_proto_text.cpp:43",
                                           "File already in latest proto format: new.prototxt")
    assert (tmp_path / "again.prototxt").read_text() == written


@pytest.mark.parametrize("tool, usage", [
    ("upgrade_net_proto_text", "Usage: upgrade_net_proto_text v0_net_proto_file_in net_proto_file_out"),
    ("upgrade_net_proto_binary", "Usage: upgrade_net_proto_binary v0_net_proto_file_in net_proto_file_out"),
    ("upgrade_solver_proto_text", "Usage: upgrade_solver_proto_text old_solver_proto_file_in solver_proto_file_out"),
])
def test_wrong_argument_count_prints_caffes_usage(tmp_path, tool, usage):
    for args in ((), ("a",), ("a", "b", "c")):
        assert run(tool, *args, cwd=str(tmp_path)) == (1, [("E", f"{tool}.cpp:22", usage)], [])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tool, source, what", [
    ("upgrade_net_proto_text", "v1.caffemodel", "text file as NetParameter"),
    ("upgrade_net_proto_binary", "v1_deploy.prototxt", "binary file as NetParameter"),
    ("upgrade_solver_proto_text", "v1_deploy.prototxt", "text file as SolverParameter"),
    ("upgrade_net_proto_text", "missing.prototxt", "text file as NetParameter"),
])
def test_unreadable_input_exits_2_naming_the_file(tmp_path, tool, source, what):
    path = os.path.join(UPGRADE, source)
    status, glog, other = run(tool, path, "out", cwd=str(tmp_path))
    assert status == 2 and len(other) == 1 and path in other[0]
    assert glog == [("E", f"{tool}.cpp:30", f"Failed to parse input {what}: {path}")]
    assert os.listdir(tmp_path) == []


def test_v0_net_with_dropped_fields_exits_1_but_is_written(tmp_path):
    (tmp_path / "v0.prototxt").write_text(
        'input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 '
        'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "y" }')
    status, glog, _ = run("upgrade_net_proto_text", "v0.prototxt", "new.prototxt", cwd=str(tmp_path))
    assert status == 1
    assert ("E", "upgrade_proto.cpp:33", "Warning: had one or more problems upgrading V0NetParameter to "
            "NetParameter (see above); continuing anyway.") in glog
    assert ("E", "upgrade_net_proto_text.cpp:39",
            "Encountered error(s) while upgrading prototxt; see details above.") in glog
    net = read_prototxt(tmp_path / "new.prototxt")
    assert [layer.type for layer in net.layer] == ["Input", "ReLU"]


def test_refused_upgrade_and_unwritable_output_write_nothing(tmp_path):
    both = tmp_path / "both.prototxt"
    both.write_text('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')
    status, glog, other = run("upgrade_net_proto_text", "both.prototxt", "new.prototxt", cwd=str(tmp_path))
    assert status == 1 and len(other) == 1 and "both 'layer' and legacy 'layers'" in other[0]
    assert not (tmp_path / "new.prototxt").exists()
    source = os.path.join(UPGRADE, "v1_deploy.prototxt")
    status, glog, other = run("upgrade_net_proto_text", source, "no/such/dir/new.prototxt", cwd=str(tmp_path))
    assert status == 1 and len(other) == 1 and "no/such/dir/new.prototxt" in other[0]
    assert not any(message.startswith("Wrote") for _, _, message in glog)
    assert sorted(os.listdir(tmp_path)) == ["both.prototxt"]


def test_an_existing_output_is_replaced_whole(tmp_path):
    target = tmp_path / "new.prototxt"
    target.write_text("old content that is longer than nothing " * 200)
    status, _, _ = run("upgrade_net_proto_text", os.path.join(UPGRADE, "v1_deploy.prototxt"), str(target),
                       cwd=str(tmp_path))
    assert status == 0
    assert parse_prototxt(target.read_text()) == read_prototxt(os.path.join(UPGRADE, "upgraded_deploy.prototxt"))
