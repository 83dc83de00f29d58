"""Synthetic datasets in the real on-disk formats of VOC, SBD, NYUDv2, SIFT Flow and PASCAL-Context.

They let every path of the toolkit (data layers, training, scoring) run without the multi-gigabyte
downloads: the files are what the real datasets ship (JPEGs, palette PNGs, 16-bit depth PNGs, .mat files
with the same variable names and structs), in the same folders, with the release's split names, written
under a data root in the release's ``data/`` layout. Pictures come from ``scenes``: learnable, and with
fine structures so that finer output strides measurably help.

``write_dataset(kind, out_dir, n, size, seed)`` is the entry point (``fcn synth`` wraps it); ``scenes``
regenerates the exact pictures and ground truth a writer wrote, for tests and demos.
"""
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from data_layers import classes as names
from data_layers.encoders import save_jpeg, save_mat, save_palette_png, save_png, save_png16, save_sbd_cls
from data_layers.layout import KINDS, SIFTFLOW_SUBSET, dataset_params
from data_layers.scenes import Recipe, Scene, render
from data_layers.transforms import VOID
from netspec.atomic import write_atomically

PathLike = Union[str, Path]
Size = Tuple[int, int]

# The release's split names; VOC's seg11valid is its val minus SBD train, which synthetic ids never share.
SPLITS = {"voc": ("train", "val", "seg11valid"), "sbd": ("train", "val"), "nyud": ("trainval", "test"),
          "siftflow": ("trainval", "test"), "context": ("train", "val")}
_SAME_AS = {("voc", "seg11valid"): "val"}

SIFTFLOW_CATEGORIES = ("coast", "forest", "highway", "insidecity", "mountain", "opencountry", "street",
                       "tallbuilding")
# Names in the full PASCAL-Context list that are in no task: they must come out as background.
CONTEXT_DISTRACTORS = ("accordion", "air conditioner", "unknown", "wardrobe")
_GEO_SKY = ("sky", "sun", "moon")
_GEO_HORIZONTAL = ("crosswalk", "desert", "field", "grass", "river", "road", "sand", "sea", "sidewalk")


def _indices(class_names: Tuple[str, ...], *wanted: str) -> Tuple[int, ...]:
    return tuple(class_names.index(name) for name in wanted)


def _others(count: int, *taken: Tuple[int, ...]) -> Tuple[int, ...]:
    used = {c for group in taken for c in group}
    return tuple(c for c in range(count) if c not in used)


def _recipes() -> Dict[str, Recipe]:
    voc_objects = tuple(range(1, len(names.VOC)))
    nyud_up, nyud_down = _indices(names.NYUD, "wall"), _indices(names.NYUD, "floor")
    sift_up = _indices(names.SIFTFLOW, "sky")
    sift_down = _indices(names.SIFTFLOW, "road", "sea", "grass", "field", "sand", "river")
    ctx_up = (0,) + _indices(names.CONTEXT59, "sky", "wall", "building", "ceiling")
    ctx_down = (0,) + _indices(names.CONTEXT59, "ground", "grass", "road", "floor", "water")
    return {
        "voc": Recipe(len(names.VOC), (0,), (0,), voc_objects, void_outline=True, jitter_size=True),
        "sbd": Recipe(len(names.VOC), (0,), (0,), voc_objects, jitter_size=True),
        "nyud": Recipe(len(names.NYUD), nyud_up, nyud_down, _others(len(names.NYUD), nyud_up, nyud_down),
                       void_patches=True, depth=True),
        "siftflow": Recipe(len(names.SIFTFLOW), sift_up, sift_down, _others(len(names.SIFTFLOW), sift_up),
                           void_patches=True),
        "context": Recipe(len(names.CONTEXT59), ctx_up, ctx_down,
                          _others(len(names.CONTEXT59), ctx_up, ctx_down), jitter_size=True),
    }


RECIPES = _recipes()


def _sample_id(kind: str, k: int) -> str:
    """Ids shaped like the real ones (VOC-style years, NYUD numbers, SIFT Flow category names)."""
    if kind == "nyud":
        return str(5001 + k)
    if kind == "siftflow":
        return f"{SIFTFLOW_CATEGORIES[k % len(SIFTFLOW_CATEGORIES)]}_synth{k:04d}"
    year = {"voc": 2011, "sbd": 2008, "context": 2010}[kind]
    return f"{year}_{k:06d}"


def _plan(kind: str, split: str, n: int) -> List[Tuple[str, int]]:
    """(id, scene number) of each sample of a split; scene numbers are unique across a dataset's splits."""
    if kind not in SPLITS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    split = _SAME_AS.get((kind, split), split)
    own = [s for s in SPLITS[kind] if (kind, s) not in _SAME_AS]
    if split not in own:
        raise ValueError(f"{kind} has splits {', '.join(SPLITS[kind])}, not {split!r}")
    first = own.index(split) * n
    return [(_sample_id(kind, k), k) for k in range(first, first + n)]


