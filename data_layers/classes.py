"""Class names of the datasets the FCN release trained on, in model output order.

The data layers need only counts, but the synthetic writer needs names: PASCAL-Context's labels are
matched by name, and SIFT Flow's geometric label of a pixel follows from its semantic class. Keeping the
lists here also lets scoring and visualisation print names instead of numbers.
"""
from typing import Tuple

VOC: Tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# NYUDv2 40-class task of Gupta et al.; on disk 0 is void and these are 1..40.
NYUD: Tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)

# SIFT Flow semantic classes; on disk 0 is void and these are 1..33.
SIFTFLOW: Tuple[str, ...] = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight",
    "sun", "tree", "window",
)

# SIFT Flow geometric classes; on disk -1 (and 0) is void and these are 1..3.
SIFTFLOW_GEOMETRIC: Tuple[str, ...] = ("sky", "horizontal", "vertical")

# PASCAL-Context 59-class task (Mottaghi et al.), index 0 = background (everything else).
CONTEXT59: Tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes",
    "computer", "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard",
    "light", "mountain", "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves",
    "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window",
    "wood",
)

# Where the 59-class task spells a class differently from the full PASCAL-Context label list.
CONTEXT_TASK_TO_FULL = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
