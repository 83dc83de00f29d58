"""`fcn.caffe_io` must give pycaffe users the arrays and images that `caffe.io` gave them.

Blob and datum conversions are checked by round trips through serialised bytes (the
way mean files and LMDB records travel), image loading through real PNG/JPEG files,
and the Transformer against a step-by-step hand computation of pycaffe's order.
"""
import numpy as np
import pytest
from PIL import Image

from fcn import caffe_io
from netspec import caffe_pb2


def _reparse(message):
    copy = type(message)()
    copy.ParseFromString(message.SerializeToString())
    return copy


# -- blob protos ------------------------------------------------------------------------

def test_blobproto_round_trip_keeps_shape_data_and_diff():
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    diff = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    blob = _reparse(caffe_io.array_to_blobproto(arr, diff))
    assert list(blob.shape.dim) == [2, 3, 4, 5]
    assert not blob.HasField("num")
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob), arr)
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob, return_diff=True), diff)


def test_blobproto_any_rank():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = caffe_io.blobproto_to_array(_reparse(caffe_io.array_to_blobproto(arr)))
    assert out.shape == (2, 3) and out.dtype == np.float64  # pycaffe: np.array(blob.data)
    np.testing.assert_array_equal(out, arr)


def test_blobproto_legacy_dims_win_over_shape():
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    blob.shape.dim.extend([12])  # Caffe reads the legacy fields whenever one is set
    blob.data.extend(range(12))
    blob.diff.extend(range(12, 24))
    blob = _reparse(blob)
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob),
                                  np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2))
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob, return_diff=True),
                                  np.arange(12, 24, dtype=np.float32).reshape(1, 3, 2, 2))


def test_blobproto_double_data_and_double_diff():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([3])
    blob.double_data.extend([0.1, 0.2, 1e-300])
    blob.double_diff.extend([1.0, 2.0, 3.0])
    data = caffe_io.blobproto_to_array(_reparse(blob))
    assert data.dtype == np.float64
    np.testing.assert_array_equal(data, [0.1, 0.2, 1e-300])
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob, return_diff=True), [1, 2, 3])


def test_blobproto_size_mismatch_names_both_counts():
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2)
    blob.data.extend([1.0, 2.0])
    with pytest.raises(ValueError, match=r"2 values.*\(1, 1, 2, 2\).*4"):
        caffe_io.blobproto_to_array(blob)


def test_array_to_blobproto_rejects_misshapen_diff():
    with pytest.raises(ValueError, match="diff"):
        caffe_io.array_to_blobproto(np.zeros((2, 2)), np.zeros(4))


def test_blobprotovector_round_trip(tmp_path):
    arrays = [np.full((1, 3, 2, 2), 7, np.float32), np.arange(5, dtype=np.float32)]
    path = tmp_path / "means.binaryproto"
    path.write_bytes(caffe_io.arraylist_to_blobprotovector_str(arrays))
    back = caffe_io.blobprotovector_str_to_arraylist(path.read_bytes())
    assert len(back) == 2
    for got, want in zip(back, arrays):
        np.testing.assert_array_equal(got, want)


# -- datums -----------------------------------------------------------------------------

def test_datum_round_trip_uint8_goes_to_bytes():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = _reparse(caffe_io.array_to_datum(arr, label=5))
    assert datum.data == arr.tobytes() and len(datum.float_data) == 0
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 5)
    back = caffe_io.datum_to_array(datum)
    assert back.dtype == np.uint8 and back.flags.writeable
    np.testing.assert_array_equal(back, arr)


def test_datum_round_trip_float_goes_to_float_data():
    arr = np.linspace(-1, 1, 12).reshape(3, 2, 2)
    datum = _reparse(caffe_io.array_to_datum(arr))
    assert datum.data == b"" and not datum.HasField("label")
    np.testing.assert_allclose(caffe_io.datum_to_array(datum), arr, rtol=1e-7)


def test_datum_errors():
    with pytest.raises(ValueError, match="3-D"):
        caffe_io.array_to_datum(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="encoded"):
        encoded = caffe_pb2.Datum(channels=3, height=1, width=1, data=b"\xff\xd8", encoded=True)
        caffe_io.datum_to_array(encoded)


# -- image files ------------------------------------------------------------------------

def test_load_png_rgb_and_rgba(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 9, np.uint8)])).save(tmp_path / "rgba.png")
    for name in ("rgb.png", "rgba.png"):
        img = caffe_io.load_image(str(tmp_path / name))
        assert img.dtype == np.float32 and img.shape == (5, 7, 3)
        np.testing.assert_allclose(img, rgb / 255.0, atol=1e-7)


def test_load_grey_png_tiles_for_color_and_keeps_one_channel(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "grey.png")
    color = caffe_io.load_image(str(tmp_path / "grey.png"))
    assert color.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_allclose(color[:, :, c], grey / 255.0, atol=1e-7)
    single = caffe_io.load_image(str(tmp_path / "grey.png"), color=False)
    assert single.shape == (3, 4, 1)
    np.testing.assert_allclose(single[:, :, 0], grey / 255.0, atol=1e-7)


def test_load_16_bit_png_uses_full_range(tmp_path):
    grey = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    img = caffe_io.load_image(str(tmp_path / "deep.png"), color=False)
    np.testing.assert_allclose(img[:, :, 0], grey / 65535.0, atol=1e-7)


