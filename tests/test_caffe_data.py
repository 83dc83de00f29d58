"""Caffe's own data layers (Data, ImageData, MemoryData, WindowData) and their DataTransformer, against the
batches real Caffe produced from the same LMDB/LevelDB files, images and arrays (fixture section 10,
``data/``): deterministic cases bit for bit; random crops and mirrors (Caffe's RNG cannot be matched)
by membership in the set of outcomes the transformation allows, checked on Caffe's own outputs too.

Reading an LMDB creates ``lock.mdb`` and opening a LevelDB rewrites its files, so every test works on a
copy of the fixtures in ``tmp_path``, from the case folder as working directory (Caffe resolves
``source`` there).
"""
import json
import os
import shutil

import numpy as np
import pytest

import fcn.caffe as caffe
from fcn import caffe_io
from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.db import DatabaseReader, DatabaseWriter

DATA = os.path.join(os.path.dirname(__file__), "fixtures", "caffe_reference", "data")
with open(os.path.join(DATA, "index_ext.json")) as _f:
    CASES = sorted(name for name in json.load(_f) if name != "imageset")


def _meta(name):
    with open(os.path.join(DATA, name, "meta.json")) as f:
        return json.load(f)


RANDOM_CASES = [name for name in CASES if "train_outcomes" in _meta(name)]
EXACT_CASES = [name for name in CASES if name.startswith(("data_", "imagedata_")) and name not in RANDOM_CASES]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """``enter(case)``: a private copy of imageset/ and the case folder, with the case folder as cwd."""
    shutil.copytree(os.path.join(DATA, "imageset"), tmp_path / "imageset")

    def enter(name):
        shutil.copytree(os.path.join(DATA, name), tmp_path / name)
        monkeypatch.chdir(tmp_path / name)
        return tmp_path / name
    return enter


def _phase(meta):
    return caffe.TRAIN if meta.get("phase") == "TRAIN" else caffe.TEST


def _tops(name):
    with np.load(os.path.join(DATA, name, "tops_per_forward.npz")) as archive:
        return {key: archive[key] for key in archive.files}


def _net_with(prototxt_path, edit, phase=caffe.TEST):
    """The case's net with ``edit(layer_param)`` applied to its data layer."""
    net_param = parse_prototxt(open(prototxt_path).read(), caffe_pb2.NetParameter)
    edit(net_param.layer[0])
    return caffe.Net(net_param, phase)


# -- deterministic cases: equal to Caffe's batches exactly ---------------------------------------------

@pytest.mark.parametrize("name", EXACT_CASES)
def test_batches_equal_caffes(name, workdir):
    workdir(name)
    meta, want = _meta(name), _tops(name)
    net = caffe.Net("net.prototxt", _phase(meta))
    shapes = meta.get("top_shapes")
    if shapes:  # tops as Caffe sized them at construction
        assert net.blobs["data"].data.shape == tuple(shapes["data"])
        assert net.blobs["label"].data.shape == tuple(shapes["label"])
    for i in range(meta["forwards"]):
        net.forward()
        for top in ("data", "label"):
            np.testing.assert_array_equal(net.blobs[top].data, want[f"forward{i}/{top}"],
                                          err_msg=f"{name} forward {i} top {top}")
        np.testing.assert_array_equal(net.blobs["label"].data, meta["labels_per_forward"][i])


def test_imagedata_batch1_reshapes_the_top_per_image(workdir):
    workdir("imagedata_noresize_batch1")
    meta = _meta("imagedata_noresize_batch1")
    net = caffe.Net("net.prototxt", caffe.TEST)
    assert net.blobs["data"].data.shape == tuple(meta["top_shapes_per_forward"][0])
    for i, shape in enumerate(meta["top_shapes_per_forward"]):
        net.forward()
        assert net.blobs["data"].data.shape == tuple(shape), f"forward {i}"


def test_imagedata_mixed_sizes_in_one_batch_is_a_clear_error(workdir):
    # Caffe aborts: data_transformer.cpp:240] Check failed: height <= img_height (20 vs. 17)
    workdir("imagedata_noresize_batch1")
    net = _net_with("net.prototxt", lambda lp: setattr(lp.image_data_param, "batch_size", 3))
    with pytest.raises(ValueError, match=r"img1\.jpg.*line 2.*3x17x31.*3x20x24"):
        net.forward()


# -- random crops and mirrors: membership in the allowed outcomes -------------------------------------

