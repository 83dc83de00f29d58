"""``python -m fcn.experiments --out DIR``: the same as ``fcn experiments --out DIR``."""
import sys

from fcn.cli import main

sys.exit(main(["experiments", *sys.argv[1:]]))