def _geometric(label: np.ndarray) -> np.ndarray:
    """SIFT Flow geometric classes (0 sky, 1 horizontal, 2 vertical) implied by semantic ones."""
    table = np.full(256, VOID, dtype=np.uint8)
    for cls, name in enumerate(names.SIFTFLOW):
        table[cls] = 0 if name in _GEO_SKY else 1 if name in _GEO_HORIZONTAL else 2
    return table[label]


def _scene(kind: str, k: int, size: Size, seed: int) -> Scene:
    scene = render(RECIPES[kind], size, np.random.default_rng([seed, KINDS.index(kind), k]))
    return replace(scene, geo=_geometric(scene.label)) if kind == "siftflow" else scene


def scenes(kind: str, split: str, n: int, size: Size = (128, 128), seed: int = 0) -> List[Tuple[str, Scene]]:
    """The (id, scene) pairs ``write_dataset(kind, ..., n, size, seed)`` writes for ``split``."""
    return [(sample_id, _scene(kind, k, size, seed)) for sample_id, k in _plan(kind, split, n)]


def _write_splits(kind: str, n: int, size: Size, seed: int, split_file: Callable[[str], Path],
                  write_sample: Callable[[str, Scene], None]) -> None:
    """The loop every format shares: split lists, then each sample once."""
    written = set()
    for split in SPLITS[kind]:
        plan = _plan(kind, split, n)
        path = split_file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{sample_id}\n" for sample_id, _ in plan))
        for sample_id, k in plan:
            if sample_id not in written:
                write_sample(sample_id, _scene(kind, k, size, seed))
                written.add(sample_id)


def write_voc(data_root: PathLike, n: int, size: Size, seed: int) -> Dict[str, str]:
    """VOC2011: ImageSets/Segmentation/<split>.txt, JPEGImages/*.jpg, SegmentationClass/*.png."""
    params = dataset_params("voc", data_root)
    root = Path(params["voc_dir"])

    def write(sample_id: str, scene: Scene) -> None:
        save_jpeg(root / "JPEGImages" / f"{sample_id}.jpg", scene.rgb)
        save_palette_png(root / "SegmentationClass" / f"{sample_id}.png", scene.label)

    _write_splits("voc", n, size, seed, lambda s: root / "ImageSets" / "Segmentation" / f"{s}.txt", write)
    return params


def write_sbd(data_root: PathLike, n: int, size: Size, seed: int) -> Dict[str, str]:
    """SBD dataset/: <split>.txt, img/*.jpg, cls/*.mat (struct GTcls)."""
    params = dataset_params("sbd", data_root)
    root = Path(params["sbdd_dir"])

    def write(sample_id: str, scene: Scene) -> None:
        save_jpeg(root / "img" / f"{sample_id}.jpg", scene.rgb)
        save_sbd_cls(root / "cls" / f"{sample_id}.mat", scene.label)

    _write_splits("sbd", n, size, seed, lambda s: root / f"{s}.txt", write)
    return params


def write_nyud(data_root: PathLike, n: int, size: Size, seed: int) -> Dict[str, str]:
    """NYUDv2: <split>.txt, data/{images,depth,hha}/img_<id>.png, segmentation/img_<id>.mat (0 = void)."""
    params = dataset_params("nyud", data_root)
    root = Path(params["nyud_dir"])

    def write(sample_id: str, scene: Scene) -> None:
        save_png(root / "data" / "images" / f"img_{sample_id}.png", scene.rgb)
        save_png16(root / "data" / "depth" / f"img_{sample_id}.png", scene.depth)
        save_png(root / "data" / "hha" / f"img_{sample_id}.png", scene.hha)
        raw = np.where(scene.label == VOID, 0, scene.label.astype(np.int64) + 1).astype(np.uint8)
        save_mat(root / "segmentation" / f"img_{sample_id}.mat", segmentation=raw)

    _write_splits("nyud", n, size, seed, lambda s: root / f"{s}.txt", write)
    return params


def _cell(strings: Tuple[str, ...]) -> np.ndarray:
    return np.array(strings, dtype=object).reshape(-1, 1)


def write_siftflow(data_root: PathLike, n: int, size: Size, seed: int) -> Dict[str, str]:
    """SIFT Flow: <split>.txt, Images/, SemanticLabels/ (S: 0 void, 1..33), GeoLabels/ (S: -1 void, 1..3),
    each in the spatial_envelope_256x256_static_8outdoorcategories subfolder; S is MATLAB double."""
    params = dataset_params("siftflow", data_root)
    root = Path(params["siftflow_dir"])

    def write(sample_id: str, scene: Scene) -> None:
        save_jpeg(root / "Images" / SIFTFLOW_SUBSET / f"{sample_id}.jpg", scene.rgb)
        sem = np.where(scene.label == VOID, 0, scene.label.astype(np.float64) + 1)
        geo = np.where(scene.geo == VOID, -1, scene.geo.astype(np.float64) + 1)
        save_mat(root / "SemanticLabels" / SIFTFLOW_SUBSET / f"{sample_id}.mat", S=sem,
                 names=_cell(names.SIFTFLOW))
        save_mat(root / "GeoLabels" / SIFTFLOW_SUBSET / f"{sample_id}.mat", S=geo,
                 names=_cell(names.SIFTFLOW_GEOMETRIC))

    _write_splits("siftflow", n, size, seed, lambda s: root / f"{s}.txt", write)
    return params


