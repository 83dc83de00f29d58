"""voc-fcn-pool4: FCN-pool4 from the VGG16 FCN body (the file's layers after pool4 go unused).

Run ``python models/voc-fcn-pool4/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import VOC, Recipe, imagenet, main  # noqa: E402

RECIPE = Recipe((imagenet("vgg16"),), VOC)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
