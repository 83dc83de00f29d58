"""nyud-fcn16s-color-hha: NYUDv2 late fusion FCN-16s from nyud-fcn32s-color-hha's trained weights.

Run ``python models/nyud-fcn16s-color-hha/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import NYUD, Recipe, main, stage  # noqa: E402

RECIPE = Recipe((stage("nyud-fcn32s-color-hha", "nyud-fcn32s-color-hha-heavy"),), NYUD)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
