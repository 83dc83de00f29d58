"""Issue #14's findings about files and input, each reproduced on real files first: writers that never
overwrite what they did not write, paths that stay inside their roots, weights never lost or silently
missing, and limits checked before anything is allocated."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from data_layers.errors import BadSampleError
from data_layers.synthetic import MARKER, write_dataset
from data_layers.voc import VOCSegDataLayer
from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.blob import Blob
from runner.net import TEST, Net

TWO_SAME_NAMES = """
name: "dup"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "a"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "a" top: "b"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


def _run_fcn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcn", *args], capture_output=True, text=True, cwd=cwd)


# ----- 1. fcn synth never overwrites a real dataset -----

def test_synth_refuses_a_folder_holding_files_it_did_not_write(tmp_path):
    voc = tmp_path / "data" / "pascal" / "VOC2011"
    real_split = voc / "ImageSets" / "Segmentation" / "seg11valid.txt"
    real_split.parent.mkdir(parents=True)
    real_split.write_text("2011_000000\n")
    refused = _run_fcn("synth", "voc", "--out", str(tmp_path / "data"), "--n", "1", "--size", "16x16")
    assert refused.returncode == 1
    assert str(voc) in refused.stderr and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert real_split.read_text() == "2011_000000\n" and not (voc / "JPEGImages").exists()
    forced = _run_fcn("synth", "voc", "--out", str(tmp_path / "data"), "--n", "1", "--size", "16x16", "--force")
    assert forced.returncode == 0 and real_split.read_text() != "2011_000000\n"


def test_synth_rewrites_its_own_folders_and_leaves_other_datasets_alone(tmp_path):
    write_dataset("voc", tmp_path, n=1, size=(16, 16))
    assert (tmp_path / "pascal" / "VOC2011" / MARKER).exists()
    write_dataset("voc", tmp_path, n=2, size=(16, 16), seed=1)  # ours: rewritten without --force
    write_dataset("context", tmp_path, n=1, size=(16, 16))      # VOC2010 beside the VOC2011 it must not touch
    assert len((tmp_path / "pascal" / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 2


# ----- 2. split-file ids stay inside the dataset -----

@pytest.mark.parametrize("bad_id", ["../../outside", "/etc/passwd", "sub/dir", "..", "a\\b"])
def test_split_ids_that_name_files_outside_the_dataset_are_refused(tmp_path, bad_id):
    params = write_dataset("voc", tmp_path, n=2, size=(16, 16))
    split = tmp_path / "pascal" / "VOC2011" / "ImageSets" / "Segmentation" / "seg11valid.txt"
    split.write_text(split.read_text() + bad_id + "\n")
    layer = VOCSegDataLayer()
    layer.param_str = repr({**params, "split": "seg11valid"})
    with pytest.raises(BadSampleError, match=r"seg11valid.txt: entry 3 .* not a plain sample id"):
        layer.setup([], [Blob((1,)), Blob((1,))])


# ----- 3. two layers with one name keep their own weights -----

def test_layers_sharing_a_name_keep_their_own_weights_through_save_and_load(tmp_path):
    net = Net(parse_prototxt(TWO_SAME_NAMES), TEST)
    first, second = (layer.blobs[0].data.copy() for layer in net.layers[1:])
    assert first.shape == (4, 3) and second.shape == (2, 4)
    path = tmp_path / "dup.caffemodel"
    net.save(str(path))
    saved = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert [tuple(layer.blobs[0].shape.dim) for layer in saved.layer[1:]] == [(4, 3), (2, 4)]
    again = Net(parse_prototxt(TWO_SAME_NAMES), TEST, weights=str(path))
    np.testing.assert_array_equal(again.layers[1].blobs[0].data, first)
    np.testing.assert_array_equal(again.layers[2].blobs[0].data, second)


# ----- 14. a caffemodel cut at a layer boundary says what it lacks -----

def test_a_caffemodel_cut_at_a_layer_boundary_names_the_layers_it_did_not_cover(tmp_path):
    text = TWO_SAME_NAMES.replace('name: "ip" type: "InnerProduct" bottom: "a"', 'name: "ip2" type: "InnerProduct" bottom: "a"')
    net = Net(parse_prototxt(text), TEST)
    full = net.to_proto()
    first_layers = caffe_pb2.NetParameter()
    first_layers.name = full.name
    first_layers.layer.extend(full.layer[:2])
    cut = full.SerializeToString()[:first_layers.ByteSize()]
    assert cut == first_layers.SerializeToString()  # a valid file: exactly a layer boundary
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(cut)
    fresh = Net(parse_prototxt(text), TEST)
    with pytest.warns(UserWarning, match=r"cut.caffemodel holds no weights for 1 learnable layer\(s\).*: ip2; they keep"):
        fresh.copy_from(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full_path = tmp_path / "full.caffemodel"
        net.save(str(full_path))
        fresh.copy_from(str(full_path))  # a complete file: no warning
