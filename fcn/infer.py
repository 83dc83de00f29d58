"""``fcn infer``: label pictures and folders of pictures with a Segmenter, writing results atomically.

For each picture ``NAME.ext`` it writes ``NAME.png`` (labels in the VOC palette), and on request
``NAME_overlay.jpg`` (the picture with its non-background pixels tinted by class colour) and
``NAME_probs.npy`` (CxHxW float32 class probabilities). Every file appears whole or not at all, so a
run that is interrupted never leaves a truncated result that looks finished.
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from fcn.segmenter import Segmenter, load_rgb
from netspec.atomic import PathLike, write_atomically
from runner.host_memory import release_freed_memory_beyond
from solvers.score import save_label_png, voc_palette

#: File suffixes taken from a folder (matched case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
OVERLAY_ALPHA = 0.5


def collect_images(inputs: Iterable[PathLike]) -> List[Path]:
    """The pictures to label: files as given, folders expanded to their image files (sorted, not
    recursive). Two pictures whose outputs would share a name are an error, as is finding none."""
    items = [Path(item) for item in inputs]
    found: List[Path] = []
    for item in items:
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, items))}")
    by_stem: Dict[str, Path] = {}
    for path in found:
        if path.stem in by_stem:
            raise ValueError(f"{by_stem[path.stem]} and {path} would both write {path.stem}.png; "
                             f"label them in separate runs")
        by_stem[path.stem] = path
    return found


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The picture with every non-background pixel blended towards its class's VOC colour."""
    colours = voc_palette()[labels].astype(np.float32)
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    return np.where((labels > 0)[:, :, None], blended, rgb).round().astype(np.uint8)


def _encoded(write) -> bytes:
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


#: Freed memory ``fcn infer`` keeps between pictures before handing it back to the OS.
KEPT_FREE_BYTES = 512 << 20


def infer_images(segmenter: Segmenter, images: Iterable[PathLike], out_dir: PathLike,
                 with_overlay: bool = False, with_probs: bool = False,
                 failures: Optional[List[Tuple[Path, str]]] = None) -> List[Path]:
    """Label each picture into ``out_dir`` (created if missing); returns the files written. A picture
    that cannot be read (truncated, corrupt, over the pixel limit) is reported on stderr by name and
    skipped, so one bad file among thousands costs that file only; ``failures`` receives (path, reason)."""
    paths = collect_images(images)
    out = Path(out_dir)
    sources = {path.resolve() for path in paths}
    for path in paths:
        if (out / f"{path.stem}.png").resolve() in sources:
            raise ValueError(f"{path}: its label map would overwrite a picture being labelled; choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a folder for the label maps")
    os.makedirs(out, exist_ok=True)
    print(f"labelling {len(paths)} picture(s) into {out}", file=sys.stderr, flush=True)
    written: List[Path] = []
    for path in tqdm(paths, desc="infer", unit="image", disable=None):
        try:
            rgb = load_rgb(path)
        except (ValueError, OSError) as err:
            tqdm.write(f"fcn infer: skipped {err}", file=sys.stderr)
            if failures is not None:
                failures.append((path, str(err)))
            continue
        # the fcn commands keep freed memory for the next pass; pictures of ever new sizes would pile up
        # freed blocks that fit none of them (2.5 GB growing to 5.1 GB over 200 pictures)
        release_freed_memory_beyond(KEPT_FREE_BYTES)
        labels, probs = segmenter.predict_with_proba(rgb) if with_probs else (segmenter.predict(rgb), None)
        if labels.shape != rgb.shape[:2]:
            raise ValueError(f"blob '{segmenter.blob}' gives labels of shape {labels.shape} for the "
                             f"{rgb.shape[0]}x{rgb.shape[1]} picture {path}; name the input-sized score "
                             f"blob with --blob")
        target = out / f"{path.stem}.png"
        save_label_png(labels, str(target))
        written.append(target)
        if probs is not None:
            target = out / f"{path.stem}_probs.npy"
            write_atomically(target, _encoded(lambda f: np.save(f, probs)))
            written.append(target)
        if with_overlay:
            target = out / f"{path.stem}_overlay.jpg"
            picture = Image.fromarray(overlay(rgb, labels))
            write_atomically(target, _encoded(lambda f: picture.save(f, format="JPEG", quality=90)))
            written.append(target)
    return written