def _outcomes(source, item, crop, mirror):
    """Every (h_off, w_off, mirror) whose crop (and flip) of ``source`` equals ``item``."""
    _, height, width = source.shape
    size = crop or height
    found = []
    for h in range(height - size + 1):
        for w in range(width - (crop or width) + 1):
            patch = source[:, h:h + size, w:w + (crop or width)]
            for flip in ((0, 1) if mirror else (0,)):
                if np.array_equal(patch[:, :, ::-1] if flip else patch, item):
                    found.append([h, w, flip])
    return found


@pytest.mark.parametrize("name", RANDOM_CASES)
def test_random_transforms_draw_from_caffes_outcomes(name, workdir):
    workdir(name)
    meta, caffe_tops = _meta(name), _tops(name)
    with np.load("sources.npz") as archive:
        sources = archive["data"]
    transform = meta["transform_param"]
    crop, mirror = transform.get("crop_size", 0), transform.get("mirror", False)
    # our enumeration of the outcomes reproduces the fixture's record of Caffe's own items
    for record in meta["train_outcomes"]:
        item = caffe_tops[f"forward{record['forward']}/data"][record["item"]]
        assert _outcomes(sources[record["source_image"]], item, crop, mirror) == record["matching_h_w_mirror"]
    caffe.set_random_seed(5)
    net = caffe.Net("net.prototxt", _phase(meta))
    seen = []
    for i, rows in enumerate(meta["expected_rows_per_forward"]):
        net.forward()
        np.testing.assert_array_equal(net.blobs["label"].data, meta["labels_per_forward"][i])
        for item, row in zip(net.blobs["data"].data, rows):
            matches = _outcomes(sources[row], item, crop, mirror)
            assert matches, f"{name} forward {i}: an item that no crop/mirror of image {row} gives"
            seen.append(tuple(matches[0]))
    if mirror:  # in TEST too (Caffe: do_mirror = mirror && Rand(2), no phase test)
        assert {flip for _, _, flip in seen} == {0, 1}
    if crop and _phase(meta) == caffe.TRAIN:
        assert len({(h, w) for h, w, _ in seen}) > 1


def test_random_transforms_follow_set_random_seed_and_not_prefetch(workdir):
    workdir("data_lmdb_raw_train_crop12_mirror")

    def batches(seed, prefetch=4):
        caffe.set_random_seed(seed)
        net = _net_with("net.prototxt", lambda lp: setattr(lp.data_param, "prefetch", prefetch), caffe.TRAIN)
        return [net.forward()["data"].copy() for _ in range(4)]

    first = batches(3)
    for again in (batches(3), batches(3, prefetch=0)):
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, batches(4)))


def test_test_phase_crop_is_the_centre(workdir):
    workdir("data_lmdb_raw_crop12")
    with np.load(os.path.join(DATA, "data_lmdb_raw_train_mirror", "sources.npz")) as archive:
        sources = archive["data"]
    net = caffe.Net("net.prototxt", caffe.TEST)
    net.forward()
    for item, source in zip(net.blobs["data"].data, sources[:3]):
        assert _outcomes(source, item, 12, False) == [[2, 4, 0]]  # ((16-12)//2, (20-12)//2)


def test_float_data_records_and_a_data_only_top(workdir, tmp_path):
    # Caffe's Transform reads float_data when data is empty: (x - mean_value) * scale in float32
    workdir("data_lmdb_raw_none")
    values = np.random.default_rng(0).standard_normal((2, 2, 3, 4)).astype(np.float32)
    with DatabaseWriter(str(tmp_path / "floats"), "lmdb") as db:
        for i, array in enumerate(values):
            datum = caffe_pb2.Datum(channels=2, height=3, width=4, label=i)
            datum.float_data.extend(array.ravel())
            db.put(b"%08d" % i, datum.SerializeToString())

    def edit(lp):
        lp.data_param.source, lp.data_param.batch_size = str(tmp_path / "floats"), 2
        lp.transform_param.mean_value.extend([0.25, -1.5])
        lp.transform_param.scale = 0.1
        del lp.top[1:]
    net = _net_with("net.prototxt", edit)
    assert list(net.blobs) == ["data"]
    net.forward()
    mean = np.array([0.25, -1.5], np.float32).reshape(2, 1, 1)
    np.testing.assert_array_equal(net.blobs["data"].data, (values - mean) * np.float32(0.1))


