"""``convert_imageset``, ``compute_image_mean`` and their gflags parsing, against what Caffe's own tools
wrote (fixture ``data/imageset``): the same command lines on the same images must give the same records
(raw ones byte for byte, encoded ones the same pixels) and the same mean file, byte for byte. The tools run
as real subprocesses, as users run them.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fcn.gflags import FlagError, Flags
from netspec import caffe_pb2
from runner.datum import datum_pixels
from runner.db import DatabaseReader, DatabaseWriter

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "caffe_reference")
IMAGESET = os.path.join(FIXTURES, "data", "imageset")
with open(os.path.join(IMAGESET, "meta.json")) as _f:
    META = json.load(_f)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {"convert_imageset": "fcn.tools.convert_imageset", "compute_image_mean": "fcn.tools.compute_image_mean"}


def run_tool(command, cwd):
    """A tool command line ("convert_imageset --flag ... args") run as ``python -m`` in ``cwd``."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", MODULES[argv[0]]] + argv[1:], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def images(tmp_path):
    """A folder with Caffe's source images and list file, as the tools were run on them."""
    shutil.copytree(os.path.join(IMAGESET, "images"), tmp_path / "images")
    shutil.copy(os.path.join(IMAGESET, "list.txt"), tmp_path / "list.txt")
    return tmp_path


def caffe_records(tmp_path, db, backend):
    """The records of one of Caffe's databases, read from a copy (reading writes lock files)."""
    copy = tmp_path / "caffe" / db
    shutil.copytree(os.path.join(IMAGESET, db), copy)
    return list(DatabaseReader(str(copy), backend).records())


