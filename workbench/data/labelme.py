"""LabelMe -> PaddleX COCO layout conversion.

(One module of ~500 lines on purpose: reading, validating and converting LabelMe shapes share the
private ``_Record``/``_parse_file`` structures; it splits into reading and writing when LabelMe
files are also written, for pre-labelling.)

``convert_labelme(src_dir, dst_dir)`` reads a folder of LabelMe JSON files (LabelMe 3.x-5.x
schema) and writes::

    dst_dir/images/<image files>
    dst_dir/annotations/instance_train.json
    dst_dir/annotations/instance_val.json

Conventions (those of labelme's ``examples/instance_segmentation/labelme2coco.py`` unless said):

* one instance per ``(label, group_id)`` within an image; shapes without ``group_id`` are
  instances of their own. Several shapes of one instance become a multi-part polygon
  segmentation, or one merged RLE mask when a part is a ``mask`` shape;
* ``polygon`` as is, ``rectangle`` -> 4-corner polygon, ``circle`` -> polygon (at most 0.25 px
  from the true circle), ``mask`` -> the base64 PNG bitmap pasted at the integer top-left
  point, stored as RLE; ``line``, ``linestrip``, ``point`` and ``points`` describe no area and
  are skipped with a warning naming the file and the shape index;
* polygons, rectangles and circles reaching outside the image are clipped to it (``clip_polygon``:
  the mask stays the same, the coordinates become valid COCO); a shape with nothing of positive
  area left inside the image is skipped with a warning naming the file, shape index and label;
* ``area`` and ``bbox`` are computed from the rasterised mask with pycocotools, the same
  rasteriser that decodes the segmentation for training and evaluation. LabelMe coordinates
  are pixel-corner coordinates (pixel ``i`` spans ``[i, i+1)`` on LabelMe's canvas), which is
  the COCO convention, so the polygon is kept unchanged. (labelme2coco computes ``area`` from a
  PIL rasterisation, which treats integers as pixel centres and adds the outline: its areas
  are a boundary-pixel ring larger than its own polygons.)
* labels: from ``labels`` (a list or a ``labels.txt`` path), else from ``src_dir/labels.txt``
  if it exists, else every label found, ``sorted`` or in first-seen (``stable``) order.
  ``__ignore__`` and ``_background_`` lines of a labels file are not categories; category ids
  are 1..K in that order (so a labelme2coco-style labels.txt gives labelme2coco's ids).
* shapes labelled ``__ignore__`` are dropped (counted in the summary). A shape whose ``flags``
  has ``crowd`` or ``iscrowd`` true makes its instance a crowd region (``iscrowd=1``, RLE).
  An ``__ignore__`` region cannot become a crowd region: COCO crowd regions need a category.

Safety: every input is parsed and validated before anything is written, so bad input fails
with nothing changed. Images and annotation files are written atomically; existing annotation
files (and existing images whose content differs) are kept as ``.bak`` (``replace_with_backup``),
and they are replaced in one batch only after every new file exists completely beside them
(``replace_all_with_backup``): a conversion killed before that batch leaves the destination's
old dataset as it was, plus new images under new names and hidden temporary files, which the
next run removes. Input files are never modified.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.errors import DatasetError, WorkbenchError
from ..utils.io import (
    StagedFile,
    _json_default,
    atomic_write_bytes,
    read_json,
    remove_stale_temp_files,
    replace_all_with_backup,
    stage_file,
)
from .dataset import (
    ANNOTATION_FILES,
    SPLITS,
    Category,
    Dataset,
    ImageInfo,
    Instance,
    bbox_area_from_rle,
    image_to_rgb8,
)
from .split import SplitPlan

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
NON_AREA_SHAPES = ("line", "linestrip", "point", "points")
IMAGE_EXTS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "WEBP": ".webp"}
FORMAT_OF_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
                    ".tiff": "TIFF", ".gif": "GIF", ".webp": "WEBP"}
CIRCLE_TOLERANCE = 0.25  # px: largest gap between the circle and its polygon


class LabelmeError(WorkbenchError, ValueError):
    """Bad LabelMe input; the message names the JSON file (and shape index) and the problem."""


class LabelmeWarning(UserWarning):
    """Shapes that were skipped (no area, degenerate) during a conversion."""


@dataclass
class LabelmeConversion:
    """What ``convert_labelme`` made: the datasets per split, a summary, the files written."""

    datasets: dict[str, Dataset]
    summary: dict
    dst_dir: Path
    annotation_files: dict[str, Path] = field(default_factory=dict)
    backups: list[Path] = field(default_factory=list)
    written: dict[Path, str] = field(default_factory=dict)  # every file written -> its SHA-256 (``own_files``)

    def __getitem__(self, split: str) -> Dataset:
        return self.datasets[split]

    def __repr__(self) -> str:
        s = self.summary
        return (f"LabelmeConversion(images={s['images']}, instances={s['instances']}, "
                f"train={s['splits']['train']['images']}, val={s['splits']['val']['images']}, "
                f"categories={[c['name'] for c in s['categories']]}, skipped_shapes={len(s['skipped_shapes'])})")


# ---------------------------------------------------------------------------------- parsing
def read_labels_file(path: str | os.PathLike) -> list[str]:
    """Class names of a labelme ``labels.txt``: one per line; blank lines, ``__ignore__`` and
    ``_background_`` are not classes. Duplicates are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return _clean_label_list(names, str(path))


