"""``python -m fcn.experiments --out DIR``: run every experiment and print the report."""
import argparse
import logging
import sys

from fcn.experiments import run_all


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m fcn.experiments", description=__doc__)
    parser.add_argument("--out", default="experiments", help="output folder (default: experiments)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = run_all(args.out)
    with open(report) as handle:
        print(handle.read())
    print(f"report: {report}")
    return 0


sys.exit(main())