def test_imagedata_shuffle_serves_every_image_once_per_pass(workdir):
    workdir("imagedata_resize16x20_color")
    want = _tops("imagedata_resize16x20_color")
    images = {int(label): [] for label in range(5)}
    for i, rows in enumerate(_meta("imagedata_resize16x20_color")["expected_rows_per_forward"][:3]):
        for item, row in enumerate(rows[:8 - 3 * i]):
            images[int(want[f"forward{i}/label"][item])].append(want[f"forward{i}/data"][item])
    caffe.set_random_seed(2)
    net = _net_with("net.prototxt", lambda lp: (setattr(lp.image_data_param, "shuffle", True),
                                                setattr(lp.image_data_param, "batch_size", 8)))
    orders = []
    for _ in range(2):
        net.forward()
        order = []
        for item, label in zip(net.blobs["data"].data, net.blobs["label"].data):
            matches = [k for k, image in enumerate(images[int(label)]) if np.array_equal(item, image)]
            assert len(matches) == 1, "an item that is not the image its label names"
            order.append((int(label), matches[0]))
        assert sorted(order) == sorted((label, k) for label in images for k in range(len(images[label])))
        orders.append(order)
    list_order = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (0, 1), (1, 1), (2, 1)]
    assert orders[0] != list_order and orders[1] != orders[0]  # shuffled, and shuffled again after a pass


# -- MemoryData and net.set_input_arrays ---------------------------------------------------------------

def _memory_net(workdir):
    workdir("memorydata_batch2")
    with np.load("inputs.npz") as archive:
        inputs = {key: archive[key] for key in archive.files}
    return caffe.Net("net.prototxt", caffe.TEST), inputs


def test_memorydata_serves_the_arrays_untransformed_without_copying(workdir):
    net, inputs = _memory_net(workdir)
    observed, want = _meta("memorydata_batch2")["observed"], _tops("memorydata_batch2")
    shapes = observed["top_shapes_after_construction"]
    assert net.blobs["data"].data.shape == tuple(shapes["data"])
    assert net.blobs["label"].data.shape == tuple(shapes["label"])
    data, labels = inputs["data"].copy(), inputs["labels"].copy()
    net.set_input_arrays(data, labels)
    for i in range(3):
        net.forward()
        for top in ("data", "label"):  # transform_param scale 0.5 ignored, as in Caffe
            np.testing.assert_array_equal(net.blobs[top].data, want[f"forward{i}/{top}"])
    after = observed["top_shapes_after_forward"]
    assert net.blobs["label"].data.shape == tuple(after["label"])
    data[...] = 0  # not copied: the next forward sees the change
    net.forward()
    assert not net.blobs["data"].data.any()


def test_memorydata_errors_are_pycaffes(workdir):
    net, inputs = _memory_net(workdir)
    errors = _meta("memorydata_batch2")["observed"]["set_input_arrays_errors"]
    data, labels = inputs["data"], inputs["labels"]
    five = np.concatenate([data, data[:1]])
    attempts = {
        "n5_not_multiple_of_batch2": (five, np.arange(5, dtype=np.float32)),
        "float64_data": (data.astype(np.float64), labels),
        "data4_labels2": (data, labels[:2]),
        "wrong_height": (np.zeros((4, 3, 5, 5), np.float32), labels),
    }
    for case, (d, l) in attempts.items():
        with pytest.raises(RuntimeError) as err:
            net.set_input_arrays(d, l)
        assert f"RuntimeError: {err.value}" == errors[case]
    with pytest.raises(ValueError, match="set_input_arrays"):
        net.forward()  # Caffe aborts: MemoryDataLayer needs to be initialized by calling Reset


def test_set_input_arrays_needs_a_memorydata_first_layer(workdir):
    workdir("data_lmdb_raw_none")
    net = caffe.Net("net.prototxt", caffe.TEST)
    with pytest.raises(RuntimeError, match="^set_input_arrays may only be called if the first layer is a "
                                           "MemoryDataLayer$"):
        net.set_input_arrays(np.zeros((3, 3, 16, 20), np.float32), np.zeros(3, np.float32))


# -- caffe.io on Caffe's files ----------------------------------------------------------------------------

def test_caffe_io_reads_caffes_mean_and_datums(workdir):
    folder = workdir("data_lmdb_raw_none")
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(open(folder.parent / "imageset" / "mean.binaryproto", "rb").read())
    mean = caffe_io.blobproto_to_array(blob)
    assert mean.dtype == np.float64  # as pycaffe: np.array(blob.data)
    with np.load(folder.parent / "imageset" / "mean.npz") as archive:
        np.testing.assert_array_equal(mean, archive["mean"])
    back = caffe_io.blobproto_to_array(caffe_io.array_to_blobproto(mean))
    np.testing.assert_array_equal(back, mean)
    want = _tops("data_lmdb_raw_none")["forward0/data"]
    records = list(DatabaseReader(str(folder.parent / "imageset" / "lmdb_raw_16x20"), "lmdb").records())[:3]
    for (key, value), pixels in zip(records, want):
        datum = caffe_pb2.Datum.FromString(value)
        array = caffe_io.datum_to_array(datum)
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, pixels)
        made = caffe_io.array_to_datum(array, datum.label)
        assert (made.channels, made.height, made.width, made.data, made.label) == \
               (datum.channels, datum.height, datum.width, datum.data, datum.label)