def _write_label_list(path: Path, entries: List[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}: {name}\n" for i, name in enumerate(entries, start=1)))


def write_context(data_root: PathLike, n: int, size: Size, seed: int) -> Dict[str, str]:
    """PASCAL-Context: VOC2010/{JPEGImages,ImageSets/Main} and labels.txt, 59_labels.txt, 33_labels.txt,
    trainval/*.mat (LabelMap of full-list ids). The full list holds the 59 classes (spelt as the full
    list spells them) plus a few names in no task; the 33-class list is a stand-in (first 33 classes)."""
    params = dataset_params("context", data_root)
    voc2010, context = Path(params["voc_dir"]) / "VOC2010", Path(params["context_dir"])
    task = list(names.CONTEXT59[1:])
    full = sorted({names.CONTEXT_TASK_TO_FULL.get(c, c) for c in task} | set(CONTEXT_DISTRACTORS))
    _write_label_list(context / "labels.txt", full)
    _write_label_list(context / "59_labels.txt", task)
    _write_label_list(context / "33_labels.txt", task[:33])
    to_full = np.array([0] + [full.index(names.CONTEXT_TASK_TO_FULL.get(c, c)) + 1 for c in task])
    upper_other, lower_other = (full.index(d) + 1 for d in CONTEXT_DISTRACTORS[:2])

    def write(sample_id: str, scene: Scene) -> None:
        save_jpeg(voc2010 / "JPEGImages" / f"{sample_id}.jpg", scene.rgb)
        rows = np.arange(scene.label.shape[0])[:, None] < scene.label.shape[0] // 2
        raw = np.where(scene.label == 0, np.where(rows, upper_other, lower_other), to_full[scene.label])
        save_mat(context / "trainval" / f"{sample_id}.mat", LabelMap=raw.astype(np.uint16))

    _write_splits("context", n, size, seed, lambda s: voc2010 / "ImageSets" / "Main" / f"{s}.txt", write)
    return params


WRITERS = {"voc": write_voc, "sbd": write_sbd, "nyud": write_nyud, "siftflow": write_siftflow,
           "context": write_context}


#: Left in every folder ``write_dataset`` fills, before the first sample: the proof that the folder's files
#: are ours to overwrite. A folder with files and without it may be a real dataset.
MARKER = ".fcn-synth.json"


def _owned_folders(kind: str, params: Dict[str, str]) -> List[Path]:
    """The folders a writer fills: its layer keys' folders (PASCAL-Context's VOC2010 only, within the
    ``pascal`` folder that may also hold a real VOC2011)."""
    if kind == "context":
        return [Path(params["voc_dir"]) / "VOC2010", Path(params["context_dir"])]
    return [Path(folder) for folder in params.values()]


def _claim(kind: str, params: Dict[str, str], force: bool, description: dict) -> None:
    """Refuse to write into a folder holding files that no earlier ``write_dataset`` wrote (unless
    ``force``), then mark every folder as ours."""
    folders = _owned_folders(kind, params)
    for folder in folders:
        if force or (folder / MARKER).exists() or not folder.is_dir():
            continue
        foreign = next(folder.iterdir(), None)
        if foreign is not None:
            raise FileExistsError(f"{folder} already holds files that fcn synth did not write (e.g. {foreign.name}); "
                                  f"refusing to overwrite them: choose another data root, or force it "
                                  f"(fcn synth --force)")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / MARKER, (json.dumps(description) + "\n").encode())


def write_dataset(kind: str, out_dir: PathLike, n: int = 8, size: Size = (128, 128),
                  seed: int = 0, force: bool = False) -> Dict[str, str]:
    """Write synthetic dataset ``kind`` (voc|sbd|nyud|siftflow|context) under data root ``out_dir``.

    ``n`` pictures per split, each at most ``size`` = (height, width) (VOC, SBD and Context vary it down
    to 3/4, as real VOC pictures vary); ``seed`` fixes everything. Files go where the release expects
    them (e.g. ``<out_dir>/pascal/VOC2011``). Returns the layer's folder keys for ``param_str``, e.g.
    ``{'voc_dir': '<out_dir>/pascal/VOC2011'}``. A folder that already holds files not written here (a
    real dataset, say) is refused with FileExistsError unless ``force``.
    """
    if kind not in WRITERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    if n < 1:
        raise ValueError(f"need at least one picture per split, got n={n}")
    height, width = (int(v) for v in size)
    if height < 8 or width < 8:
        raise ValueError(f"pictures must be at least 8x8, got {height}x{width}")
    _claim(kind, dataset_params(kind, out_dir), force,
           {"kind": kind, "n": n, "size": [height, width], "seed": int(seed)})
    return WRITERS[kind](out_dir, n, (height, width), int(seed))
