"""What ``predict`` accepts, for every model family: a path, a folder, an http(s) URL of an image, a
video file or a camera index (``engine.video``), a numpy RGB array, a PIL image, or a list mixing
them. Every image becomes RGB uint8 the same way (``data.dataset.read_image_rgb`` for files: 16-bit
and float images are scaled by their own range, never clipped to white). A URL is downloaded once
into the cache (``<cache>/inputs``, as weights are: atomic, size-checked, a progress bar) and read
from there; offline, the error names the URL.

Folders are searched recursively by default (``find_images``); their images come in a stable
order, sorted by the path relative to the folder. Each input gets an output stem
(``output_stems``): a folder's image its path relative to the folder without the extension
(``a/x`` for ``images/a/x.png``), any other image its file stem (``image`` for arrays); a stem
already taken (``x.png`` next to ``x.jpg``, or two files of the same name in a list) gets ``_2``,
``_3`` … in input order, so no two inputs write the same output file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..data.dataset import array_to_uint8, image_to_rgb8, read_image_rgb

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_folder_input(inputs: Any) -> bool:
    return isinstance(inputs, (str, os.PathLike)) and Path(inputs).is_dir()


def find_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files (``IMAGE_EXTS``, any case) in ``folder``, and in its subfolders when
    ``recursive``; hidden files and folders (a name starting with ``.``) are left out and symbolic
    links to folders are not followed. Sorted by the path relative to ``folder``, part by part."""
    root = Path(folder)
    found: list[PurePosixPath] = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        rel = PurePosixPath(Path(here).relative_to(root).as_posix())
        found += [rel / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTS]
    return [root / p for p in sorted(found, key=lambda p: p.parts)]


@dataclass(frozen=True)
class PredictInput:
    """One image to predict: ``item`` (a path, array or PIL image), ``stem`` (its wanted output
    stem, before ``output_stems`` makes it unique) and ``skippable`` (a file found in a folder or
    given in a list, skipped when unreadable; an image given on its own is an error when unreadable)."""

    item: Any
    stem: str
    skippable: bool
    kind: str = "image"  # or "video" (a video file or a camera index: one Result per frame)


def expand_inputs(inputs: Any, recursive: bool = True) -> Iterable[Any]:
    """Every image of ``inputs`` (files in folders as ``Path``s, arrays and PIL images as given)."""
    for x in predict_inputs(inputs, recursive):
        yield x.item


def predict_inputs(inputs: Any, recursive: bool = True, _in_list: bool = False) -> list[PredictInput]:
    """``inputs`` as a list of ``PredictInput`` (folders expanded, ``find_images``); a missing path
    or a folder without images is a ``FileNotFoundError`` naming it."""
    from .video import is_camera, is_video_path

    if is_camera(inputs):
        return [PredictInput(inputs, f"camera{inputs}", False, "video")]
    if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
        local = fetch_url(inputs)
        return [PredictInput(local, local.stem, _in_list, "video" if is_video_path(local) else "image")]
    if isinstance(inputs, (str, os.PathLike)):
        p = Path(inputs)
        if p.is_dir():
            files = find_images(p, recursive)
            if not files:
                where = "this folder or its subfolders" if recursive else "this folder (recursive=False)"
                raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_EXTS)}) in {where}")
            return [PredictInput(f, f.relative_to(p).with_suffix("").as_posix(), True) for f in files]
        if p.is_file():
            return [PredictInput(p, p.stem, _in_list, "video" if is_video_path(p) else "image")]
        raise FileNotFoundError(f"{p}: no such image file or folder")
    if isinstance(inputs, (list, tuple)):
        return [y for x in inputs for y in predict_inputs(x, recursive, _in_list=True)]
    name = getattr(inputs, "filename", None)
    return [PredictInput(inputs, Path(name).stem if isinstance(name, str) and name else "image", False)]


def fetch_url(url: str, timeout: float = 30.0) -> Path:
    """The cached local copy of the image/video at ``url`` (downloaded the first time)."""
    from .errors import DatasetError
    from .weights import cache_dir, download

    return download(
        url,
        timeout,
        cache=cache_dir().parent / "inputs",
        what="the input",
        error=DatasetError,
        hint="Download it elsewhere and pass the local file as the input instead",
    )


def output_stems(stems: Iterable[str]) -> list[str]:
    """``stems`` made unique (ignoring case, for case-insensitive file systems): a stem already
    taken gets ``_2``, ``_3`` … (the first free one), in order."""
    stems = list(stems)
    taken = {s.lower() for s in stems}
    seen: set[str] = set()
    out = []
    for s in stems:
        u, n = s, 1
        while u.lower() in seen or (u != s and u.lower() in taken):
            n += 1
            u = f"{s}_{n}"
        seen.add(u.lower())
        out.append(u)
    return out


def load_input(x: Any) -> tuple[np.ndarray, str | None]:
    if isinstance(x, (str, os.PathLike)):
        return read_image_rgb(x), str(x)
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = np.stack([x] * 3, -1)
        if x.ndim != 3 or x.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be (H, W, 3) RGB, got shape {x.shape}")
        x = x[:, :, :3]
        if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
            return np.ascontiguousarray(x).astype(np.uint8, copy=False), None  # 8-bit values in any int type
        # 16-bit, 32-bit and float arrays: scaled by their own range, as 16-bit/float files are
        return np.ascontiguousarray(array_to_uint8(x)[0]), None
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(x, Image.Image):
        return image_to_rgb8(x)[0], getattr(x, "filename", None) or None
    raise TypeError(f"cannot predict on a {type(x).__name__}: give a path, folder, numpy array or PIL image")
