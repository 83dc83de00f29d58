"""Issue #14's findings about files and input, each reproduced on real files first: writers that never
overwrite what they did not write, paths that stay inside their roots, weights never lost or silently
missing, and limits checked before anything is allocated."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

from data_layers.errors import BadSampleError
from data_layers.synthetic import MARKER, write_dataset
from data_layers.voc import VOCSegDataLayer
from netspec import caffe_pb2
from netspec.caffemodel import load_caffemodel
from netspec.limits import ResourceLimitError
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


# ----- 8, 9, 15, 16. limits before allocation, errors that say what was expected -----

def _caffemodel(layers: int, blob_dims=None) -> bytes:
    net = caffe_pb2.NetParameter(name="many")
    for index in range(layers):
        layer = net.layer.add(name=f"l{index}", type="ReLU")
        if blob_dims is not None:
            blob = layer.blobs.add()
            blob.shape.dim.extend(blob_dims)
    return net.SerializeToString()


def test_a_gzip_bomb_stops_at_the_decompression_limit(tmp_path, monkeypatch):
    import gzip
    path = tmp_path / "bomb.caffemodel"
    path.write_bytes(gzip.compress(b"\0" * (8 << 20)))
    monkeypatch.setenv("FCN_CAFFE_MAX_DECOMPRESSED_BYTES", str(1 << 20))
    with pytest.raises(ResourceLimitError, match=r"bomb.caffemodel: gunzipped: .* more than the limit of 1,048,576 "
                                                 r"\(set FCN_CAFFE_MAX_DECOMPRESSED_BYTES"):
        load_caffemodel(path)


def test_a_caffemodel_of_too_many_layers_stops_at_the_entry_limit(tmp_path, monkeypatch):
    path = tmp_path / "many.caffemodel"
    path.write_bytes(_caffemodel(300))
    monkeypatch.setenv("FCN_CAFFE_MAX_LAYERS", "200")
    with pytest.raises(ResourceLimitError, match=r"many.caffemodel: NetParameter entries \(layer\): 201 layers, more than"):
        load_caffemodel(path)
    monkeypatch.delenv("FCN_CAFFE_MAX_LAYERS")
    assert len(load_caffemodel(path)[0].layer) == 300


@pytest.mark.parametrize("dims", [(-1, -1), (4611686018427387904, 0), (-3, 2)])
def test_negative_or_huge_blob_dimensions_are_named(tmp_path, dims):
    path = tmp_path / "dims.caffemodel"
    path.write_bytes(_caffemodel(1, dims))
    with pytest.raises(ValueError, match=r"dims.caffemodel: layer 'l0' blob 0 declares shape .*every dimension must be"):
        load_caffemodel(path)


def test_parameters_beyond_the_limit_are_refused_before_allocation(monkeypatch):
    """Every blob under Caffe's INT_MAX count, the sum over the memory limit (lowered here to 1 MB)."""
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1000 } } }\n'
            + "".join(f'layer {{ name: "ip{i}" type: "InnerProduct" bottom: "data" top: "out{i}" '
                      f'inner_product_param {{ num_output: 100 bias_term: false }} }}\n' for i in range(3)))
    monkeypatch.setenv("FCN_CAFFE_MAX_PARAM_BYTES", "1000000")
    with pytest.raises(ResourceLimitError, match=r"layer 'ip2' \(InnerProduct\): the net's parameters up to its blob 0 "
                                                 r"of shape \(100, 1000\) take: 1,200,000 bytes, more than the limit "
                                                 r"of 1,000,000 \(set FCN_CAFFE_MAX_PARAM_BYTES"):
        Net(parse_prototxt(text), TEST)
    monkeypatch.delenv("FCN_CAFFE_MAX_PARAM_BYTES")
    assert len(Net(parse_prototxt(text), TEST).params) == 3


def test_an_unknown_type_name_is_not_echoed_whole():
    name = "X" * 1_000_000
    text = f'layer {{ name: "odd" type: "{name}" }}'
    with pytest.raises(ValueError) as error:
        Net(parse_prototxt(text), TEST)
    assert "unsupported layer type 'XXXX" in str(error.value) and "(1,000,000 characters)" in str(error.value)
    assert len(str(error.value)) < 5000