def _clean_label_list(names: Iterable[str], where: str) -> list[str]:
    out: list[str] = []
    for n in names:
        n = str(n).strip()
        if not n or n in (IGNORE_LABEL, BACKGROUND_LABEL):
            continue
        if n in out:
            raise LabelmeError(f"{where}: label {n!r} is listed twice")
        out.append(n)
    if not out:
        raise LabelmeError(f"{where}: no class names (only blank, {IGNORE_LABEL} or {BACKGROUND_LABEL} lines)")
    return out


def find_labelme_files(src_dir: str | os.PathLike) -> list[Path]:
    """LabelMe JSON files of a folder: ``src_dir/*.json``, or ``src_dir/annotations/*.json``
    (PaddleX's LabelMe layout) when the top level has none. COCO files are not included."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: LabelMe folder not found")
    candidates = sorted(src_dir.glob("*.json"))
    if not candidates:
        candidates = sorted(p for p in (src_dir / "annotations").glob("*.json")
                            if p.name not in ANNOTATION_FILES.values())
    return [p for p in candidates if not p.name.startswith(".")]


def _decode_b64(data: Any, what: str, where: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise LabelmeError(f"{where}: {what} is not a base64 string")
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as e:
        raise LabelmeError(f"{where}: {what} is not valid base64 ({e})") from e


def _image_size(data: bytes, where: str) -> tuple[int, int, str]:
    """(width, height, PIL format) of encoded image bytes, after EXIF orientation."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            fmt = im.format or "PNG"
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - broken EXIF: PIL's exif_transpose ignores it too
                orientation = 1
            im.load()  # decodes: a truncated/corrupt file fails here, not in training
            image_to_rgb8(im)  # the conversion every reader applies (16-bit/float: scaled by its range)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LabelmeError(f"{where}: unreadable image data ({e})") from e
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return w, h, fmt


def _points(shape: dict, where: str) -> np.ndarray:
    pts = shape.get("points")
    if not isinstance(pts, list):
        raise LabelmeError(f"{where}: 'points' must be a list of [x, y], got {type(pts).__name__}")
    try:
        arr = np.asarray(pts, dtype=float)
    except (TypeError, ValueError) as e:
        raise LabelmeError(f"{where}: 'points' are not numeric [x, y] pairs ({e})") from e
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise LabelmeError(f"{where}: 'points' must be a list of [x, y] pairs, got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise LabelmeError(f"{where}: 'points' contain NaN or infinite values")
    return arr


def circle_polygon(center: Sequence[float], radius: float, tolerance: float = CIRCLE_TOLERANCE) -> list[float]:
    """A closed polygon (flat xy) inscribed in the circle, at most ``tolerance`` px inside it."""
    if radius <= tolerance:
        n = 12
    else:
        n = max(12, int(math.ceil(math.pi / math.acos(1.0 - tolerance / radius))))
    t = 2 * math.pi * np.arange(n) / n
    xy = np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)
    return [float(v) for v in xy.ravel()]


