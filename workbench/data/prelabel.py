"""Pre-labelling: a model's predictions written as LabelMe JSON files, to correct in labelme.

The labelling loop: label a few images, ``convert``, train, then ``pre_label`` the rest, correct
them in labelme, ``convert`` again and retrain. ``pre_label(model, images, dst)`` writes one LabelMe
file per image (``dst/<image file stem>.json``: the layout ``labelme IMAGES --output DST`` reads and
writes, one flat folder keyed by the image's base name)::

    {"version": ..., "flags": {}, "shapes": [...], "imagePath": <image, relative to the JSON>,
     "imageData": null, "imageHeight": H, "imageWidth": W, "prelabel": {model, threshold, ...}}

Per predicted instance (score >= ``threshold``):

* its mask becomes polygons (``mask_to_polygons``): OpenCV ``findContours`` traces the mask (on a
  4x nearest-upsampled copy, so the traced outline lies on the pixel edges, LabelMe's and COCO's
  pixel-corner convention, not through the boundary pixels' centres, which would lose half a pixel
  all round), simplified with ``approxPolyDP`` at ``tolerance`` pixels (0: the exact pixel outline);
* a mask of several separate parts gives one ``polygon`` shape per part, all with the same
  ``group_id`` (``convert`` joins shapes of one label and group into one instance); a single-part
  instance has ``group_id: null``;
* holes (``holes="cut"``, the default): each hole is cut into its part's polygon through a
  zero-width seam from the outer outline to the hole and back (a "keyhole" polygon), so the shape
  stays one editable polygon and rasterises (even-odd, as pycocotools does in ``convert``) to the
  part minus the hole; ``holes="fill"`` keeps only the outer outlines (holes become foreground).
  An object lying inside another part's hole is a part of its own;
* ``label``: the model's class name; the score in ``description`` (``"score=0.873"``); ``flags``
  stays ``{}`` (labelme shows flags as check boxes: booleans only).

Safety: an existing JSON in ``dst`` (a person's corrections) is never replaced unless
``overwrite=True``; then it is kept as ``.bak`` first (``utils.io.replace_with_backup``). Every file
is written atomically; temporary files of an interrupted run in ``dst`` are removed first.
Images whose target JSON exists are not predicted at all (unless ``overwrite``).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.result import tight_crop
from ..utils.io import atomic_write_json, remove_stale_temp_files, replace_json_with_backup

LABELME_VERSION = "6.3.1"  # the release pinned by the ``label`` extra (pyproject.toml)
UPSAMPLE = 4  # trace contours at 4x: the outline is within 1/8 px of the pixel edges, then snapped onto them
HOLES = ("cut", "fill")


class PreLabelWarning(UserWarning):
    """Images not pre-labelled (a base name taken twice) or instances that gave no polygon."""


# ------------------------------------------------------------------------------- geometry
def _trace(crop: np.ndarray, mode: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    import cv2

    up = np.kron(np.asarray(crop, np.uint8), np.ones((UPSAMPLE, UPSAMPLE), np.uint8))
    up = np.pad(up, 1)  # a part touching the crop's border is still closed by the contour
    contours, hierarchy = cv2.findContours(up, mode, cv2.CHAIN_APPROX_NONE)
    return list(contours), (None if hierarchy is None else hierarchy[0])


def _to_image_xy(contour: np.ndarray, tolerance: float, y0: int, x0: int) -> np.ndarray:
    """An upsampled contour (pixel centres of the padded 4x crop) as image pixel-corner points,
    simplified at ``tolerance`` px; consecutive repeats removed."""
    import cv2

    c = contour
    if tolerance > 0:
        s = cv2.approxPolyDP(contour, float(tolerance) * UPSAMPLE, True)
        c = s if len(s) >= 3 else contour
    p = c.reshape(-1, 2).astype(np.float64) - 1.0  # undo the padding
    # the centre of upsampled pixel u sits at (u + 0.5) / 4 in crop coordinates: 1/8 px inside the
    # pixel edge; rounding to the nearest 1/2 px puts edge points onto the edge itself
    p = np.round((p + 0.5) / UPSAMPLE * 2.0) / 2.0 + (x0, y0)
    keep = np.any(p != np.roll(p, 1, axis=0), axis=1)
    return p[keep] if keep.any() else p[:1]


def _keyhole(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """``outer`` with each hole joined in through a zero-width seam (outer vertex -> nearest hole
    vertex, around the hole, back): one ring whose even-odd fill is the outer region minus the holes."""
    ring = outer
    for h in holes:
        d = ((ring[:, None, :] - h[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        hole = np.concatenate([h[j:], h[:j + 1]])  # starts and ends at the seam's hole vertex
        ring = np.concatenate([ring[:i + 1], hole, ring[i:i + 1], ring[i + 1:]])
    return ring


def _polygons_at(mask: np.ndarray, tolerance: float, holes: str) -> list[np.ndarray]:
    import cv2

    contours, hier = _trace(mask, cv2.RETR_EXTERNAL if holes == "fill" else cv2.RETR_CCOMP)
    out: list[np.ndarray] = []
    for k, c in enumerate(contours):
        if hier is not None and hier[k][3] >= 0:
            continue  # a hole: joined to its outer outline below
        outer = _to_image_xy(c, tolerance, 0, 0)
        if len(outer) < 3:
            continue
        inner = []
        if hier is not None:
            child = hier[k][2]
            while child >= 0:
                h = _to_image_xy(contours[child], tolerance, 0, 0)
                if len(h) >= 3:
                    inner.append(h)
                child = hier[child][0]
        out.append(_keyhole(outer, inner) if inner else outer)
    return out


def polygons_iou(polygons: list[np.ndarray], mask: np.ndarray) -> float:
    """IoU of ``mask`` (H, W) and the polygons (pixel-corner x, y) rasterised as ``convert`` does
    (pycocotools, shapes of one instance joined)."""
    from pycocotools import mask as mask_utils

    h, w = mask.shape
    if not polygons:
        drawn = np.zeros((h, w), bool)
    else:
        rles = mask_utils.frPyObjects([[float(v) for v in p.ravel()] for p in polygons], h, w)
        drawn = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    union = np.logical_or(drawn, mask).sum()
    return float(np.logical_and(drawn, mask).sum() / union) if union else 1.0


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0, holes: str = "cut", y0: int = 0,
                     x0: int = 0, min_iou: float | None = 0.97) -> list[np.ndarray]:
    """The polygons (each an (N, 2) array of x, y in image pixel-corner coordinates) of a binary mask
    (or a crop of one at rows ``y0:``, columns ``x0:``): one per connected part (8-connected), its
    holes cut in through a zero-width seam (``holes="cut"``) or filled (``"fill"``), each outline
    simplified with ``approxPolyDP`` at ``tolerance`` px (0: the exact pixel outline, which
    rasterises back to the mask itself). Parts that leave fewer than 3 points are dropped.

    ``min_iou``: when the simplified polygons rasterise to less than this IoU with the mask (a small
    instance, where a 1 px chord cuts off a large share), the tolerance is halved until they do
    (down to the exact outline); ``None``: ``tolerance`` as given, whatever the IoU."""
    if holes not in HOLES:
        raise ValueError(f"holes must be one of {', '.join(HOLES)}, not {holes!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 px, got {tolerance}")
    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    _, _, crop = tight_crop(mask)
    cy, cx = (int(np.flatnonzero(mask.any(1))[0]), int(np.flatnonzero(mask.any(0))[0]))
    target = crop if holes == "cut" else _filled(crop)  # what the exact outline draws
    t = float(tolerance)
    polys = _polygons_at(crop, t, holes)
    while min_iou is not None and t > 0 and polygons_iou(polys, target) < min_iou:
        t = t / 2 if t > 0.125 else 0.0
        polys = _polygons_at(crop, t, holes)
    return [p + (x0 + cx, y0 + cy) for p in polys]


def _filled(crop: np.ndarray) -> np.ndarray:
    """``crop`` with its holes filled (what ``holes="fill"`` draws at tolerance 0)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(crop, structure=np.ones((3, 3), bool))


