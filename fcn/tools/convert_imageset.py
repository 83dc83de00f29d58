"""``convert_imageset``: Caffe's tool that stores a list of images as Datum records in an LMDB or LevelDB.

Same flags, arguments and records as Caffe's ``tools/convert_imageset.cpp``: images are read as Caffe
reads them (OpenCV, BGR, bilinear resize), raw records hold CxHxW bytes with the same fields set, encoded
ones the original file's bytes (when no resize or colour change is needed and its extension matches) or
OpenCV's re-encoding; keys are ``%08d_<path>`` with the line's index. It logs Caffe's glog lines (the tool
sets alsologtostderr). As in Caffe, an image that cannot be read is reported and skipped; where Caffe
aborts (a list file it cannot use, --check_size failing, an unknown encoding or backend) one line says why
and the exit status is 1. The database is built under a temporary name and renamed when done.

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence

import numpy as np

from fcn.gflags import Flags, define_glog_flags
from netspec import glog
from runner.datum import encoded_datum, raw_datum
from runner.db import COMMIT_EVERY, DatabaseWriter, backend_name
from runner.images import encode_image, read_image, read_image_list

USAGE = ("Convert a set of images to the leveldb/lmdb\nformat used as input for Caffe.\nUsage:\n"
         "    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n"
         "The ImageNet dataset for the training demo is at\n    http://www.image-net.org/download-images\n")


def flags() -> Flags:
    """Caffe's flags for this tool, with its defaults and help texts."""
    f = Flags(USAGE, source="tools/convert_imageset.cpp")
    f.define("gray", False, "When this option is on, treat images as grayscale ones")
    f.define("shuffle", False, "Randomly shuffle the order of images and their labels")
    f.define("backend", "lmdb", "The backend {lmdb, leveldb} for storing the result")
    f.define("resize_width", 0, "Width images are resized to")
    f.define("resize_height", 0, "Height images are resized to")
    f.define("check_size", False, "When this option is on, check that all the datum have the same size")
    f.define("encoded", False, "When this option is on, the encoded image will be save in datum")
    f.define("encode_type", "", "Optional: What type should we encode the image as ('png','jpg',...).")
    define_glog_flags(f)
    return f


def _extension(path: str) -> str:
    return path.rsplit(".", 1)[1].lower() if "." in os.path.basename(path) else ""


def _matches_encoding(path: str, encoding: str) -> bool:
    """Caffe's matchExt: the file's extension is the encoding (``jpeg`` counts as ``jpg``)."""
    ext, encoding = _extension(path), encoding.lower()
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def image_datum(image: np.ndarray, path: str, label: int, resized: bool, is_color: bool, encoding: str):
    """The rest of Caffe's ReadImageToDatum for an image read from ``path``: a raw Datum, or with
    ``encoding`` an encoded one: the file itself where it needs no change, else OpenCV's encoding."""
    if not encoding:
        return raw_datum(image, label)
    if (image.shape[2] == 3) == is_color and not resized and _matches_encoding(path, encoding):
        with open(path, "rb") as handle:
            return encoded_datum(handle.read(), label)
    return encoded_datum(encode_image(image, encoding), label)


def convert_imageset(root_folder: str, list_file: str, db_name: str, gray: bool = False, shuffle: bool = False,
                     backend: str = "lmdb", resize_height: int = 0, resize_width: int = 0, check_size: bool = False,
                     encoded: bool = False, encode_type: str = "") -> int:
    """Write the images of ``list_file`` (paths relative to ``root_folder``, which is prefixed as given)
    into a new database ``db_name``; returns the number of records written."""
    backend = backend_name(backend)
    lines: List[tuple] = [(path, label, number) for number, (path, label) in
                          enumerate(read_image_list(list_file), start=1)]
    if shuffle:
        glog.info("convert_imageset.cpp:86", "Shuffling data")
        np.random.default_rng().shuffle(lines)
    glog.info("convert_imageset.cpp:89", "A total of %d images.", len(lines))
    if encode_type and not encoded:
        glog.info("convert_imageset.cpp:92", "encode_type specified, assuming encoded=true.")
    height, width = max(0, resize_height), max(0, resize_width)
    count, first_size = 0, None
    with DatabaseWriter(db_name, backend) as db:
        for line_id, (path, label, number) in enumerate(lines):
            where = f"'{root_folder + path}' ('{list_file}' line {number})"
            encoding = encode_type
            if encoded and not encoding:
                encoding = _extension(path)
                if not encoding:
                    raise ValueError(f"cannot guess the encoding of {where} from its name; give --encode_type")
            try:
                image = read_image(root_folder + path, height, width, not gray)
            except ValueError as err:  # Caffe logs the failure and goes on with the next image
                glog.error("io.cpp:80", "%s ('%s' line %d); skipped", err, list_file, number)
                continue
            datum = image_datum(image, root_folder + path, label, bool(height and width), not gray, encoding)
            if check_size:
                first_size = image.size if first_size is None else first_size
                if image.size != first_size:
                    raise ValueError(f"image {where} has {image.size} values, the first image {first_size}; "
                                     f"--check_size wants one size (resize them with --resize_height/--resize_width)")
            key = f"{line_id:08d}_{path}".encode("utf-8", "surrogateescape")
            db.put(key, datum.SerializeToString())
            count += 1
            if count % COMMIT_EVERY == 0:
                glog.info("convert_imageset.cpp:147", "Processed %d files.", count)
        if count % COMMIT_EVERY:
            glog.info("convert_imageset.cpp:153", "Processed %d files.", count)
    return count


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script; ``argv`` defaults to the command line."""
    f = flags()
    values, args = f.parse_or_exit(sys.argv[1:] if argv is None else argv, "convert_imageset")
    if len(args) < 3:
        sys.stdout.write(f.usage("convert_imageset"))
        return 1
    with glog.google_logging(minloglevel=values.minloglevel, alsologtostderr=True):
        try:
            convert_imageset(args[0], args[1], args[2], gray=values.gray, shuffle=values.shuffle,
                             backend=values.backend, resize_height=values.resize_height,
                             resize_width=values.resize_width, check_size=values.check_size,
                             encoded=values.encoded, encode_type=values.encode_type)
        except (ValueError, OSError) as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
