"""``compute_image_mean``: Caffe's tool that averages the images of an LMDB/LevelDB into a mean file.

Same flags, arguments, arithmetic and output as Caffe's ``tools/compute_image_mean.cpp``: encoded records
are decoded natively, the sum is accumulated in float32 record by record and divided by the count in
float32, and the result is a BlobProto with legacy ``num/channels/height/width`` (a ``.binaryproto`` that
``transform_param { mean_file }`` reads), written atomically; Caffe's glog lines report it, the per-channel
means last. Where Caffe aborts (no database, no records, records of different sizes, a record that is no
Datum or no image) one line names the database and record, and the exit status is 1.

    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import numpy as np

from fcn.gflags import Flags, define_glog_flags
from netspec import caffe_pb2, glog
from netspec.atomic import write_atomically
from runner.datum import datum_pixels, parse_datum
from runner.db import DatabaseReader

USAGE = "Compute the mean_image of a set of images given by a leveldb/lmdb\nUsage:\n" \
        "    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n"
PROGRESS_EVERY = 10000


def flags() -> Flags:
    f = Flags(USAGE, source="tools/compute_image_mean.cpp")
    f.define("backend", "lmdb", "The backend {leveldb, lmdb} containing the images")
    define_glog_flags(f)
    return f


def compute_image_mean(db_path: str, backend: str = "lmdb") -> "caffe_pb2.BlobProto":
    """The mean of every record of the database as Caffe's BlobProto (num 1, CxHxW of the first record)."""
    reader = DatabaseReader(db_path, backend)
    try:
        total, count, shape = None, 0, None
        glog.info("compute_image_mean.cpp:70", "Starting iteration")
        for key, value in reader.records():
            where = f"record '{key.decode('utf-8', 'replace')}' of {reader.title} '{db_path}'"
            datum = parse_datum(value, where)
            if count == 0 and datum.encoded:
                glog.info("compute_image_mean.cpp:57", "Decoding Datum")
            pixels = datum_pixels(datum, where)
            if total is None:
                shape, total = pixels.shape, np.zeros(pixels.size, dtype=np.float32)
            if pixels.size != total.size:
                raise ValueError(f"{where}: {pixels.size} values ({'x'.join(map(str, pixels.shape))}), the first "
                                 f"record has {total.size} ({'x'.join(map(str, shape))}); all images must have "
                                 f"one size")
            total += pixels.reshape(-1).astype(np.float32)
            count += 1
            if count % PROGRESS_EVERY == 0:
                glog.info("compute_image_mean.cpp:95", "Processed %d files.", count)
        if total is None:
            raise ValueError(f"{reader.title} database '{db_path}' holds no records")
    finally:
        reader.close()
    if count % PROGRESS_EVERY:
        glog.info("compute_image_mean.cpp:101", "Processed %d files.", count)
    mean = caffe_pb2.BlobProto(num=1, channels=shape[0], height=shape[1], width=shape[2])
    mean.data.extend(total / np.float32(count))
    return mean


def log_channel_means(mean: "caffe_pb2.BlobProto") -> None:
    """Caffe's closing lines: the number of channels and each channel's mean (float32 sums, as Caffe)."""
    values = np.asarray(mean.data, dtype=np.float32).reshape(mean.channels, -1)
    glog.info("compute_image_mean.cpp:114", "Number of channels: %d", mean.channels)
    for channel, row in enumerate(values):
        channel_sum = np.cumsum(row, dtype=np.float32)[-1]  # sequential, as Caffe's loop adds
        glog.info("compute_image_mean.cpp:119", "mean_value channel [%d]: %g", channel,
                  glog.real(channel_sum / np.float32(row.size)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script; ``argv`` defaults to the command line."""
    f = flags()
    values, args = f.parse_or_exit(sys.argv[1:] if argv is None else argv, "compute_image_mean")
    if not 1 <= len(args) <= 2:
        sys.stdout.write(f.usage("compute_image_mean"))
        return 1
    with glog.google_logging(minloglevel=values.minloglevel, alsologtostderr=True):
        try:
            mean = compute_image_mean(args[0], values.backend)
            if len(args) == 2:
                glog.info("compute_image_mean.cpp:108", "Write to %s", args[1])
                write_atomically(args[1], mean.SerializeToString())
        except (ValueError, OSError) as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return 1
        log_channel_means(mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