# ------------------------------------------------------------------------------- LabelMe files
def result_to_labelme(result, json_path: str | os.PathLike, image_path: str | os.PathLike | None = None,
                      tolerance: float = 1.0, holes: str = "cut", extra: dict | None = None) -> dict:
    """The LabelMe dict of one ``Result`` (see the module doc), ``imagePath`` relative to ``json_path``."""
    json_path = Path(json_path)
    image_path = Path(image_path if image_path is not None else result.input_path)
    rel = os.path.relpath(os.path.abspath(image_path), os.path.abspath(json_path.parent))
    h, w = result.image_size
    shapes: list[dict] = []
    empty = 0
    group = 0
    for i in range(len(result)):
        y0, x0, crop = result.mask_crop(i)
        polys = mask_to_polygons(crop, tolerance, holes, y0, x0)
        if not polys:
            empty += 1
            continue
        gid = None
        if len(polys) > 1:
            group += 1
            gid = group
        for p in polys:
            shapes.append({
                "label": str(result.class_names[i]),
                "points": [[float(x), float(y)] for x, y in p],
                "group_id": gid,
                "description": f"score={float(result.scores[i]):.4f}",
                "shape_type": "polygon",
                "flags": {},
                "mask": None,
            })
    d = {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": Path(rel).as_posix(),
        "imageData": None,
        "imageHeight": int(h),
        "imageWidth": int(w),
    }
    if extra is not None:
        d["prelabel"] = {**extra, "instances": len(result) - empty, "instances_without_polygon": empty}
    return d


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "predict") and callable(obj.predict)


