"""The ``fcn`` command line: argument parsing only; the work happens in the packages."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _demo(args: argparse.Namespace) -> int:
    from fcn.demo import run_demo
    run_demo(args.out)
    return 0


def _pycaffe(args: argparse.Namespace) -> int:
    from fcn.pycaffe_runner import run_pycaffe_script
    run_pycaffe_script(args.script, args.args)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from data_layers.synthetic import write_dataset
    height, width = _parse_size(args.size)
    keys = write_dataset(args.kind, args.out, n=args.n, size=(height, width), seed=args.seed)
    for key, folder in keys.items():
        print(f"{key}: {folder}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import os

    from solvers.relocate import relocate_solver
    from solvers.training import TrainConfig, summary, train
    if args.gpu is not None:
        from runner.device import set_device, set_mode_gpu
        set_device(args.gpu)
        set_mode_gpu()
    solver = os.path.join(args.model_dir, "solver.prototxt")
    if not os.path.isfile(solver):
        raise FileNotFoundError(f"no solver.prototxt in {args.model_dir}")
    out = args.out or os.path.join(args.model_dir, "train")
    solver = relocate_solver(solver, out, args.data)
    result = train(TrainConfig(solver, weights=args.weights or (), iters=args.iters, score_every=args.score_every,
                               out_dir=out))
    print(summary(result))
    return 0


def _parse_size(text: str) -> tuple:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HxW (e.g. 128x160), got {text!r}") from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcn", description="Fully Convolutional Networks on Caffe's formats.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the end-to-end demo on built-in synthetic data")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.set_defaults(run=_demo)
    train = commands.add_parser("train", help="train an experiment folder (solver.prototxt + nets) with "
                                              "periodic mean IU scoring")
    train.add_argument("model_dir")
    train.add_argument("--data", help="data root in the release's layout (default: the paths in the prototxts)")
    train.add_argument("--weights", action="append", help="initial weights (caffemodel); repeatable")
    train.add_argument("--iters", type=int, help="iterations to run (default: max_iter)")
    train.add_argument("--score-every", type=int, help="score mean IU every N iterations (default: test_interval)")
    train.add_argument("--out", help="output folder for logs, plots, snapshots (default: MODEL_DIR/train)")
    train.add_argument("--gpu", type=int, help="CUDA device to use")
    train.set_defaults(run=_train)
    synth = commands.add_parser("synth", help="write a synthetic dataset in a real dataset's on-disk format")
    synth.add_argument("kind", choices=("voc", "sbd", "nyud", "siftflow", "context"))
    synth.add_argument("--out", default="data", help="data root (default: data); files go where the release "
                                                     "expects them, e.g. data/pascal/VOC2011")
    synth.add_argument("--n", type=int, default=8, help="pictures per split")
    synth.add_argument("--size", default="128x128", help="HxW of the pictures")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_synth)
    pycaffe = commands.add_parser("pycaffe", help="run an unmodified pycaffe script with `import caffe` "
                                                  "resolving to fcn-caffe")
    pycaffe.add_argument("script")
    pycaffe.add_argument("args", nargs=argparse.REMAINDER)
    pycaffe.set_defaults(run=_pycaffe)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"fcn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
