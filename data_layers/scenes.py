"""Procedural pictures for the synthetic datasets, built so that segmentation nets can learn them and so
that output stride matters.

Every class has a fixed look (colour, texture, texture period and angle) and a fixed shape family, the
same in every dataset and every seed, so a net trained on one synthetic split transfers to another. A
scene is two "stuff" regions split by a wavy horizon (sky/ground, wall/floor, background) with objects
drawn over them. Every third class is a fine structure -- bars, specks or rings 5 to 8 pixels
across, a fraction of the 32-pixel cell of a stride-32 prediction and about one 8-pixel cell of a
stride-8 one -- so that a stride-32 net cannot resolve them and a stride-8 one can. Solid objects span a quarter
to three quarters of the picture's short side, as PASCAL's objects do: at stride 32 a picture of 96x128
is only 3x4 cells, and with smaller objects even a perfect stride-8 net could not pass about 45 mean IU
(``fcn bounds``).
"""
import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image

from data_layers.transforms import VOID

SOLID_SHAPES = ("blob", "box", "wedge")
FINE_SHAPES = ("bars", "specks", "ring")
SHAPES = SOLID_SHAPES + FINE_SHAPES
TEXTURES = ("flat", "stripes", "checks", "dots")


@dataclass(frozen=True)
class Recipe:
    """What a dataset's scenes are made of (class indices are task classes, 0-based)."""

    num_classes: int
    upper: Tuple[int, ...]         # stuff above the horizon (sky, wall, background)
    lower: Tuple[int, ...]         # stuff below it (ground, floor, background)
    objects: Tuple[int, ...]       # classes drawn as shapes
    void_outline: bool = False     # VOC marks object outlines as void
    void_patches: bool = False     # NYUD and SIFT Flow have unlabeled regions
    jitter_size: bool = False      # VOC-like sets vary in picture size
    depth: bool = False            # NYUD: also render depth and HHA


@dataclass
class Scene:
    """One picture and its ground truth in task space (what a data layer must deliver)."""

    rgb: np.ndarray                     # H x W x 3 uint8
    label: np.ndarray                   # H x W uint8 task classes, VOID where unlabeled
    depth: Optional[np.ndarray] = None  # H x W uint16 millimetres
    hha: Optional[np.ndarray] = None    # H x W x 3 uint8
    geo: Optional[np.ndarray] = None    # H x W uint8 geometric classes (SIFT Flow), VOID where unlabeled


@dataclass(frozen=True)
class Look:
    color: np.ndarray
    texture: str
    period: int
    angle: float
    shape: str