def clip_polygon(xy: np.ndarray, w: float, h: float) -> np.ndarray:
    """The part of polygon ``xy`` (N x 2) inside the image ``[0, w] x [0, h]`` (Sutherland-Hodgman
    against the four borders; the clip region is convex, so the clipped region is exact: a concave
    polygon cut into pieces stays one polygon whose pieces are joined by zero-width edges along the
    border, which add no area). It rasterises to the same mask as the unclipped polygon.
    Consecutive repeated points are removed; the result may have fewer than 3 points."""
    pts = np.asarray(xy, float).reshape(-1, 2)
    for axis, bound, inside_is_ge in ((0, 0.0, True), (0, float(w), False), (1, 0.0, True), (1, float(h), False)):
        if len(pts) == 0:
            break
        inside = pts[:, axis] >= bound if inside_is_ge else pts[:, axis] <= bound
        out: list[np.ndarray] = []
        for k in range(len(pts)):
            cur, prev = pts[k], pts[k - 1]
            if inside[k] != inside[k - 1]:  # this edge crosses the border: add the crossing point
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                x = prev + t * (cur - prev)
                x[axis] = bound
                out.append(x)
            if inside[k]:
                out.append(cur)
        pts = np.asarray(out, float).reshape(-1, 2)
    if len(pts):
        keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
        pts = pts[keep] if keep.any() else pts[:1]
    return pts


def polygon_area(xy: np.ndarray) -> float:
    """Shoelace area of a polygon (N x 2)."""
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _clip_to_image(flat: list[float], w: int, h: int) -> tuple[list[float] | None, str | None]:
    """(polygon, None) kept as is or clipped to the image; (None, reason) when nothing with an
    area is left inside it."""
    xy = np.asarray(flat, float).reshape(-1, 2)
    if (xy >= 0).all() and (xy[:, 0] <= w).all() and (xy[:, 1] <= h).all():
        return flat, None
    c = clip_polygon(xy, w, h)
    if len(c) == 0:
        return None, f"entirely outside the {w}x{h} image"
    if len(c) < 3 or polygon_area(c) <= 1e-9:
        return None, (f"degenerate after clipping to the {w}x{h} image "
                      f"({len(c)} point(s), area {polygon_area(c) if len(c) >= 3 else 0:g})")
    return [float(v) for v in c.ravel()], "clipped"


