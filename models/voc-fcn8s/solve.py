"""voc-fcn8s: FCN-8s from voc-fcn16s's trained weights; the new pool3 scores start at zero.

Run ``python models/voc-fcn8s/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import VOC, Recipe, main, stage  # noqa: E402

RECIPE = Recipe((stage("voc-fcn16s", "fcn16s-heavy-pascal"),), VOC)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
