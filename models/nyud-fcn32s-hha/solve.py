"""nyud-fcn32s-hha: FCN-32s on NYUDv2 HHA from the VGG16 FCN body (HHA starts from RGB's filters).

Run ``python models/nyud-fcn32s-hha/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import NYUD, Recipe, imagenet, main  # noqa: E402

RECIPE = Recipe((imagenet("vgg16"),), NYUD)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