def test_load_color_jpeg_as_grey_uses_luminance(tmp_path):
    flat = np.zeros((8, 8, 3), np.uint8)
    flat[...] = (200, 100, 50)
    Image.fromarray(flat).save(tmp_path / "flat.jpg", quality=100)
    rgb = caffe_io.load_image(str(tmp_path / "flat.jpg"))
    np.testing.assert_allclose(rgb, flat / 255.0, atol=3 / 255)  # JPEG is lossy
    grey = caffe_io.load_image(str(tmp_path / "flat.jpg"), color=False)
    assert grey.shape == (8, 8, 1)
    np.testing.assert_allclose(grey[:, :, 0], rgb @ np.array([0.2125, 0.7154, 0.0721]), atol=1e-6)


# -- resizing and crops -----------------------------------------------------------------

def test_resize_keeps_range_channels_and_dtype():
    im = np.random.default_rng(2).uniform(10, 250, (6, 8, 3))
    out = caffe_io.resize_image(im, (9, 5))
    assert out.shape == (9, 5, 3) and out.dtype == np.float32
    assert out.min() >= im.min() - 1e-4 and out.max() <= im.max() + 1e-4
    const = caffe_io.resize_image(np.full((4, 4, 1), 3.5), (2, 3))
    assert const.shape == (2, 3, 1) and np.all(const == 3.5)
    many = caffe_io.resize_image(np.ones((4, 4, 5)), (8, 2))
    assert many.shape == (8, 2, 5)


def test_resize_upsamples_on_pixel_areas():
    # Doubling [lo, hi] samples at -0.25, 0.25, 0.75, 1.25: the outer samples blend with
    # the value outside the image, which is the image's minimum after normalisation.
    im = np.array([[[2.0], [6.0]]])
    out = caffe_io.resize_image(im, (1, 4))[0, :, 0]
    np.testing.assert_allclose(out, [2.0, 3.0, 5.0, 5.0])
    same = np.random.default_rng(3).uniform(size=(4, 5, 3))
    np.testing.assert_allclose(caffe_io.resize_image(same, (4, 5)), same, atol=1e-6)


def test_oversample_crop_positions_and_mirrors():
    h, w, ch, cw = 6, 8, 3, 4
    pos = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=-1)  # (row, col)
    images = [pos.astype(np.float32), pos.astype(np.float32) + 100]
    crops = caffe_io.oversample(images, (ch, cw))
    assert crops.shape == (20, ch, cw, 2) and crops.dtype == np.float32
    starts = [(0, 0), (0, 4), (3, 0), (3, 4), (1, 2)]  # corners, then centre (3-1.5, 4-2) truncated
    for n in range(2):
        for k, (top, left) in enumerate(starts):
            crop = crops[10 * n + k]
            assert tuple(crop[0, 0]) == (top + 100 * n, left + 100 * n)
            np.testing.assert_array_equal(crops[10 * n + 5 + k], crop[:, ::-1])
    with pytest.raises(ValueError, match="exceed"):
        caffe_io.oversample(images, (7, 1))


# -- Transformer ------------------------------------------------------------------------

def _caffenet_transformer(mean):
    t = caffe_io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_matches_hand_computation_in_pycaffe_order():
    image = np.random.default_rng(4).uniform(size=(4, 5, 3)).astype(np.float32)
    mean = np.array([104.0, 117.0, 123.0])
    before = image.copy()
    out = _caffenet_transformer(mean).preprocess("data", image)
    # transpose HxWxC -> CxHxW, RGB -> BGR, *255, minus the (BGR) mean, *0.5
    expected = (image.transpose(2, 0, 1)[[2, 1, 0]] * 255.0 - mean[:, None, None]) * 0.5
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(image, before)  # the caller's image is not modified


def test_preprocess_resizes_before_everything_else():
    image = np.random.default_rng(5).uniform(size=(8, 10, 3))
    t = _caffenet_transformer(np.zeros(3))
    resized = caffe_io.resize_image(image.astype(np.float32), (4, 5))
    expected = resized.transpose(2, 0, 1)[[2, 1, 0]] * 255.0 * 0.5
    np.testing.assert_allclose(t.preprocess("data", image), expected, rtol=1e-5, atol=1e-4)


def test_preprocess_deprocess_round_trip_with_mean_image():
    rng = np.random.default_rng(6)
    mean_image = rng.uniform(90, 130, (3, 4, 5))
    image = rng.uniform(size=(4, 5, 3)).astype(np.float32)
    t = _caffenet_transformer(mean_image)
    blob = t.preprocess("data", image)[np.newaxis]  # as in net.blobs['data'].data
    np.testing.assert_allclose(t.deprocess("data", blob), image, atol=1e-5)


def test_transformer_checks_name_the_input():
    t = caffe_io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(ValueError, match="'label' is not one of the net inputs"):
        t.set_raw_scale("label", 255)
    with pytest.raises(ValueError, match="Transpose order.*'data'"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="Channel swap.*'data' has 3"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels incompatible with input 'data'"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError, match=r"Mean shape incompatible.*'data' expects \(3, 4, 5\)"):
        t.set_mean("data", np.zeros((3, 256, 256)))
    with pytest.raises(ValueError, match="Mean shape invalid for input 'data'"):
        t.set_mean("data", np.zeros((1, 3, 4, 5)))


def test_set_mean_accepts_a_two_dimensional_mean_for_one_channel():
    t = caffe_io.Transformer({"gray": (1, 1, 2, 3)})
    t.set_transpose("gray", (2, 0, 1))
    t.set_mean("gray", np.full((2, 3), 0.25))
    out = t.preprocess("gray", np.ones((2, 3, 1)))
    np.testing.assert_allclose(out, np.full((1, 2, 3), 0.75))