def _plan_targets(images, dst: Path, recursive: bool) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """(image, target JSON) per image of ``images``; images whose base name an earlier one took are
    left out (``dst`` is flat, as labelme's ``--output`` folder)."""
    from ..engine.inputs import predict_inputs

    pairs: list[tuple[Path, Path]] = []
    dropped: list[dict] = []
    taken: dict[str, Path] = {}
    for x in predict_inputs(images, recursive):
        if not isinstance(x.item, (str, os.PathLike)):
            raise ValueError("pre_label needs image files (a LabelMe file names its image), not arrays")
        p = Path(x.item)
        key = p.stem.lower()
        if key in taken:
            dropped.append({"input": str(p), "reason": f"same base name as {taken[key]} (one {dst}/{p.stem}.json)"})
            continue
        taken[key] = p
        pairs.append((p, dst / f"{p.stem}.json"))
    return pairs, dropped


def pre_label(model, images=None, dst: str | os.PathLike | None = None, *, threshold: float = 0.5,
              mask_threshold: float = 0.5, tolerance: float = 1.0, holes: str = "cut", overwrite: bool = False,
              recursive: bool = True, batch_size: int = 1, progress: bool | None = None,
              verbose: bool = True) -> dict:
    """Write one LabelMe JSON per image into ``dst`` from predictions (module doc).

    ``model``: a model (``workbench.create_model(...)``: it predicts ``images``, an image, a folder or
    a list of them) or an iterable of ``Result`` objects (their ``input_path`` names the image;
    ``images`` is then not needed). ``dst`` defaults to the images' folder (the JSON beside each image,
    labelme's default layout). Instances with ``score >= threshold`` become shapes.
    An existing ``dst/<stem>.json`` is skipped unless ``overwrite`` (then kept as ``.bak``).

    Returns a summary: ``written`` (JSON paths), ``skipped`` (existing JSONs left alone), ``backups``,
    ``failed`` (unreadable images), ``dropped`` (base name taken twice), ``instances``, ``dst``."""
    is_model = _is_model(model)
    dst = _destination(is_model, images, dst, holes, tolerance)
    summary: dict = {"dst": str(dst), "written": [], "skipped": [], "backups": [], "failed": [], "dropped": [],
                     "instances": 0}
    extra = {"model_name": getattr(model, "name", None) if is_model else None, "threshold": float(threshold),
             "mask_threshold": float(mask_threshold), "tolerance": float(tolerance), "holes": holes}
    dst.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(dst)

    preds = None
    if is_model:
        preds, results = _model_results(model, images, dst, overwrite, summary, recursive=recursive,
                                        batch_size=batch_size, threshold=threshold, mask_threshold=mask_threshold,
                                        progress=progress)
    else:
        results = _results_with_targets(model, dst, overwrite, summary)

    for r, target in results:
        if float(threshold) > 0:
            r = r.filter(threshold=threshold)
        if extra["model_name"] is None and getattr(r, "model_name", None):
            extra["model_name"] = r.model_name
        d = result_to_labelme(r, target, tolerance=tolerance, holes=holes, extra=extra)
        if target.exists():
            bak = replace_json_with_backup(target, d)
            if bak is not None:
                summary["backups"].append(str(bak))
        else:
            atomic_write_json(target, d)
        summary["written"].append(str(target))
        summary["instances"] += d["prelabel"]["instances"]
    if preds is not None:
        summary["failed"] = list(getattr(preds, "failed", []))
    if summary["dropped"]:
        warnings.warn(f"{len(summary['dropped'])} image(s) not pre-labelled: "
                      + "; ".join(f"{x['input']}: {x['reason']}" for x in summary["dropped"][:10]),
                      PreLabelWarning, stacklevel=2)
    if verbose:
        print(_summary_line(summary, overwrite))
    return summary


