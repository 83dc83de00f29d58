"""nyud-fcn32s-color-d: NYUDv2 early fusion (color + depth) from the VGG16 FCN body.

conv1_1_bgrd takes conv1_1's BGR filters, and their mean for the depth channel.

Run ``python models/nyud-fcn32s-color-d/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import NYUD, Recipe, color_depth, imagenet, main  # noqa: E402

RECIPE = Recipe((imagenet("vgg16"),), NYUD, color_depth("conv1_1_bgrd"))

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
