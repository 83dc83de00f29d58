"""pascalcontext-fcn32s: FCN-32s on PASCAL-Context from the VGG16 FCN body.

Run ``python models/pascalcontext-fcn32s/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import CONTEXT, Recipe, imagenet, main  # noqa: E402

RECIPE = Recipe((imagenet("vgg16"),), CONTEXT)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
