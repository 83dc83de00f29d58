"""voc-fcn-alexnet: FCN-AlexNet from the AlexNet (CaffeNet) FCN body.

Run ``python models/voc-fcn-alexnet/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import VOC, Recipe, imagenet, main  # noqa: E402

RECIPE = Recipe((imagenet("alexnet"),), VOC)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
