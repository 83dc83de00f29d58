"""The ``fcn`` command line: argument parsing only; the work happens in the packages.

Console: the commands keep a console for people (progress bars, scores, reports) and start glog as
Caffe's tools do but without their ``alsologtostderr``: Caffe's INFO lines (net construction, the
solver's display lines) stay off the console unless asked for with ``GLOG_logtostderr=1`` (or
``GLOG_alsologtostderr=1``); then ``fcn train`` prints them as ``caffe train`` would, in place of its
progress bar, so that stderr is a log parse_log.py reads. Errors always show (``GLOG_stderrthreshold``,
default 2). ``fcn pycaffe`` runs a pycaffe script and leaves glog as pycaffe has it (every line on stderr).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import List, Optional


def _use_gpu(index: Optional[int]) -> None:
    """``--gpu I``: Caffe's set_device + set_mode_gpu (CPU stays when the option is absent)."""
    if index is not None:
        from runner.device import set_device, set_mode_gpu
        set_device(index)
        set_mode_gpu()


def _print_report(run, out: str) -> int:
    """Run a report-writing pipeline (demo, experiments) into ``out`` and show its REPORT.md."""
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = run(out)
    with open(report) as handle:
        print(handle.read())
    print(f"report: {report}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fcn.demo import TINY_BUDGET, Budget, infer_command, run_demo, run_seeds
    budget = TINY_BUDGET if args.budget == "tiny" else Budget()
    if args.seeds > 1:
        return _print_report(lambda out: run_seeds(out, range(args.seeds), budget), args.out)
    status = _print_report(lambda out: run_demo(out, budget), args.out)
    print(f"label pictures with the trained FCN-8s:\n    {infer_command(args.out)}")
    return status


def _experiments(args: argparse.Namespace) -> int:
    from fcn.experiments import run_all
    return _print_report(run_all, args.out)


def _pycaffe(args: argparse.Namespace) -> int:
    from fcn.pycaffe_runner import run_pycaffe_script
    run_pycaffe_script(args.script, args.args)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from data_layers.synthetic import write_dataset
    height, width = _parse_size(args.size)
    try:
        keys = write_dataset(args.kind, args.out, n=args.n, size=(height, width), seed=args.seed, force=args.force)
    except FileExistsError as err:
        print(f"fcn synth: {err}", file=sys.stderr)
        return 1
    for key, folder in keys.items():
        print(f"{key}: {folder}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import os

    from solvers.relocate import relocate_solver
    from solvers.training import NonFiniteLoss, TrainConfig, summary, train
    _use_gpu(args.gpu)
    solver = os.path.join(args.model_dir, "solver.prototxt")
    if not os.path.isfile(solver):
        raise FileNotFoundError(f"no solver.prototxt in {args.model_dir}")
    out = args.out or os.path.join(args.model_dir, "train")
    solver = relocate_solver(solver, out, args.data)
    heads = [_parse_head(text) + (False,) for text in args.score or ()]
    for path in args.weights or ():
        if not os.path.isfile(path):
            from models.solve_common import imagenet
            raise FileNotFoundError(f"--weights {path}: no such file. An FCN starts from a classifier turned "
                                    f"into its body by net surgery; for VGG16: {imagenet('vgg16').how_to_get}")
    from netspec import glog
    try:
        result = train(TrainConfig(solver, weights=args.weights or (), restore=args.restore, iters=args.iters,
                                   score_every=args.score_every, out_dir=out, heads=heads or None,
                                   progress=not glog.info_on_stderr()))
    except NonFiniteLoss as err:  # the run diverged: a verdict to read, not a crash to debug
        print(f"fcn train: error: {err}", file=sys.stderr)
        return 1
    if result.is_main:
        print(summary(result))
    return result.exit_status


def _parse_head(text: str) -> tuple:
    layer, _, gt = text.partition(":")
    if not layer or not gt:
        raise ValueError(f"--score must be SCORE_BLOB:LABEL_BLOB (e.g. score_geo:geo), got {text!r}")
    return layer, gt


def _parse_size(text: str) -> tuple:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HxW (e.g. 128x160), got {text!r}") from None
    return height, width


# ----- using trained nets: infer, convert, export, time, draw -----

def _infer(args: argparse.Namespace) -> int:
    from fcn.infer import collect_images, infer_images
    from fcn.segmenter import Segmenter
    collect_images(args.images)  # a mistyped path is reported before the net is built
    options = {} if args.mean is None else {"mean": args.mean}
    segmenter = Segmenter(args.model, args.weights, device="cpu" if args.cpu else args.gpu, blob=args.blob,
                          allow_python_layers=args.allow_python_layers, speed=args.speed, **options)
    failures: list = []
    written = infer_images(segmenter, args.images, args.out, with_overlay=args.overlay, with_probs=args.probs,
                           failures=failures)
    print(f"{len(written)} files written to {args.out} (device {segmenter.device})")
    if failures:
        print(f"fcn infer: {len(failures)} picture(s) could not be read and were skipped (listed above)",
              file=sys.stderr)
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    from fcn.convert import convert_weights
    count = convert_weights(args.source, args.to, model=args.model, allow_python_layers=args.allow_python_layers)
    print(f"{args.to}: {count} blobs from {args.source}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fcn.export import export_onnx
    options = {} if args.opset is None else {"opset": args.opset}
    export_onnx(args.model, args.weights, args.out, blob=args.blob, allow_python_layers=args.allow_python_layers,
                **options)
    print(f"{args.out}: ONNX model, output '{args.blob}', batch/height/width dynamic")
    return 0


def _time(args: argparse.Namespace) -> int:
    from fcn.net_loading import load_net
    from fcn.timing import format_times, time_net
    from netspec import caffe_pb2
    _use_gpu(args.gpu)
    net = load_net(args.model, caffe_pb2.Phase.Value(args.phase.upper()), weights=args.weights,
                   allow_python_layers=args.allow_python_layers)
    print(format_times(time_net(net, args.iterations, args.forward_only), args.forward_only))
    return 0


def _draw(args: argparse.Namespace) -> int:
    from fcn.draw import draw_net
    from netspec import caffe_pb2
    draw_net(args.model, args.out, phase=None if args.phase == "all" else caffe_pb2.Phase.Value(args.phase.upper()))
    print(f"{args.out}: drawn")
    return 0


def _add_model_commands(commands: "argparse._SubParsersAction") -> None:
    """The subcommands that use a trained net: infer, convert, export, time, draw."""
    trust = dict(action="store_true", help="build nets with Python layers (they run code the prototxt names; "
                                            "refused by default)")
    infer = commands.add_parser("infer", help="label pictures (files or folders) with a deploy net: VOC-palette "
                                              "PNGs, optional overlays and class probabilities")
    infer.add_argument("images", nargs="+", help="image files and/or folders of them")
    infer.add_argument("--model", required=True, help="deploy prototxt")
    infer.add_argument("--weights", required=True, help="caffemodel (current or V1 format)")
    infer.add_argument("--out", required=True, help="output folder")
    infer.add_argument("--overlay", action="store_true", help="also write NAME_overlay.jpg")
    infer.add_argument("--probs", action="store_true", help="also write NAME_probs.npy (CxHxW softmax)")
    infer.add_argument("--blob", default="score", help="output blob to read (default: score)")
    infer.add_argument("--mean", type=float, nargs=3, default=None, metavar=("B", "G", "R"),
                       help="BGR mean pixel to subtract (default: the PASCAL VOC mean)")
    infer.add_argument("--gpu", type=int, help="CUDA device (default: the first GPU when present, else the CPU)")
    infer.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    infer.add_argument("--speed", choices=("exact", "winograd", "bf16"), default="exact",
                       help="exact: Caffe's float32 (default); winograd: CPU Winograd/FFT convolutions through NNPACK "
                            "(faster than exact on some CPUs, slower on others), scores within about 1e-5; bf16: "
                            "bfloat16 autocast (about 3.7x faster on an AVX512 CPU), scores within about 1e-2")
    infer.add_argument("--allow-python-layers", **trust)
    infer.set_defaults(run=_infer)
    convert = commands.add_parser("convert", help="convert weights between .caffemodel, .caffemodel.h5, "
                                                  ".safetensors and .pt (keys '<layer>/<index>')")
    convert.add_argument("source", help="weights to read (.caffemodel, .caffemodel.h5, .safetensors, .pt/.pth)")
    convert.add_argument("--to", required=True, help="file to write; its suffix picks the format")
    convert.add_argument("--model", help="the net's prototxt: needed to write a caffemodel; when reading one, "
                                         "gives the tensors the net's shapes")
    convert.add_argument("--allow-python-layers", **trust)
    convert.set_defaults(run=_convert)
    export = commands.add_parser("export", help="export a deploy net with its weights (ONNX)")
    export.add_argument("--onnx", action="store_true", help="write ONNX (the one format so far, and the default)")
    export.add_argument("model", help="deploy prototxt")
    export.add_argument("weights", help="caffemodel")
    export.add_argument("out", help="output .onnx file")
    export.add_argument("--blob", default="score", help="output blob (default: score)")
    export.add_argument("--opset", type=int, help="ONNX opset (default: fcn.export.DEFAULT_OPSET, 17)")
    export.add_argument("--allow-python-layers", **trust)
    export.set_defaults(run=_export)
    timing = commands.add_parser("time", help="per-layer forward/backward milliseconds (caffe time)")
    timing.add_argument("model", help="net prototxt")
    timing.add_argument("--iterations", type=int, default=50, help="timed passes (default: 50)")
    timing.add_argument("--weights", help="caffemodel to load (default: the fillers' values)")
    timing.add_argument("--phase", choices=("train", "test"), default="train", help="net phase (default: train)")
    timing.add_argument("--forward-only", action="store_true", help="time forward passes only")
    timing.add_argument("--gpu", type=int, help="CUDA device to use")
    timing.add_argument("--allow-python-layers", **trust)
    timing.set_defaults(run=_time)
    draw = commands.add_parser("draw", help="draw a net's layers as a PNG (no graphviz needed)")
    draw.add_argument("model", help="net prototxt")
    draw.add_argument("out", help="output picture; its suffix picks the format (.png, .svg, .pdf)")
    draw.add_argument("--phase", choices=("all", "train", "test"), default="all",
                      help="draw only the layers of one phase (default: all)")
    draw.set_defaults(run=_draw)


def _bounds(args: argparse.Namespace) -> int:
    from data_layers.catalog import open_layer
    from data_layers.layout import dataset_params
    from solvers.bounds import iu_bounds
    top = args.top or ("sem" if args.kind == "siftflow" else "label")
    params = dict(dataset_params(args.kind, args.data), split=args.split, prefetch=0, randomize=False)
    if args.kind == "nyud":
        params["tops"] = [top]  # NYUD reads only the tops it is asked for
    layer, _ = open_layer(args.kind, params)
    labels = (layer.decode(top, layer.source(top, sample_id))[0] for sample_id in layer.ids)
    factors = [int(f) for f in args.factors.split(",")]
    bounds = iu_bounds(labels, factors, mode=args.mode)
    print(f"mean IU upper bounds, {args.kind} {args.split} ({len(layer.ids)} images, cell rule {args.mode})")
    for factor in factors:
        print(f"factor {factor:4d}: {bounds[factor]:6.2f}")
    return 0


def _add_bounds_command(commands: "argparse._SubParsersAction") -> None:
    """``fcn bounds``: the paper's Section 6.3 upper bounds on mean IU at coarse output strides."""
    bounds = commands.add_parser("bounds", help="mean IU of the ground truth downsampled by each factor and "
                                                "upsampled back: an upper bound for nets of that output stride")
    bounds.add_argument("--data", default="data", help="data root in the release's layout (default: data)")
    bounds.add_argument("--kind", choices=("voc", "sbd", "nyud", "siftflow", "context"), default="voc")
    bounds.add_argument("--split", default="seg11valid")
    bounds.add_argument("--factors", default="128,64,32,16,8,4", help="comma-separated downsampling factors")
    bounds.add_argument("--mode", choices=("mode", "nearest"), default="mode",
                        help="cell rule: majority label of the cell, or the label at its centre")
    bounds.add_argument("--top", help="label top to read (default: label; sem for siftflow)")
    bounds.set_defaults(run=_bounds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcn", description="Fully Convolutional Networks on Caffe's formats.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the end-to-end demo on built-in synthetic data",
                               description="The FCN recipe in miniature on a synthetic VOC-format dataset: a "
                                           "classifier, net surgery, FCN-32s, 16s and 8s staged and 8s at once, "
                                           "scored and written up in OUT/REPORT.md (about 3 minutes on two cores).")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--seeds", type=int, default=1,
                      help="run the demo with seeds 0..N-1 (folders OUT/seed-K) and report mean and spread; "
                           "findings are stated only where the spread allows (default: 1)")
    demo.add_argument("--budget", choices=("full", "tiny"), default="full",
                      help="full: the demo as described (default); tiny: a few pictures and iterations per stage, "
                           "which checks the whole pipeline in under a minute and learns nothing")
    demo.set_defaults(run=_demo)
    experiments = commands.add_parser("experiments", help="the paper's ablations (Tables 2, 3, 8, loss sampling, "
                                                          "IU bounds) on synthetic data; writes REPORT.md")
    experiments.add_argument("--out", default="experiments", help="output folder (default: experiments)")
    experiments.set_defaults(run=_experiments)
    train = commands.add_parser("train", help="train an experiment folder (solver.prototxt + nets) with "
                                              "periodic mean IU scoring")
    train.add_argument("model_dir", help="folder with solver.prototxt and the nets it names (e.g. models/voc-fcn32s "
                                         "or a demo stage such as demo/fcn8s)")
    train.add_argument("--data", help="data root in the release's layout (default: the paths in the prototxts)")
    train.add_argument("--weights", action="append", help="initial weights (caffemodel); repeatable")
    train.add_argument("--restore", "--snapshot", dest="restore", metavar="SOLVERSTATE",
                       help="resume from a snapshot (OUT/snapshot/<prefix>_iter_N.solverstate; --snapshot is "
                            "Caffe's name): weights, solver history and, from the .datastate beside it, the data "
                            "layers' positions, so the run continues exactly as if never stopped")
    train.add_argument("--iters", type=int, help="iterations to run (default: max_iter)")
    train.add_argument("--score-every", type=int, help="score mean IU every N iterations (default: test_interval)")
    train.add_argument("--out", help="output folder for logs, plots, snapshots (default: MODEL_DIR/train)")
    train.add_argument("--score", action="append", metavar="SCORE:LABEL",
                       help="a score blob and its label blob to score (repeatable; the first picks the best "
                            "weights). Default: score:label, else every score_X:X (SIFT Flow's two heads)")
    train.add_argument("--gpu", type=int, help="CUDA device to use")
    train.set_defaults(run=_train)
    synth = commands.add_parser("synth", help="write a synthetic dataset in a real dataset's on-disk format")
    synth.add_argument("kind", choices=("voc", "sbd", "nyud", "siftflow", "context"))
    synth.add_argument("--out", default="data", help="data root (default: data); files go where the release "
                                                     "expects them, e.g. data/pascal/VOC2011")
    synth.add_argument("--n", type=int, default=8, help="pictures per split (default: 8)")
    synth.add_argument("--size", default="128x128", help="HxW of the pictures (default: 128x128)")
    synth.add_argument("--seed", type=int, default=0, help="picks the pictures (default: 0)")
    synth.add_argument("--force", action="store_true", help="write even into folders holding files that fcn synth "
                                                            "did not write (a real dataset's files get overwritten)")
    synth.set_defaults(run=_synth)
    pycaffe = commands.add_parser("pycaffe", help="run an unmodified pycaffe script with `import caffe` "
                                                  "resolving to fcn-caffe",
                                  description="Run SCRIPT as __main__ with `import caffe` (and caffe.proto, "
                                              "caffe.io, caffe.net_spec, caffe.coord_map) resolving to fcn-caffe.")
    pycaffe.add_argument("script")
    pycaffe.add_argument("args", nargs=argparse.REMAINDER)
    pycaffe.set_defaults(run=_pycaffe)
    _add_model_commands(commands)
    _add_bounds_command(commands)
    return parser


def command() -> int:
    """The ``fcn`` program: ``main`` in a process that keeps its freed memory for reuse (see
    ``runner.host_memory``: it spares each forward page-faulting its activations in again), and that
    leaves at once after a run a signal stopped (``runner.interrupt.exit_for_signal``)."""
    from runner.host_memory import keep_freed_memory
    from runner.interrupt import exit_for_signal
    keep_freed_memory()
    return exit_for_signal(main())


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from netspec import glog
    try:
        with glog.google_logging() if args.command != "pycaffe" else contextlib.nullcontext():
            return args.run(args)
    except (ValueError, OSError) as err:  # bad input, missing or unwritable files: one line, no traceback
        print(f"fcn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(command())