def look(cls: int) -> Look:
    """The fixed appearance of class ``cls``: hues spread by the golden ratio, textures cycling; every
    third class is a fine structure (bars, specks, ring in turn), the others solid shapes."""
    hue = (cls * 0.381966) % 1.0
    saturation = 0.35 + 0.2 * (cls % 4)
    value = 0.45 + 0.17 * ((cls // 4) % 4)
    color = np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255.0
    shape = FINE_SHAPES[(cls // 3) % 3] if cls % 3 == 0 else SOLID_SHAPES[(cls + cls // 3) % 3]
    return Look(color, TEXTURES[(cls // 2) % 4], 3 + cls % 4, (cls * 0.7) % math.pi, shape)


def _pattern(lk: Look, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Texture in [-1, 1] at the given pixel coordinates."""
    u = xx * math.cos(lk.angle) + yy * math.sin(lk.angle)
    v = -xx * math.sin(lk.angle) + yy * math.cos(lk.angle)
    p = lk.period
    if lk.texture == "stripes":
        bits = np.floor(u / (p / 2.0)) % 2
    elif lk.texture == "checks":
        bits = (np.floor(u / p) + np.floor(v / p)) % 2
    elif lk.texture == "dots":
        bits = ((u % p) < p / 2.0) & ((v % p) < p / 2.0)
    else:
        return np.zeros_like(u)
    return np.where(bits, 1.0, -1.0)


# ----- shape families: each returns the pixels of one object -----
def _frame(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray):
    h, w = yy.shape
    cy, cx, theta = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, math.pi)
    dy, dx = yy - cy, xx - cx
    along = dx * math.cos(theta) + dy * math.sin(theta)
    across = -dx * math.sin(theta) + dy * math.cos(theta)
    return along, across, min(h, w)


def _blob(rng, yy, xx):
    along, across, m = _frame(rng, yy, xx)
    a, b = rng.uniform(0.15, 0.4, 2) * m
    return (along / a) ** 2 + (across / b) ** 2 <= 1.0


def _box(rng, yy, xx):
    along, across, m = _frame(rng, yy, xx)
    a, b = rng.uniform(0.12, 0.32, 2) * m
    return (np.abs(along) <= a) & (np.abs(across) <= b)


def _wedge(rng, yy, xx):
    along, across, m = _frame(rng, yy, xx)
    angles = np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
    radius = rng.uniform(0.2, 0.4) * m
    px, py = radius * np.cos(angles), radius * np.sin(angles)
    sides = [(px[i] - along) * (py[(i + 1) % 3] - across) - (py[i] - across) * (px[(i + 1) % 3] - along)
             for i in range(3)]
    return (sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)


def _bars(rng, yy, xx):
    along, across, m = _frame(rng, yy, xx)
    half_length, half_width = rng.uniform(0.25, 0.45) * m, rng.uniform(2.5, 4.0)
    spacing = rng.uniform(4.0, 6.0) * half_width
    mask = np.zeros(yy.shape, dtype=bool)
    for k in range(int(rng.integers(1, 4))):
        mask |= (np.abs(along) <= half_length) & (np.abs(across - k * spacing) <= half_width)
    return mask


def _specks(rng, yy, xx):
    along, across, m = _frame(rng, yy, xx)
    mask = np.zeros(yy.shape, dtype=bool)
    for _ in range(int(rng.integers(3, 9))):
        oy, ox = rng.uniform(-0.25, 0.25, 2) * m
        mask |= (along - ox) ** 2 + (across - oy) ** 2 <= rng.uniform(3.0, 5.0) ** 2
    return mask


def _ring(rng, yy, xx):
    along, across, m = _frame(rng, yy, xx)
    radius, half_width = rng.uniform(0.15, 0.3) * m, rng.uniform(2.5, 4.0)
    return np.abs(np.hypot(along, across) - radius) <= half_width


_SHAPE_MASKS: Dict[str, Callable] = {"blob": _blob, "box": _box, "wedge": _wedge, "bars": _bars,
                                     "specks": _specks, "ring": _ring}


def _smooth_noise(rng: np.random.Generator, size: Tuple[int, int], cells: int, sigma: float) -> np.ndarray:
    """H x W x 3 low-frequency colour noise: clutter that a net must learn to ignore."""
    h, w = size
    coarse = rng.normal(0.0, sigma, (3, cells, cells)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(c, "F").resize((w, h), Image.BILINEAR)) for c in coarse]
    return np.stack(planes, axis=-1)


def _outline(classes: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class."""
    edge = np.zeros(classes.shape, dtype=bool)
    vertical, horizontal = classes[1:] != classes[:-1], classes[:, 1:] != classes[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def _depth_and_hha(classes: np.ndarray, recipe: Recipe, rng: np.random.Generator):
    """Depth (mm) of a room receding towards the top, objects standing closer by a class-dependent
    amount; HHA-like channels (disparity, height, a per-class angle) derived from it."""
    h, w = classes.shape
    rows = np.linspace(0.0, 1.0, h)[:, None] * np.ones((1, w))
    is_object = np.isin(classes, recipe.objects)
    offset = np.where(is_object, 250.0 + 60.0 * (classes % 9), 0.0)
    depth = 1200.0 + 2800.0 * (1.0 - rows) - offset + rng.normal(0.0, 15.0, classes.shape)
    depth = np.clip(np.round(depth), 300, 10000).astype(np.uint16)
    disparity = np.clip(255.0 * 800.0 / depth, 0, 255)
    height = np.clip(255.0 * (1.0 - rows) + np.where(is_object, 20.0 * (classes % 5), 0.0), 0, 255)
    angle = (classes * 47) % 200 + 30 + rng.normal(0.0, 3.0, classes.shape)
    hha = np.stack([disparity, height, np.clip(angle, 0, 255)], axis=-1)
    return depth, np.round(hha).astype(np.uint8)


def render(recipe: Recipe, size: Tuple[int, int], rng: np.random.Generator) -> Scene:
    """One scene of at most ``size`` (h, w), drawn from ``rng``."""
    h, w = size
    if recipe.jitter_size:
        h, w = int(rng.integers(max(8, 3 * h // 4), h + 1)), int(rng.integers(max(8, 3 * w // 4), w + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    horizon = h * rng.uniform(0.35, 0.65) + 0.08 * h * np.sin(xx[0] * rng.uniform(0.02, 0.1)
                                                               + rng.uniform(0, 2 * math.pi))
    classes = np.where(yy < horizon[None, :], rng.choice(recipe.upper), rng.choice(recipe.lower))
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.choice(recipe.objects))
        classes[_SHAPE_MASKS[look(cls).shape](rng, yy, xx)] = cls

    image = np.zeros((h, w, 3))
    for cls in np.unique(classes):
        where = classes == cls
        lk = look(int(cls))
        image[where] = lk.color * (1.0 + 0.3 * _pattern(lk, yy[where], xx[where]))[:, None]
    image = image * rng.uniform(0.85, 1.15) + _smooth_noise(rng, (h, w), 4, 14.0)
    image += rng.normal(0.0, 4.0, image.shape)
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)

    void = np.zeros((h, w), dtype=bool)
    if recipe.void_outline:
        solid = [c for c in recipe.objects if look(c).shape in SOLID_SHAPES]
        void |= _outline(classes) & np.isin(classes, solid)
    if recipe.void_patches and rng.random() < 0.5:
        top, left = int(rng.integers(0, h)), int(rng.integers(0, w))
        void[top:top + max(1, h // 8), left:left + max(1, w // 6)] = True
    scene = Scene(rgb=rgb, label=np.where(void, VOID, classes).astype(np.uint8))
    if recipe.depth:
        scene.depth, scene.hha = _depth_and_hha(classes, recipe, rng)
    return scene