# -- bad input: one clear error naming the file and the record -------------------------------------------

def _data_net(edit):
    return _net_with("net.prototxt", edit)


def test_data_layer_bad_input(workdir, tmp_path):
    workdir("data_lmdb_raw_none")
    with pytest.raises(ValueError, match=r"layer 'data' \(Data\): cannot open LMDB 'nowhere': no such directory"):
        _data_net(lambda lp: setattr(lp.data_param, "source", "nowhere"))
    with pytest.raises(ValueError, match="cannot open LevelDB.*the folder holds an LMDB"):
        _data_net(lambda lp: lp.data_param.ClearField("backend"))  # Caffe's default backend is LEVELDB
    with pytest.raises(ValueError, match="batch_size must be positive"):
        _data_net(lambda lp: lp.data_param.ClearField("batch_size"))
    with pytest.raises(ValueError, match=r"mean file '\.\./imageset/mean\.binaryproto' is 3x16x20, record "
                                         r"'00000000_img0\.png' of LMDB '\.\./imageset/lmdb_gray_16x20' is 1x16x20"):
        _data_net(lambda lp: (setattr(lp.data_param, "source", "../imageset/lmdb_gray_16x20"),
                              setattr(lp.transform_param, "mean_file", "../imageset/mean.binaryproto"))).forward()
    with pytest.raises(ValueError, match="crop_size 24 is larger than record '00000000_img0.png'"):
        _data_net(lambda lp: setattr(lp.transform_param, "crop_size", 24))
    with pytest.raises(ValueError, match="mean file 'no.binaryproto'"):
        _data_net(lambda lp: setattr(lp.transform_param, "mean_file", "no.binaryproto"))
    with DatabaseWriter(str(tmp_path / "bad_db"), "lmdb") as db:
        db.put(b"00000000_ok", caffe_pb2.Datum(channels=1, height=1, width=1, data=b"\x07").SerializeToString())
        db.put(b"00000001_garbage", b"\xff\xff\xff")
        db.put(b"00000002_png", caffe_pb2.Datum(data=b"not a png", encoded=True).SerializeToString())
    net = _data_net(lambda lp: (setattr(lp.data_param, "source", str(tmp_path / "bad_db")),
                                setattr(lp.data_param, "batch_size", 1)))
    net.forward()
    with pytest.raises(ValueError, match=r"record '00000001_garbage' of LMDB .*bad_db': not a Caffe Datum"):
        net.forward()
    with pytest.raises(ValueError, match=r"record '00000002_png'.*9 bytes that OpenCV cannot decode"):
        net.forward()
    with DatabaseWriter(str(tmp_path / "empty_db"), "lmdb"):
        pass
    with pytest.raises(ValueError, match="empty_db' holds no records"):
        _data_net(lambda lp: setattr(lp.data_param, "source", str(tmp_path / "empty_db")))


