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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcn", description="Fully Convolutional Networks on Caffe's formats.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the end-to-end demo on built-in synthetic data")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.set_defaults(run=_demo)
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