def _decode_mask_png(shape: dict, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    raw = _decode_b64(shape.get("mask"), "'mask'", where)
    try:
        with Image.open(io.BytesIO(raw)) as im:
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LabelmeError(f"{where}: 'mask' is not a readable PNG ({e})") from e
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[2] < 4 else arr[..., 3]
    return arr.astype(bool)


@dataclass
class _Part:
    kind: str  # "poly" or "mask"
    poly: list[float] | None = None
    mask_rle: dict | None = None


def _shape_part(shape: dict, shape_type: str, where: str, w: int, h: int) -> tuple[_Part | None, str | None]:
    """One area shape as a polygon (clipped to the image) or a full-image RLE, and ``"clipped"``
    when its polygon was clipped; ``(None, reason)`` when nothing with an area is left in the image."""
    if shape_type == "mask":
        return _mask_part(shape, where, w, h), None
    pts = _points(shape, where)
    if shape_type == "polygon":
        if len(pts) < 3:
            raise LabelmeError(f"{where}: polygon has {len(pts)} point(s); at least 3 are needed")
        flat = [float(v) for v in pts.ravel()]
    elif shape_type == "rectangle":
        if len(pts) not in (2, 4):
            raise LabelmeError(f"{where}: rectangle needs 2 corner points, got {len(pts)}")
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        flat = [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]
    elif shape_type == "circle":
        if len(pts) != 2:
            raise LabelmeError(f"{where}: circle needs 2 points (centre, point on the circle), got {len(pts)}")
        r = float(np.hypot(*(pts[1] - pts[0])))
        flat = circle_polygon(pts[0], r)
    else:
        raise AssertionError(shape_type)
    poly, note = _clip_to_image(flat, w, h)
    return (_Part("poly", poly) if poly is not None else None), note


def _mask_part(shape: dict, where: str, w: int, h: int) -> _Part:
    """A ``mask`` shape: its bitmap pasted into a full-image RLE (the part outside is cut off)."""
    from pycocotools import mask as mask_utils

    pts = _points(shape, where)
    if len(pts) != 2:
        raise LabelmeError(f"{where}: mask shape needs 2 points (top-left, bottom-right), got {len(pts)}")
    bitmap = _decode_mask_png(shape, where)
    full = np.zeros((h, w), np.uint8)
    x0, y0 = (int(v) for v in pts.min(axis=0))  # labelme casts the corner with int()
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1 = min(w, x0 + bitmap.shape[1])
    dy1 = min(h, y0 + bitmap.shape[0])
    if dx1 > dx0 and dy1 > dy0:
        full[dy0:dy1, dx0:dx1] = bitmap[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    return _Part("mask", mask_rle=mask_utils.encode(np.asfortranarray(full)))


def _instance_geometry(parts: list[_Part], crowd: bool, h: int, w: int) -> tuple[Any, list[float], float]:
    """(segmentation, bbox, area) of one instance from its parts."""
    from pycocotools import mask as mask_utils

    polys = [p.poly for p in parts if p.kind == "poly"]
    rles = mask_utils.frPyObjects(polys, h, w) if polys else []
    rles = list(rles) + [p.mask_rle for p in parts if p.kind == "mask"]
    merged = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    bbox, area = bbox_area_from_rle(merged)
    if crowd or any(p.kind == "mask" for p in parts):
        seg = {"size": [int(v) for v in merged["size"]], "counts": merged["counts"].decode("ascii")}
    else:
        seg = polys
    return seg, bbox, area


@dataclass
class _Record:
    json_path: Path
    image_bytes: bytes | None  # from imageData
    image_src: Path | None  # from imagePath
    image_ext: str
    width: int
    height: int
    # instance key -> dict(label, crowd, parts, shape_indices)
    instances: list[dict]
    image_name_hint: str | None = None  # imagePath's file name, for embedded images
    out_name: str = ""


def _parse_file(json_path: Path, labels_allowed: set[str] | None, skipped: list[dict],
                ignored: list[dict], clipped: list[dict] | None = None) -> _Record:
    where = str(json_path)
    d = read_json(json_path)
    if not isinstance(d, dict) or not isinstance(d.get("shapes"), list):
        raise LabelmeError(f"{where}: not a LabelMe file (no 'shapes' list)")
    image_data = d.get("imageData")
    image_path = d.get("imagePath")
    img_bytes: bytes | None = None
    img_src: Path | None = None
    if image_data:
        img_bytes = _decode_b64(image_data, "'imageData'", where)
        w, h, fmt = _image_size(img_bytes, f"{where}: 'imageData'")
        suffix = Path(str(image_path).replace("\\", "/")).suffix.lower() if isinstance(image_path, str) else ""
        ext = suffix if suffix and FORMAT_OF_SUFFIX.get(suffix) == fmt else IMAGE_EXTS.get(fmt, ".png")
    else:
        if not image_path or not isinstance(image_path, str):
            raise LabelmeError(f"{where}: no 'imageData' and no 'imagePath': the image is missing")
        rel = Path(image_path.replace("\\", "/"))  # LabelMe on Windows writes backslashes
        cand = [rel if rel.is_absolute() else json_path.parent / rel, json_path.parent / rel.name,
                json_path.parent.parent / "images" / rel.name]
        img_src = next((c for c in cand if c.is_file()), None)
        if img_src is None:
            raise LabelmeError(f"{where}: image file not found: imagePath {image_path!r} "
                               f"(looked for {', '.join(str(c) for c in dict.fromkeys(cand))})")
        with open(img_src, "rb") as f:
            w, h, _ = _image_size(f.read(), f"{where}: image {img_src}")
        ext = img_src.suffix.lower() or ".png"
    jw, jh = d.get("imageWidth"), d.get("imageHeight")
    if jw is not None and jh is not None and (int(jw), int(jh)) != (w, h):
        raise LabelmeError(f"{where}: imageWidth x imageHeight is {jw}x{jh} but the image is {w}x{h}")

    groups: dict[tuple, dict] = {}
    for i, s in enumerate(d["shapes"]):
        sw = f"{where}: shape {i}"
        if not isinstance(s, dict):
            raise LabelmeError(f"{sw}: expected an object, got {type(s).__name__}")
        label = s.get("label")
        if not isinstance(label, str) or not label.strip():
            raise LabelmeError(f"{sw}: missing or empty 'label'")
        label = label.strip()
        sw = f"{where}: shape {i} ({label!r})"
        shape_type = s.get("shape_type") or "polygon"
        if shape_type in NON_AREA_SHAPES:
            skipped.append({"file": where, "shape_index": i, "label": label, "shape_type": shape_type,
                            "reason": f"{shape_type} shapes have no area"})
            continue
        if shape_type not in AREA_SHAPES:
            raise LabelmeError(f"{sw}: unknown shape_type {shape_type!r} (known: "
                               f"{', '.join(AREA_SHAPES + NON_AREA_SHAPES)})")
        if label == IGNORE_LABEL:
            ignored.append({"file": where, "shape_index": i, "shape_type": shape_type})
            continue
        if labels_allowed is not None and label not in labels_allowed:
            raise LabelmeError(f"{sw}: label {label!r} is not in the labels list "
                               f"({', '.join(sorted(labels_allowed))})")
        part, note = _shape_part(s, shape_type, sw, w, h)
        if part is None:  # nothing with an area inside the image
            skipped.append({"file": where, "shape_index": i, "label": label, "shape_type": shape_type,
                            "reason": note})
            continue
        if note == "clipped" and clipped is not None:
            clipped.append({"file": where, "shape_index": i, "label": label, "shape_type": shape_type})
        gid = s.get("group_id")
        key = (label, gid) if gid is not None else (label, ("shape", i))
        flags = s.get("flags") or {}
        crowd = bool(isinstance(flags, dict) and (flags.get("crowd") or flags.get("iscrowd")))
        g = groups.setdefault(key, {"label": label, "group_id": gid, "crowd": False, "parts": [],
                                    "shapes": []})
        g["parts"].append(part)
        g["shapes"].append(i)
        g["crowd"] = g["crowd"] or crowd
    hint = Path(str(image_path).replace("\\", "/")).name if isinstance(image_path, str) and image_path else None
    return _Record(json_path, img_bytes, img_src, ext, w, h, list(groups.values()), hint)


# ------------------------------------------------------------------------------- conversion
def _resolve_labels(src_dir: Path, labels, label_order: str) -> tuple[list[str] | None, str]:
    """The class names (``None``: from the shapes, in ``label_order``) and where they came from."""
    if labels is None and (src_dir / "labels.txt").is_file():
        labels = src_dir / "labels.txt"
    if labels is None:
        return None, label_order
    if isinstance(labels, (str, os.PathLike)):
        return read_labels_file(labels), str(labels)
    return _clean_label_list(labels, "labels"), "list"


def _assign_output_names(records: list) -> None:
    """``out_name`` of each record's image; same-named images from different folders are renamed."""
    used: Counter = Counter()
    for r in records:
        name = r.image_src.name if r.image_src is not None else r.json_path.stem + r.image_ext
        if r.image_src is None and r.image_name_hint:
            name = Path(r.image_name_hint).stem + r.image_ext
        used[name.lower()] += 1
        r.out_name = name
    for r in records:  # two JSONs pointing at same-named images in different folders
        if used[r.out_name.lower()] > 1:
            r.out_name = r.json_path.stem + r.image_ext


def _images_and_instances(records: list, cat_id: dict, skipped: list) -> tuple[list, list]:
    images: list[ImageInfo] = []
    instances: list[Instance] = []
    for image_id, r in enumerate(records, start=1):
        images.append(ImageInfo(image_id, r.out_name, r.width, r.height))
        for g in r.instances:
            seg, bbox, area = _instance_geometry(g["parts"], g["crowd"], r.height, r.width)
            if area <= 0:
                skipped.append({"file": str(r.json_path), "shape_index": g["shapes"][0] if len(g["shapes"]) == 1
                                else g["shapes"], "label": g["label"], "shape_type": "instance",
                                "reason": "empty mask (degenerate or outside the image)"})
                continue
            extra = {"labelme_shapes": g["shapes"]}
            if g["group_id"] is not None:
                extra["labelme_group_id"] = g["group_id"]
            instances.append(Instance(len(instances) + 1, image_id, cat_id[g["label"]], seg, bbox, area,
                                      int(g["crowd"]), extra))
    return images, instances


def _write_images(records: list, img_dir: Path, progress: bool, written: dict | None = None) -> list[StagedFile]:
    """Copy each record's image bytes (as they are: a 16-bit PNG stays 16-bit, and every reader
    converts it the same way, ``dataset.read_image_rgb``). New images are written now (atomically);
    the new content of an existing image that differs is only staged (a hidden temporary file), and
    returned: it replaces the old image together with the annotation files, so the destination's
    old annotation files never name a new image's content."""
    from tqdm.auto import tqdm

    staged: list[StagedFile] = []
    try:
        for r in tqdm(records, desc="writing images", unit="img", disable=not progress):
            dest = img_dir / r.out_name
            if r.image_src is not None and dest.exists() and os.path.samefile(dest, r.image_src):
                continue
            data = r.image_bytes if r.image_bytes is not None else r.image_src.read_bytes()
            if dest.exists():
                if dest.read_bytes() == data:
                    continue
                staged.append(stage_file(dest, data))
            else:
                atomic_write_bytes(dest, data)
            if written is not None:
                written[dest] = hashlib.sha256(data).hexdigest()
    except BaseException:
        for f in staged:
            f.discard()
        raise
    return staged


def _check_destination(dst_dir: Path) -> None:
    """The destination and its images/ and annotations/ must be folders (or not exist yet)."""
    for p in (dst_dir, dst_dir / "images", dst_dir / "annotations"):
        if p.exists() and not p.is_dir():
            raise DatasetError(f"{p}: the conversion's destination {'' if p == dst_dir else 'folder '}is an "
                               "existing file, not a folder; give --dst a folder (new or holding a dataset)")
        if not p.exists():
            break


def convert_labelme(src_dir: str | os.PathLike, dst_dir: str | os.PathLike | None = None, *,
                    labels: str | os.PathLike | Sequence[str] | None = None,
                    label_order: str = "sorted", val_percent: float = 20, seed: int = 0,
                    progress: bool = True, warn: bool = True, min_val: int = 0,
                    verbose: bool = True, own_files: Mapping[str | os.PathLike, str] | None = None
                    ) -> LabelmeConversion:
    """Convert the LabelMe folder ``src_dir`` to the PaddleX COCO layout in ``dst_dir``.

    ``dst_dir`` defaults to ``src_dir`` (PaddleX's in-place conversion; earlier annotation
    files are kept as ``.bak``). ``labels``: a list of class names or a ``labels.txt`` path;
    by default ``src_dir/labels.txt`` if present, else all labels in ``label_order``
    (``"sorted"`` or ``"stable"`` = first seen, files in name order). ``val_percent`` of the
    images (class-stratified, seeded) go to val; ``0`` puts everything in train. A val split
    that would be empty is an error stating what is missing, unless ``min_val=N`` puts N images
    there (``data.split.make_split_plan``; said in a printed line and ``summary["forced_val"]``).
    Polygons, rectangles and circles reaching outside the image are clipped to it; a shape with
    nothing left inside is skipped with a warning (``summary["clipped_shapes"]``/``["skipped_shapes"]``).
    With ``verbose``, one line says which earlier files of the destination were kept as ``.bak``
    and which temporary files of an interrupted run were removed. ``own_files``: path -> SHA-256 of
    files this caller wrote earlier (``LabelmeConversion.written`` of its previous runs: the convert
    panel re-run in one session); those still unchanged are replaced without another ``.bak``.
    Returns a :class:`LabelmeConversion` (``.datasets["train"|"val"]``, ``.summary``).
    Raises :class:`LabelmeError` naming file and shape index for bad input, before writing.
    """
    from tqdm.auto import tqdm

    from .split import forced_val_note, make_split_plan

    src_dir = Path(src_dir)
    dst_dir = Path(dst_dir) if dst_dir is not None else src_dir
    _check_destination(dst_dir)
    if label_order not in ("sorted", "stable"):
        raise ValueError(f"label_order must be 'sorted' or 'stable', got {label_order!r}")
    if not 0 <= float(val_percent) < 100:
        raise ValueError(f"val_percent must be in [0, 100), got {val_percent}")
    files = find_labelme_files(src_dir)
    if not files:
        raise LabelmeError(f"{src_dir}: no LabelMe JSON files (looked for *.json and annotations/*.json)")

    class_names, label_source = _resolve_labels(src_dir, labels, label_order)

    # 1) parse and validate everything; nothing is written before this succeeds
    skipped: list[dict] = []
    ignored: list[dict] = []
    clipped: list[dict] = []
    allowed = set(class_names) if class_names is not None else None
    records = [_parse_file(p, allowed, skipped, ignored, clipped)
               for p in tqdm(files, desc="reading LabelMe", unit="file", disable=not progress)]
    if class_names is None:
        seen = list(dict.fromkeys(g["label"] for r in records for g in r.instances))
        class_names = sorted(seen) if label_order == "sorted" else seen
        if not class_names:
            raise LabelmeError(f"{src_dir}: no labelled area shapes in {len(files)} file(s)")
    cat_id = {n: i + 1 for i, n in enumerate(class_names)}
    categories = [Category(cat_id[n], n) for n in class_names]

    _assign_output_names(records)
    images, instances = _images_and_instances(records, cat_id, skipped)
    info = {"info": {"description": f"converted from LabelMe folder {src_dir.name}",
                     "label_source": label_source}}
    full = Dataset(images, categories, instances, image_root=dst_dir, info=info)
    if val_percent > 0:
        plan = make_split_plan(full, float(val_percent), seed, min_val, where=str(src_dir))
    else:
        plan = SplitPlan([im.id for im in images], [])
    train_ids, val_ids = plan.train_ids, plan.val_ids
    by_image = full.instances_by_image()
    img_by_id = full.image_by_id()
    datasets = {s: Dataset([img_by_id[i] for i in ids], list(categories), [a for i in ids for a in by_image[i]],
                           image_root=dst_dir, split=s, info=info)
                for s, ids in (("train", train_ids), ("val", val_ids))}  # no copies: each belongs to one split

    # compact JSON (as PaddleX writes it): json's C encoder, ~10x faster than indent=2
    texts = {s: json.dumps(datasets[s].to_coco_dict(), ensure_ascii=False,
                           default=_json_default).encode("utf-8") for s in SPLITS}

    # 2) images: atomically, never over an input file, never losing a differing file; a differing
    # existing image is only staged here, and replaced in step 3
    removed = [p for sub in ("images", "annotations") for p in remove_stale_temp_files(dst_dir / sub)]
    written: dict[Path, str] = {}
    staged_images = _write_images(records, dst_dir / "images", progress, written)

    # 3) annotation files and differing images: everything new is complete on disk before the
    # first old file is replaced (all or nothing on an error)
    ann_files = {s: dst_dir / "annotations" / ANNOTATION_FILES[s] for s in SPLITS}
    backups = replace_all_with_backup({**{ann_files[s]: texts[s] for s in SPLITS},
                                       **{f.target: f for f in staged_images}}, own=own_files)
    written.update({ann_files[s]: hashlib.sha256(texts[s]).hexdigest() for s in SPLITS})
    for s in SPLITS:
        datasets[s].source = ann_files[s]

    def split_summary(ds: Dataset) -> dict:
        return {"images": len(ds.images), "instances": len(ds.instances), "class_counts": ds.class_counts()}

    summary = {
        "src_dir": str(src_dir), "dst_dir": str(dst_dir), "label_source": label_source, "val_percent": val_percent,
        "images": len(images), "instances": len(instances),
        "categories": [c.to_coco() for c in categories], "class_counts": full.class_counts(),
        "crowd_instances": sum(a.iscrowd for a in instances),
        "multi_part_instances": sum(1 for a in instances if len(a.extra["labelme_shapes"]) > 1),
        "ignored_shapes": len(ignored), "skipped_shapes": skipped, "clipped_shapes": clipped,
        "splits": {s: split_summary(datasets[s]) for s in SPLITS},
        "annotation_files": {s: str(p) for s, p in ann_files.items()}, "backups": [str(b) for b in backups],
        "removed_temp_files": [str(p) for p in removed],
        "forced_val": [img_by_id[i].file_name for i in plan.forced_val_ids],
    }
    if verbose:
        if backups:
            print(f"{dst_dir} already held a dataset: replaced {len(backups)} file(s), the old ones kept as "
                  + ", ".join(str(b.relative_to(dst_dir)) for b in backups))
        if removed:
            print(f"removed {len(removed)} temporary file(s) of an interrupted run: "
                  + ", ".join(str(p.relative_to(dst_dir)) for p in removed))
    if plan.forced_val_ids:
        print(forced_val_note(full, plan, min_val))
    if skipped and warn:
        lines = [f"  {x['file']}: shape {x['shape_index']} ({x['label']!r}, {x['shape_type']}): {x['reason']}"
                 for x in skipped]
        more = f"\n  … and {len(lines) - 20} more" if len(lines) > 20 else ""
        warnings.warn(f"{len(skipped)} LabelMe shape(s) skipped:\n" + "\n".join(lines[:20]) + more,
                      LabelmeWarning, stacklevel=2)
    return LabelmeConversion(datasets, summary, dst_dir, ann_files, backups, written)