def test_image_data_bad_input(workdir, tmp_path):
    workdir("imagedata_resize16x20_color")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"list file '.*empty\.txt' lists no images"):
        _net_with("net.prototxt", lambda lp: setattr(lp.image_data_param, "source", str(tmp_path / "empty.txt")))
    (tmp_path / "list.txt").write_text("img0.png 0\nimg1.jpg one\n")
    with pytest.raises(ValueError, match=r"list\.txt' line 2: expected '<image path> <integer label>'"):
        _net_with("net.prototxt", lambda lp: setattr(lp.image_data_param, "source", str(tmp_path / "list.txt")))
    (tmp_path / "imageset" / "images" / "broken.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "list.txt").write_text("img0.png 0\nbroken.png 1\n")
    net = _net_with("net.prototxt", lambda lp: setattr(lp.image_data_param, "source", str(tmp_path / "list.txt")))
    with pytest.raises(ValueError, match=r"could not read image '.*/imageset/images/broken\.png': not an image "
                                         r"OpenCV can decode \('.*list\.txt' line 2\)"):
        net.forward()
    with pytest.raises(ValueError, match="set new_height and new_width together"):
        _net_with("net.prototxt", lambda lp: setattr(lp.image_data_param, "new_width", 0))


# -- WindowData (no Caffe fixture: checked against its definition on real images) ----------------------

WINDOWS = """# 0
{image}
3 20 24
3
3 0.9 2 3 13 15
0 0.1 0 0 23 19
5 0.3 1 1 5 5
"""


def _window_net(tmp_path, transform="crop_size: 8", extra=""):
    (tmp_path / "windows.txt").write_text(WINDOWS.format(image="img0.png"))
    prototxt = tmp_path / "window.prototxt"
    prototxt.write_text(f'layer {{ name: "data" type: "WindowData" top: "data" top: "label" '
                        f'transform_param {{ {transform} }} window_data_param {{ source: "{tmp_path}/windows.txt" '
                        f'root_folder: "{tmp_path}/imageset/images/" batch_size: 4 fg_fraction: 0.5 '
                        f'fg_threshold: 0.8 bg_threshold: 0.2 {extra} }} }}')
    caffe.set_random_seed(1)
    return caffe.Net(str(prototxt), caffe.TRAIN)


def test_window_data_warps_background_then_foreground_windows(workdir, tmp_path):
    import cv2
    workdir("data_lmdb_raw_none")
    image = cv2.imread(str(tmp_path / "imageset" / "images" / "img0.png"))
    fg = cv2.resize(image[3:16, 2:14], (8, 8), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    bg = cv2.resize(image, (8, 8), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    net = _window_net(tmp_path, "crop_size: 8 mean_value: 100", "scale: 0.5")
    assert net.blobs["data"].data.shape == (4, 3, 8, 8)
    net.forward()
    # int(4 * 0.5) = 2 foreground windows after 2 background ones; the 0.3-overlap window is neither
    # (overlap >= fg_threshold 0.8: foreground, < bg_threshold 0.2: background)
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 0, 3, 3])
    expected = [(bg - np.float32(100)) * np.float32(0.5)] * 2 + [(fg - np.float32(100)) * np.float32(0.5)] * 2
    np.testing.assert_array_equal(net.blobs["data"].data, np.stack(expected))
    mirrored = _window_net(tmp_path, "crop_size: 8 mirror: true")
    flips = set()
    for _ in range(4):
        mirrored.forward()
        for item, label in zip(mirrored.blobs["data"].data, mirrored.blobs["label"].data):
            window = fg if label else bg
            assert np.array_equal(item, window) or np.array_equal(item, window[:, :, ::-1])
            flips.add(np.array_equal(item, window))
    assert flips == {True, False}


def test_window_data_context_pad_leaves_zero_padding_outside_the_image(workdir, tmp_path):
    workdir("data_lmdb_raw_none")
    net = _window_net(tmp_path, "crop_size: 8", "context_pad: 2")
    net.forward()
    background = net.blobs["data"].data[0]  # the whole image, widened by 2/(8-4): a border of zeros
    assert not background[:, :, :2].any() and not background[:, :2, :].any()
    assert background[:, 2:6, 2:6].all()


def test_window_data_bad_input(workdir, tmp_path):
    workdir("data_lmdb_raw_none")
    with pytest.raises(ValueError, match=r"transform_param\.crop_size must be positive"):
        _window_net(tmp_path, "mirror: false")
    (tmp_path / "windows.txt").write_text("# 0\nimg0.png\n3 20 24\n1\n0 0.9 2 3 13 15\n")
    prototxt = tmp_path / "w.prototxt"
    prototxt.write_text(f'layer {{ name: "data" type: "WindowData" top: "data" top: "label" transform_param '
                        f'{{ crop_size: 8 }} window_data_param {{ source: "{tmp_path}/windows.txt" batch_size: 2 }} }}')
    with pytest.raises(ValueError, match=r"image 0 \('.*/img0\.png'\): foreground window \(2, 3, 13, 15\) has class 0"):
        caffe.Net(str(prototxt), caffe.TRAIN)


# -- the runner: data layers stay outside compiled stretches ---------------------------------------------

def test_compiled_net_reads_a_new_batch_every_forward(workdir):
    import torch
    workdir("data_lmdb_raw_none")
    net_param = parse_prototxt(open("net.prototxt").read(), caffe_pb2.NetParameter)
    net_param.layer.add().CopyFrom(parse_prototxt(
        'name: "scaled" type: "Power" bottom: "data" top: "scaled" power_param { scale: 2 }',
        caffe_pb2.LayerParameter))
    net = caffe.Net(net_param, caffe.TEST)
    net.set_speed(compile="eager")
    want = _tops("data_lmdb_raw_none")
    with torch.no_grad():
        for i in range(2):
            net.forward()
            np.testing.assert_array_equal(net.blobs["scaled"].data, 2 * want[f"forward{i}/data"])
