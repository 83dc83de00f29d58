"""siftflow-fcn32s: FCN-32s on SIFT Flow (semantic and geometric heads) from the VGG16 FCN body.

Scored on the semantic head, averaging over the classes present in the test labels.

Run ``python models/siftflow-fcn32s/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import SIFTFLOW, Recipe, imagenet, main  # noqa: E402

RECIPE = Recipe((imagenet("vgg16"),), SIFTFLOW)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
