"""What ``predict`` accepts, for every model family: a path, a folder, a list of them, a numpy
RGB array or a PIL image. Every one becomes RGB uint8 the same way (``data.dataset.read_image_rgb``
for files: 16-bit and float images are scaled by their own range, never clipped to white)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import array_to_uint8, image_to_rgb8, read_image_rgb

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_folder_input(inputs: Any) -> bool:
    return isinstance(inputs, (str, os.PathLike)) and Path(inputs).is_dir()


def expand_inputs(inputs: Any) -> Iterable[Any]:
    if isinstance(inputs, (str, os.PathLike)):
        p = Path(inputs)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if not files:
                raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
            yield from files
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    elif isinstance(inputs, (list, tuple)):
        for x in inputs:
            yield from expand_inputs(x)
    else:
        yield inputs


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