def _glog_lines(stderr):
    """Our stderr's glog lines as the fixture keeps Caffe's: ``file.cpp:NN] message`` (severity, time and
    thread dropped); any other line is kept whole."""
    return [re.sub(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ ", "", line) for line in stderr.splitlines()]


# -- the tools against Caffe's outputs ---------------------------------------------------------------

@pytest.mark.parametrize("run", META["convert_imageset"], ids=lambda run: run["db"])
def test_convert_imageset_writes_caffes_records(run, images):
    result = run_tool(run["command"], images)
    assert result.returncode == run["returncode"] == 0, result.stderr
    assert _glog_lines(result.stderr) == run["log"]
    backend = "leveldb" if "leveldb" in run["db"] else "lmdb"
    ours = list(DatabaseReader(str(images / run["db"]), backend).records())
    theirs = caffe_records(images, run["db"], backend)
    assert [key for key, _ in ours] == [key for key, _ in theirs] == \
           [f"{i:08d}_{line.split()[0]}".encode() for i, line in enumerate(open(images / "list.txt"))]
    for (key, mine), (_, caffes) in zip(ours, theirs):
        if "--encoded" not in run["command"]:
            assert mine == caffes, key  # every field, byte for byte
            continue
        a, b = caffe_pb2.Datum.FromString(mine), caffe_pb2.Datum.FromString(caffes)
        fields = ("encoded", "label", "channels", "height", "width")
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
        np.testing.assert_array_equal(datum_pixels(a, "ours"), datum_pixels(b, "Caffe's"))


def test_compute_image_mean_writes_caffes_mean_file(images):
    run = META["compute_image_mean"]
    shutil.copytree(os.path.join(IMAGESET, run["db"]), images / run["db"])
    result = run_tool(run["command"], images)
    assert result.returncode == run["returncode"] == 0, result.stderr
    assert _glog_lines(result.stderr) == run["log"]
    with open(os.path.join(IMAGESET, "mean.binaryproto"), "rb") as caffes:
        assert (images / "mean.binaryproto").read_bytes() == caffes.read()


def test_encoded_without_resize_stores_the_files_themselves(images):
    # Caffe's ReadImageToDatum: no resize, colour as the file, extension = encoding -> the file's bytes
    result = run_tool("convert_imageset --encoded images/ list.txt enc", images)
    assert result.returncode == 0, result.stderr
    for key, value in DatabaseReader(str(images / "enc"), "lmdb").records():
        datum = caffe_pb2.Datum.FromString(value)
        assert datum.encoded and datum.data == (images / "images" / key.decode()[9:]).read_bytes()


def test_every_gflags_spelling_gives_the_same_database(images):
    result = run_tool(["convert_imageset", "-backend", "leveldb", "images/", "--nogray", "-resize_height=16",
                       "--resize_width", "20", "--check_size=true", "--shuffle=no", "list.txt", "--",
                       "leveldb_raw_16x20"], images)
    assert result.returncode == 0, result.stderr
    ours = list(DatabaseReader(str(images / "leveldb_raw_16x20"), "leveldb").records())
    assert ours == caffe_records(images, "leveldb_raw_16x20", "leveldb")


# -- command-line errors as gflags and Caffe report them ------------------------------------------------

def test_glog_flags_are_accepted(images):
    shutil.copytree(os.path.join(IMAGESET, "lmdb_raw_16x20"), images / "db")
    quiet = run_tool("compute_image_mean --minloglevel=1 -logtostderr db", images)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert _glog_lines(run_tool("compute_image_mean -v 2 db", images).stderr)[-1] == \
           "compute_image_mean.cpp:119] mean_value channel [2]: 127.727"


def test_unknown_flag_is_gflags_error(images):
    result = run_tool("convert_imageset --bogus_flag=1 images/ list.txt db", images)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "ERROR: unknown command line flag 'bogus_flag'\n"
    assert not (images / "db").exists()


def test_missing_arguments_print_the_usage(images):
    result = run_tool("compute_image_mean", images)
    assert result.returncode == 1 and result.stderr == ""
    assert result.stdout.startswith("compute_image_mean: Compute the mean_image of a set of images given by a "
                                    "leveldb/lmdb\nUsage:\n    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n\n\n"
                                    "  Flags from tools/compute_image_mean.cpp:\n    -backend (The backend {leveldb, "
                                    "lmdb} containing the images) type: string\n      default: \"lmdb\"\n")


def _one_error_line(result, *fragments):
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("ERROR: ") and all(f in lines[-1] for f in fragments), lines


def test_bad_input_gives_one_clear_line(images):
    (images / "empty.txt").write_text("")
    _one_error_line(run_tool("convert_imageset images/ empty.txt db", images), "empty.txt", "lists no images")
    _one_error_line(run_tool("convert_imageset images/ nolist.txt db", images), "nolist.txt")
    _one_error_line(run_tool("convert_imageset --check_size images/ list.txt db", images),
                    "images/img1.jpg", "list.txt' line 2", "--check_size")
    assert not (images / "db").exists() and not [p for p in os.listdir(images) if p.startswith(".")]
    _one_error_line(run_tool("convert_imageset --backend=bdb images/ list.txt db", images), "bdb")
    _one_error_line(run_tool("convert_imageset --encode_type=xyz images/ list.txt db", images),
                    "cannot encode images as 'xyz'")
    assert run_tool("convert_imageset images/ list.txt db", images).returncode == 0
    _one_error_line(run_tool("convert_imageset images/ list.txt db", images), "'db'", "already exists")
    _one_error_line(run_tool("compute_image_mean nodb", images), "nodb", "no such directory")
    _one_error_line(run_tool("compute_image_mean --backend=leveldb db", images), "LMDB")
    with DatabaseWriter(str(images / "bad"), "lmdb") as db:
        db.put(b"00000000_a", caffe_pb2.Datum(channels=1, height=1, width=2, data=b"\x01\x02").SerializeToString())
        db.put(b"00000001_b", b"\x0a\xff")
    _one_error_line(run_tool("compute_image_mean bad", images), "record '00000001_b'", "not a Caffe Datum")
    with DatabaseWriter(str(images / "undecodable"), "lmdb") as db:
        db.put(b"00000000_x.png", caffe_pb2.Datum(data=b"\x89PNG....", encoded=True).SerializeToString())
    _one_error_line(run_tool("compute_image_mean undecodable", images), "record '00000000_x.png'", "cannot decode")
    _one_error_line(run_tool("compute_image_mean images", images), "cannot open LMDB 'images'")
    truncated = images / "truncated"
    shutil.copytree(os.path.join(IMAGESET, "lmdb_raw_16x20"), truncated)
    (truncated / "data.mdb").write_bytes((truncated / "data.mdb").read_bytes()[:12000])  # else: SIGBUS
    _one_error_line(run_tool("compute_image_mean truncated", images), "LMDB 'truncated' is truncated")
    damaged = images / "damaged"
    shutil.copytree(os.path.join(IMAGESET, "lmdb_raw_16x20"), damaged)
    pages = bytearray((damaged / "data.mdb").read_bytes())
    pages[9000:9400] = bytes(b ^ 0x5A for b in pages[9000:9400])
    (damaged / "data.mdb").write_bytes(bytes(pages))
    _one_error_line(run_tool("compute_image_mean damaged", images), "LMDB database 'damaged' is damaged")


def test_unreadable_image_is_skipped_as_caffe_does(images):
    (images / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with open(images / "list.txt", "a") as f:
        f.write("broken.png 5\nimg0.png 6\n")
    result = run_tool("convert_imageset --resize_height=16 --resize_width=20 images/ list.txt db", images)
    assert result.returncode == 0
    assert "io.cpp:80] could not read image 'images/broken.png': not an image OpenCV can decode ('list.txt' " \
           "line 9); skipped" in _glog_lines(result.stderr)
    keys = [key for key, _ in DatabaseReader(str(images / "db"), "lmdb").records()]
    assert keys[-2:] == [b"00000007_img7.jpg", b"00000009_img0.png"]  # the line index keeps counting


# -- the flag parser itself ------------------------------------------------------------------------------

def _flags():
    f = Flags("test program", source="test.cc")
    f.define("gray", False, "a bool")
    f.define("size", 0, "an int32")
    f.define("rate", 0.5, "a double")
    f.define("name", "x", "a string")
    return f


def test_gflags_spellings():
    values, args = _flags().parse(["a", "-gray", "--size=-3", "-rate", "2e-3", "b", "--name", "-dash", "--", "--c"])
    assert (values.gray, values.size, values.rate, values.name, args) == (True, -3, 0.002, "-dash", ["a", "b", "--c"])
    for spelling, want in (("--nogray", False), ("--gray=false", False), ("-gray=YES", True), ("--gray=0", False)):
        assert _flags().parse(["--gray", spelling])[0].gray is want
    assert _flags().parse(["--size=0x1F", "-"])[0].size == 31
    assert _flags().parse([])[0].name == "x"


def test_gflags_errors():
    cases = {
        ("--bogus",): "ERROR: unknown command line flag 'bogus'",
        ("--nosize",): "ERROR: boolean value (nosize) specified for int32 command line flag",
        ("--size=1.5",): "ERROR: illegal value '1.5' specified for int32 flag 'size'",
        ("--size=4294967296",): "ERROR: illegal value '4294967296' specified for int32 flag 'size'",
        ("--gray=maybe",): "ERROR: illegal value 'maybe' specified for bool flag 'gray'",
        ("--rate=fast",): "ERROR: illegal value 'fast' specified for double flag 'rate'",
        ("--name",): "ERROR: flag '--name' is missing its argument; flag description: a string",
        ("--zeta", "--alpha=1"): "ERROR: unknown command line flag 'alpha'\nERROR: unknown command line flag 'zeta'",
    }
    for argv, message in cases.items():
        with pytest.raises(FlagError) as err:
            _flags().parse(list(argv))
        assert str(err.value) == message


def test_gflags_usage_is_gflags_layout():
    # real gflags' output for Caffe's `caffe` tool (fixture caffe_tool/no_args.stdout.txt), with its flags
    f = Flags("command line brew\nusage: caffe <command> <args>\n\ncommands:\n"
              "  train           train or finetune a model\n  test            score a model\n"
              "  device_query    show GPU diagnostic information\n  time            benchmark model execution time",
              source="<caffe-src>/tools/caffe.cpp")
    f.define("gpu", "", "Optional; run in GPU mode on given device IDs separated by ','.Use '-gpu all' to run on "
                        "all available GPUs. The effective training batch size is multiplied by the number of devices.")
    f.define("iterations", 50, "The number of iterations to run.")
    f.define("level", 0, "Optional; network level.")
    f.define("model", "", "The model definition protocol buffer text file.")
    f.define("phase", "", "Optional; network phase (TRAIN or TEST). Only used for 'time'.")
    f.define("sighup_effect", "snapshot", "Optional; action to take when a SIGHUP signal is received: snapshot, "
                                          "stop or none.")
    f.define("sigint_effect", "stop", "Optional; action to take when a SIGINT signal is received: snapshot, stop "
                                      "or none.")
    f.define("snapshot", "", "Optional; the snapshot solver state to resume training.")
    f.define("solver", "", "The solver definition protocol buffer text file.")
    f.define("stage", "", "Optional; network stages (not to be confused with phase), separated by ','.")
    f.define("weights", "", "Optional; the pretrained weights to initialize finetuning, separated by ','. Cannot "
                            "be set simultaneously with snapshot.")
    with open(os.path.join(FIXTURES, "caffe_tool", "no_args.stdout.txt")) as real:
        assert f.usage("caffe") == real.read()