def _destination(is_model: bool, images, dst, holes: str, tolerance: float) -> Path:
    if holes not in HOLES:
        raise ValueError(f"holes must be one of {', '.join(HOLES)}, not {holes!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 px, got {tolerance}")
    if is_model and images is None:
        raise ValueError("pre_label(model, images, dst): name the images to pre-label")
    if dst is None:
        if not isinstance(images, (str, os.PathLike)) or not Path(images).exists():
            raise ValueError("pre_label: give dst (the LabelMe folder to write)")
        dst = Path(images) if Path(images).is_dir() else Path(images).parent
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"{dst}: the pre-label destination is a file, not a folder")
    return dst


def _model_results(model, images, dst: Path, overwrite: bool, summary: dict, recursive: bool, **predict_kw):
    """(the model's ``Predictions``, an iterator of (Result, target)): only the images whose target
    is to be written are predicted."""
    pairs, summary["dropped"] = _plan_targets(images, dst, recursive)
    todo = []
    for img, target in pairs:
        if target.exists() and not overwrite:
            summary["skipped"].append(str(target))
        else:
            todo.append((img, target))
    if not todo:
        return None, iter(())
    target_of = {str(img): target for img, target in todo}
    preds = model.predict([str(img) for img, _ in todo], **predict_kw)
    return preds, ((r, target_of[str(r.input_path)]) for r in preds)


def _results_with_targets(results: Iterable, dst: Path, overwrite: bool, summary: dict):
    taken: dict[str, str] = {}
    for r in results:
        if r.input_path is None:
            raise ValueError("pre_label: a Result without input_path (an array) names no image for LabelMe")
        stem = Path(r.input_path).stem
        if stem.lower() in taken:
            summary["dropped"].append({"input": r.input_path,
                                       "reason": f"same base name as {taken[stem.lower()]} (one {dst}/{stem}.json)"})
            continue
        taken[stem.lower()] = r.input_path
        target = dst / f"{stem}.json"
        if target.exists() and not overwrite:
            summary["skipped"].append(str(target))
            continue
        yield r, target


def _summary_line(s: dict, overwrite: bool) -> str:
    line = f"pre-labelled {len(s['written'])} image(s) ({s['instances']} instances) into {s['dst']}"
    if s["backups"]:
        line += f"; {len(s['backups'])} earlier file(s) kept as .bak"
    if s["skipped"]:
        line += f"; {len(s['skipped'])} existing file(s) left as they were" + ("" if overwrite else " (--overwrite)")
    if s["failed"]:
        line += f"; {len(s['failed'])} unreadable image(s) skipped"
    if s["dropped"]:
        line += f"; {len(s['dropped'])} image(s) with a base name already taken left out"
    return line


def pre_label_from_dir(model_dir: str | os.PathLike, images, dst: str | os.PathLike | None = None, *,
                       model_name: str | None = None, device: str | None = None, **kwargs) -> dict:
    """``pre_label`` with the model of a run directory, its ``best_model`` folder or a weights file
    (``pipeline.dispatch.resolve_model_dir``); what the CLI ``workbench pre-label`` and a notebook call."""
    from ..models import create_model
    from ..pipeline.dispatch import resolve_model_dir

    name, weights = resolve_model_dir(model_dir, model_name)
    model = create_model(name, weights=weights, device=device)
    return pre_label(model, images, dst, **kwargs)
