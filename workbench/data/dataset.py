"""The dataset currency: one in-memory type for an instance-segmentation dataset.

``Dataset`` holds images, categories and instances (polygon or RLE masks) of one split and
reads/writes COCO JSON that pycocotools accepts. Every step (check, conversion, split,
training, evaluation, widgets) takes and returns this type; nothing else passes raw COCO
dicts around.

The PaddleX COCO layout that the steps work on::

    dataset_dir/
      images/...
      annotations/instance_train.json
      annotations/instance_val.json
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.io import atomic_write_json, read_json

SPLITS = ("train", "val")
ANNOTATION_FILES = {"train": "instance_train.json", "val": "instance_val.json"}


@dataclass
class Category:
    id: int
    name: str
    supercategory: str = ""

    def to_coco(self) -> dict:
        return {"id": self.id, "name": self.name, "supercategory": self.supercategory}


@dataclass
class ImageInfo:
    id: int
    file_name: str
    width: int
    height: int
    extra: dict = field(default_factory=dict)

    def to_coco(self) -> dict:
        d = {"id": self.id, "file_name": self.file_name, "width": self.width, "height": self.height}
        d.update(self.extra)
        return d


@dataclass
class Instance:
    """One object: a category and a mask given as COCO polygons (list of flat xy lists) or RLE."""

    id: int
    image_id: int
    category_id: int
    segmentation: Any
    bbox: list[float]
    area: float
    iscrowd: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def is_polygon(self) -> bool:
        return isinstance(self.segmentation, list)

    def to_coco(self) -> dict:
        seg = self.segmentation
        if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
            seg = {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
        d = {
            "id": self.id,
            "image_id": self.image_id,
            "category_id": self.category_id,
            "segmentation": seg,
            "bbox": [float(v) for v in self.bbox],
            "area": float(self.area),
            "iscrowd": int(self.iscrowd),
        }
        d.update(self.extra)
        return d

    def rle(self, height: int, width: int) -> dict:
        """The mask as one compressed RLE (pycocotools format)."""
        from pycocotools import mask as mask_utils

        seg = self.segmentation
        if isinstance(seg, list):
            # a polygon needs >= 3 points; pycocotools would take a 4-number one for a box and fail
            # with an internal message, and an odd count has no meaning: those parts are left out
            # (``check`` reports them as bad_polygon)
            polys = [list(map(float, p)) for p in seg if isinstance(p, (list, tuple)) and len(p) >= 6
                     and len(p) % 2 == 0]
            if not polys:
                raise ValueError(f"annotation {self.id}: no polygon with at least 3 points (x, y pairs)")
            return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            return mask_utils.frPyObjects(seg, height, width)
        if isinstance(seg, dict):
            counts = seg["counts"]
            return {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        raise ValueError(f"annotation {self.id}: unsupported segmentation type {type(seg).__name__}")

    def mask(self, height: int, width: int) -> np.ndarray:
        """The mask as a bool array of shape (height, width)."""
        from pycocotools import mask as mask_utils

        return mask_utils.decode(self.rle(height, width)).astype(bool)


@dataclass
class Dataset:
    """Images, categories and instances of one split, with the folder images are read from."""

    images: list[ImageInfo] = field(default_factory=list)
    categories: list[Category] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    image_root: Path | None = None
    split: str | None = None
    info: dict = field(default_factory=dict)
    source: Path | None = None  # the JSON file this was read from, for error messages

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_coco_dict(cls, d: dict, image_root: str | os.PathLike | None = None,
                       split: str | None = None, source: str | os.PathLike | None = None) -> Dataset:
        """Build from a COCO dict. Structural problems raise ``ValueError`` naming the file;
        content problems (bad polygons, out-of-bounds boxes…) are left for ``check_dataset``."""
        where = str(source) if source else "COCO dict"
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object with images/annotations/categories")
        for key in ("images", "annotations", "categories"):
            if key not in d:
                raise ValueError(f"{where}: missing top-level key '{key}'")
            if not isinstance(d[key], list):
                raise ValueError(f"{where}: '{key}' must be a list")
        images = []
        for i, im in enumerate(d["images"]):
            try:
                extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
                images.append(ImageInfo(int(im["id"]), str(im["file_name"]), int(im.get("width") or 0),
                                        int(im.get("height") or 0), extra))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{where}: images[{i}] is malformed ({e!r})") from e
        cats = []
        for i, c in enumerate(d["categories"]):
            try:
                cats.append(Category(int(c["id"]), str(c["name"]), str(c.get("supercategory", ""))))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{where}: categories[{i}] is malformed ({e!r})") from e
        insts = []
        for i, a in enumerate(d["annotations"]):
            try:
                extra = {k: v for k, v in a.items()
                         if k not in ("id", "image_id", "category_id", "segmentation", "bbox", "area", "iscrowd")}
                insts.append(Instance(
                    id=int(a["id"]), image_id=int(a["image_id"]), category_id=int(a["category_id"]),
                    segmentation=a.get("segmentation", []), bbox=list(a.get("bbox") or [0, 0, 0, 0]),
                    area=float(a.get("area", 0.0) if a.get("area") is not None else float("nan")),
                    iscrowd=int(a.get("iscrowd", 0) or 0), extra=extra))
            except (KeyError, TypeError, ValueError) as e:
                aid = a.get("id", "?") if isinstance(a, dict) else "?"
                raise ValueError(f"{where}: annotation id {aid} (annotations[{i}]) is malformed ({e!r})") from e
        info = {k: v for k, v in d.items() if k not in ("images", "annotations", "categories")}
        return cls(images, cats, insts, Path(image_root) if image_root else None, split, info,
                   Path(source) if source else None)

    @classmethod
    def load_coco(cls, json_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  split: str | None = None) -> Dataset:
        json_path = Path(json_path)
        if not json_path.is_file():
            raise FileNotFoundError(f"{json_path}: annotation file not found")
        return cls.from_coco_dict(read_json(json_path), image_root, split, source=json_path)

    @classmethod
    def load_paddlex(cls, dataset_dir: str | os.PathLike, split: str) -> Dataset:
        """One split of the PaddleX COCO layout; file names are relative to ``images/``'s parent
        or to ``images/`` (both conventions occur; ``image_path`` resolves either)."""
        dataset_dir = Path(dataset_dir)
        return cls.load_coco(dataset_dir / "annotations" / ANNOTATION_FILES[split], dataset_dir, split)

    # ------------------------------------------------------------------- output
    def to_coco_dict(self) -> dict:
        d = dict(self.info)
        d["images"] = [im.to_coco() for im in self.images]
        d["annotations"] = [a.to_coco() for a in self.instances]
        d["categories"] = [c.to_coco() for c in self.categories]
        return d

    def save_coco(self, json_path: str | os.PathLike) -> Path:
        """Write COCO JSON atomically (temporary file, then rename)."""
        return atomic_write_json(json_path, self.to_coco_dict())

    def to_pycocotools(self):
        """A ``pycocotools.coco.COCO`` index of this dataset (no file needed)."""
        import contextlib
        import io

        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = copy.deepcopy(self.to_coco_dict())
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"Dataset(split={self.split!r}, images={len(self.images)}, instances={len(self.instances)}, "
                f"categories={[c.name for c in self.categories]})")

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def category_by_id(self) -> dict[int, Category]:
        return {c.id: c for c in self.categories}

    def image_by_id(self) -> dict[int, ImageInfo]:
        return {im.id: im for im in self.images}

    def instances_by_image(self) -> dict[int, list[Instance]]:
        out: dict[int, list[Instance]] = {im.id: [] for im in self.images}
        for a in self.instances:
            out.setdefault(a.image_id, []).append(a)
        return out

    def image_path(self, image: ImageInfo | int) -> Path:
        """Where the image file is: ``file_name`` relative to the dataset dir, or to ``images/``."""
        if isinstance(image, int):
            image = self.image_by_id()[image]
        p = Path(image.file_name)
        if p.is_absolute() or self.image_root is None:
            return p
        direct = self.image_root / p
        if direct.exists():
            return direct
        in_images = self.image_root / "images" / p
        if in_images.exists():
            return in_images
        # missing: name it where the layout keeps images (``images/``), not beside the annotations
        if p.parts and p.parts[0] != "images" and (self.image_root / "images").is_dir():
            return in_images
        return direct

    def load_image(self, image: ImageInfo | int) -> np.ndarray:
        """RGB uint8 array; raises ``ValueError`` naming the file when it cannot be decoded."""
        return read_image_rgb(self.image_path(image))

    def masks(self, image: ImageInfo | int) -> tuple[list[Instance], np.ndarray]:
        """The instances of one image and their masks stacked as (N, H, W) bool."""
        if isinstance(image, int):
            image = self.image_by_id()[image]
        insts = self.instances_by_image().get(image.id, [])
        if not insts:
            return [], np.zeros((0, image.height, image.width), bool)
        return insts, np.stack([a.mask(image.height, image.width) for a in insts])

    def class_counts(self) -> dict[str, int]:
        names = {c.id: c.name for c in self.categories}
        counts = {c.name: 0 for c in self.categories}
        for a in self.instances:
            name = names.get(a.category_id, f"<unknown id {a.category_id}>")
            counts[name] = counts.get(name, 0) + 1
        return counts

    def subset(self, image_ids: Iterable[int], split: str | None = None) -> Dataset:
        """A new dataset with just these images (in the given order) and their instances."""
        ids = list(image_ids)
        wanted = set(ids)
        by_id = self.image_by_id()
        return Dataset(
            images=[copy.deepcopy(by_id[i]) for i in ids],
            categories=copy.deepcopy(self.categories),
            instances=[copy.deepcopy(a) for a in self.instances if a.image_id in wanted],
            image_root=self.image_root, split=split if split is not None else self.split,
            info=copy.deepcopy(self.info))

    @staticmethod
    def merge(datasets: list[Dataset], split: str | None = None) -> Dataset:
        """Concatenate splits that share one category list (ids must not collide)."""
        if not datasets:
            raise ValueError("merge needs at least one dataset")
        first = datasets[0]
        for d in datasets[1:]:
            if [(c.id, c.name) for c in d.categories] != [(c.id, c.name) for c in first.categories]:
                raise ValueError(f"cannot merge {d.source or d.split}: its categories differ from "
                                 f"{first.source or first.split}")
        out = Dataset(categories=copy.deepcopy(first.categories), image_root=first.image_root,
                      split=split, info=copy.deepcopy(first.info))
        seen_img: set[int] = set()
        seen_ann: set[int] = set()
        for d in datasets:
            for im in d.images:
                if im.id in seen_img:
                    raise ValueError(f"cannot merge: image id {im.id} appears in more than one split")
                seen_img.add(im.id)
                out.images.append(copy.deepcopy(im))
            for a in d.instances:
                if a.id in seen_ann:
                    raise ValueError(f"cannot merge: annotation id {a.id} appears in more than one split")
                seen_ann.add(a.id)
                out.instances.append(copy.deepcopy(a))
        return out

    def iter_images(self) -> Iterator[tuple[ImageInfo, list[Instance]]]:
        by_img = self.instances_by_image()
        for im in self.images:
            yield im, by_img.get(im.id, [])


HIGH_DEPTH_MODES = ("I", "F")  # and every "I;16*" mode: PIL's 16-bit, 32-bit integer and float images


def is_high_depth_mode(mode: str) -> bool:
    return mode in HIGH_DEPTH_MODES or mode.startswith("I;16")


def array_to_uint8(arr: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None]:
    """``arr`` as uint8: uint8 unchanged; any other type (16-bit, 32-bit, float) scaled linearly
    from the image's own range ``[min, max]`` to ``[0, 255]`` (NaN/inf become 0; an image of one
    value becomes 0). Returns the array and the range it was scaled from (``None``: unchanged).

    Why the image's own range and not the type's: 16-bit microscopy, depth and medical images
    rarely use the full 0..65535 (a 12-bit sensor gives 0..4095), so dividing by 257 would give a
    nearly black image; clipping to 255 (what ``PIL.Image.convert("RGB")`` does) an all-white one.
    """
    if arr.dtype == np.uint8:
        return arr, None
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255, (0.0, 1.0)
    a = arr.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        a[~finite] = np.nan
    if not finite.any():
        return np.zeros(arr.shape, np.uint8), (0.0, 0.0)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8), (lo, hi)
    out = np.rint((a - lo) * np.float32(255.0 / (hi - lo)))
    out[~finite] = 0
    return np.clip(out, 0, 255).astype(np.uint8), (lo, hi)


def image_to_rgb8(im) -> tuple[np.ndarray, dict]:
    """A decoded PIL image as an RGB uint8 array, and what was done to it.

    8-bit images (RGB, RGBA, L, P, CMYK …) go through ``PIL.Image.convert("RGB")``; 16-bit, 32-bit
    integer and float images (modes ``I;16*``, ``I``, ``F``) are scaled by their own range with
    :func:`array_to_uint8` (``info["scaled_from"] = [min, max]``) and repeated to three channels.
    (Pillow itself reads 16-bit RGB PNGs as 8-bit RGB, keeping each value's high byte.)"""
    info: dict = {"mode": im.mode}
    if is_high_depth_mode(im.mode):
        gray, rng = array_to_uint8(np.asarray(im))
        if gray.ndim == 3:
            gray = gray[..., 0]
        info["scaled_from"] = list(rng) if rng is not None else None
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1)), info
    return np.asarray(im.convert("RGB")), info


def read_image_rgb_info(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """:func:`read_image_rgb` and what the conversion did (``{"mode": PIL mode, "scaled_from":
    [min, max]}`` for 16-bit/float images)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return image_to_rgb8(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: unreadable or corrupt image ({e})") from e


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8, honouring EXIF orientation; errors name the file.

    The one image reader of the workbench (check, its sample overlays, training data of
    Mask-RT-DETR, predict, evaluation renderings, widgets). 16-bit, 32-bit and float images are
    scaled from their own ``[min, max]`` to ``[0, 255]`` (:func:`image_to_rgb8`), never clipped."""
    return read_image_rgb_info(path)[0]


def polygons_from_mask(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons (pixel-corner coordinates)."""
    import cv2

    m = np.ascontiguousarray(mask.astype(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2).astype(float)
        if len(c) < min_points:
            continue
        polys.append([float(v) for v in c.flatten()])
    return polys


def rle_from_mask(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def bbox_area_from_rle(rle: dict) -> tuple[list[float], float]:
    from pycocotools import mask as mask_utils

    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return [float(v) for v in mask_utils.toBbox(r)], float(mask_utils.area(r))
