"""siftflow-fcn8s: FCN-8s on SIFT Flow (both heads) from siftflow-fcn16s's trained weights.

Run ``python models/siftflow-fcn8s/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import SIFTFLOW, Recipe, main, stage  # noqa: E402

RECIPE = Recipe((stage("siftflow-fcn16s", "siftflow-fcn16s-heavy"),), SIFTFLOW)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
