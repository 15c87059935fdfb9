"""``Result``: the single prediction currency of every model family.

One ``Result`` per image: the input path (or ``None`` for an array), the image size, and per
instance a box (xyxy, pixels), a score, a class id (the *dataset's* category id) and name, and a
mask. Masks are held in whichever form they came in and converted on access:

* ``masks``: (N, H, W) bool bitmaps (made only when asked for, then kept);
* ``rles``: COCO compressed RLE dicts (``counts`` as str), what ``save_to_json``/``to_coco`` write;
* soft masks (probability x 255, uint8) when the model gives them: a ``SoftMasks`` that makes one
  instance's soft mask at a time, cropped to where it is non-zero (the model families keep their
  low-resolution mask outputs and paste/upsample one instance on demand); then
  ``filter(mask_threshold=...)`` re-binarises without running the model again. ``mask_probs`` is
  the dense (N, H, W) uint8 view of them, made on each access.

Memory: nothing here makes an (N, H, W) array unless ``masks`` or ``mask_probs`` is asked for.
The bitmaps are made one instance at a time from the soft masks and encoded to RLE at once
(``rle_from_crop``: straight from the crop, no full-size bitmap); ``areas``, ``to_coco``,
``save_to_json`` read the RLEs and ``save_to_img`` draws instance by instance on box-sized crops.

``filter`` returns a new ``Result`` (no recomputation). ``save_to_img`` draws translucent masks,
contours and labels with ``workbench.viz.draw_instances``; ``save_to_json``/``from_json`` round-trip
(soft masks are not written to JSON); ``print`` prints PaddleX-style.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _rle_encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _rle_decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode(_rle_bytes(rle)).astype(bool)


def _rle_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_from_crop(y0: int, x0: int, crop: np.ndarray, image_size: Sequence[int]) -> dict:
    """COCO compressed RLE of an (H, W) mask that is ``crop`` at rows ``y0:``, columns ``x0:`` and
    false elsewhere, made from the crop alone (no (H, W) array unless the crop is the whole image).
    Equal to ``pycocotools.mask.encode`` of the full mask."""
    from pycocotools import mask as mask_utils

    hh, ww = int(image_size[0]), int(image_size[1])
    crop = np.asarray(crop, bool)
    h, w = crop.shape
    if (h, w) == (hh, ww):
        return _rle_encode(crop)
    if y0 < 0 or x0 < 0 or y0 + h > hh or x0 + w > ww:
        raise ValueError(f"a mask crop {h}x{w} at ({y0}, {x0}) does not fit an image of {hh}x{ww}")
    # column-major, each column of the crop between a false row above and below: every run of
    # trues then lies in one column and its start/end map to full-image positions one to one
    padded = np.zeros((w, h + 2), np.int8)
    padded[:, 1:-1] = crop.T
    step = np.diff(padded.ravel())
    starts, ends = np.flatnonzero(step == 1) + 1, np.flatnonzero(step == -1) + 1

    def full(q: np.ndarray) -> np.ndarray:
        col, row = np.divmod(q, h + 2)
        return (x0 + col).astype(np.int64) * hh + y0 + row - 1

    s, e = full(starts), full(ends)
    if len(s) > 1:  # a run that ends at a column's last row and one that starts the next column's
        join = np.flatnonzero(e[:-1] == s[1:])
        s, e = np.delete(s, join + 1), np.delete(e, join)
    bounds = np.concatenate([[0], np.stack([s, e], 1).ravel(), [hh * ww]])
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:  # ends on a run of trues: no trailing empty count (as pycocotools)
        counts = counts[:-1]
    rle = mask_utils.frPyObjects({"size": [hh, ww], "counts": [int(c) for c in counts]}, hh, ww)
    return {"size": [hh, ww], "counts": rle["counts"].decode("ascii")}


def rle_crop(rle: dict) -> tuple[int, int, np.ndarray]:
    """``(y0, x0, crop)``: an RLE's mask cut to its bounding box (an empty mask: a 0x0 crop)."""
    from pycocotools import mask as mask_utils

    r = _rle_bytes(rle)
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(r))
    full = mask_utils.decode(r)
    return y, x, np.ascontiguousarray(full[y : y + h, x : x + w]).astype(bool)


def tight_crop(mask: np.ndarray, y0: int = 0, x0: int = 0) -> tuple[int, int, np.ndarray]:
    """``(y0, x0, crop)`` of a 2-D array cut to its non-zero bounding box (all zero: 0x0)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return y0, x0, mask[:0, :0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return y0 + int(r0), x0 + int(c0), mask[r0:r1, c0:c1]


class SoftMasks:
    """One image's soft masks (probability x 255 as uint8), made one instance at a time.

    ``crop(i)`` returns ``(y0, x0, crop)``: instance ``i``'s soft mask is ``crop`` at rows ``y0:``,
    columns ``x0:`` and 0 elsewhere. Subclasses hold whatever makes that cheaply (the model's
    low-resolution masks); this base holds the crops themselves (``from_dense``)."""

    def __init__(self, image_size: Sequence[int], crops: Sequence[tuple[int, int, np.ndarray]] = ()):
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._crops = [(int(y), int(x), np.asarray(c, np.uint8)) for y, x, c in crops]

    @classmethod
    def from_dense(cls, probs: np.ndarray) -> SoftMasks:
        """From an (N, H, W) uint8 array, each instance cut to where it is non-zero (lossless)."""
        probs = np.asarray(probs, np.uint8)
        if probs.ndim != 3:
            raise ValueError(f"mask_probs must be (N, H, W), got shape {probs.shape}")
        return cls(probs.shape[1:], [(y, x, c.copy()) for y, x, c in (tight_crop(p) for p in probs)])

    def __len__(self) -> int:
        return len(self._crops)

    def crop(self, i: int) -> tuple[int, int, np.ndarray]:
        return self._crops[i]

    def take(self, idx: Sequence[int]) -> SoftMasks:
        """The instances ``idx`` (shares the crops)."""
        return SoftMasks(self.image_size, [self._crops[int(i)] for i in idx])

    def binary_crop(self, i: int, cut: float) -> tuple[int, int, np.ndarray]:
        y0, x0, c = self.crop(i)
        return y0, x0, c >= cut

    def rle(self, i: int, cut: float) -> dict:
        return rle_from_crop(*self.binary_crop(i, cut), self.image_size)

    def dense(self) -> np.ndarray:
        """(N, H, W) uint8."""
        out = np.zeros((len(self), *self.image_size), np.uint8)
        for i in range(len(self)):
            y0, x0, c = self.crop(i)
            out[i, y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]] = c
        return out


class _MaskCrops(Sequence):
    """A Result's binary masks as ``(y0, x0, crop)``, made when indexed (for ``draw_instances``)."""

    def __init__(self, result: Result):
        self.result = result

    def __len__(self) -> int:
        return len(self.result)

    def __getitem__(self, i):
        return self.result.mask_crop(i)


class Result:
    """Predictions for one image. Build with keyword arguments; any one mask form is enough."""

    def __init__(
        self,
        *,
        input_path: str | os.PathLike | None,
        image_size: Sequence[int],
        boxes: Any = None,
        scores: Any = None,
        class_ids: Any = None,
        class_names: Sequence[str] | None = None,
        masks: Any = None,
        rles: list[dict] | None = None,
        mask_probs: Any = None,
        mask_threshold: float = 0.5,
        threshold: float = 0.0,
        image: np.ndarray | None = None,
        model_name: str | None = None,
        page_index: int | None = None,
        output_stem: str | None = None,
    ):
        self.input_path = str(input_path) if input_path is not None else None
        self.image_size = (int(image_size[0]), int(image_size[1]))  # (height, width)
        self.boxes = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(scores if scores is not None else np.ones(n), np.float32).reshape(-1)
        self.class_ids = np.asarray(class_ids if class_ids is not None else np.zeros(n), np.int64).reshape(-1)
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in self.class_ids]
        self._masks = None if masks is None else np.asarray(masks).astype(bool, copy=False)
        self._masks_given = self._masks is not None
        self._rles = None if rles is None else [dict(r) for r in rles]
        self._soft: SoftMasks | None = None
        self.mask_probs = mask_probs
        self.mask_threshold = float(mask_threshold)
        self.threshold = float(threshold)
        self.image = image
        self.model_name = model_name
        self.page_index = page_index
        self.output_stem = output_stem  # set by predict: unique among its inputs (``a/x`` for <folder>/a/x.png)
        for name, arr in (("scores", self.scores), ("class_ids", self.class_ids), ("class_names", self.class_names)):
            if len(arr) != n:
                raise ValueError(f"Result: {name} has {len(arr)} entries but there are {n} boxes")
        for name, arr in (("masks", self._masks), ("rles", self._rles), ("mask_probs", self._soft)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"Result: {name} has {len(arr)} entries but there are {n} boxes")

    @staticmethod
    def _prob_cut(t: float) -> float:
        # uint8 soft masks hold p*255; p >= t  <=>  value >= t*255 (avoid float error at t=0.5)
        return t * 255.0 - 1e-6

    # ------------------------------------------------------------------ masks
    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def soft_masks(self) -> SoftMasks | None:
        """The soft masks, one instance at a time (``SoftMasks``), or ``None``."""
        return self._soft

    @property
    def mask_probs(self) -> np.ndarray | None:
        """(N, H, W) uint8 soft masks (probability x 255), made on each access; ``None`` without."""
        return None if self._soft is None else self._soft.dense()

    @mask_probs.setter
    def mask_probs(self, value) -> None:
        if value is None or isinstance(value, SoftMasks):
            self._soft = value
        else:
            self._soft = SoftMasks.from_dense(value)

    @property
    def has_masks(self) -> bool:
        return self._masks is not None or self._rles is not None or self._soft is not None

    def mask_crop(self, i: int) -> tuple[int, int, np.ndarray]:
        """Instance ``i``'s bitmap as ``(y0, x0, crop)`` (false outside the crop), without an (H, W) array
        where the masks are held as soft masks or RLE."""
        if self._masks_given:
            return tight_crop(self._masks[i])
        if self._rles is not None:
            return rle_crop(self._rles[i])
        if self._soft is not None:
            return self._soft.binary_crop(i, self._prob_cut(self.mask_threshold))
        raise ValueError("this Result has no masks")

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool (made from the RLEs or soft masks on first access, then kept)."""
        if self._masks is None:
            h, w = self.image_size
            out = np.zeros((len(self) if self.has_masks else 0, h, w), bool)
            for i in range(len(out)):
                y0, x0, c = self.mask_crop(i)
                out[i, y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]] = c
            self._masks = out
        return self._masks

    @property
    def rles(self) -> list[dict]:
        """COCO compressed RLE per instance (``counts`` as str), made one instance at a time."""
        if self._rles is None:
            if self._masks_given:
                self._rles = [_rle_encode(m) for m in self._masks]
            elif self._soft is not None:
                cut = self._prob_cut(self.mask_threshold)
                self._rles = [self._soft.rle(i, cut) for i in range(len(self))]
            else:
                self._rles = []
        return self._rles

    @property
    def areas(self) -> np.ndarray:
        from pycocotools import mask as mask_utils

        if not len(self):
            return np.zeros(0)
        if self._masks_given:
            return self._masks.reshape(len(self), -1).sum(1).astype(np.float64)
        return np.array([mask_utils.area(_rle_bytes(r)) for r in self.rles], np.float64)

    # ------------------------------------------------------------------ derived results
    def _select(self, keep: np.ndarray, **changes) -> Result:
        keep = np.asarray(keep, bool)
        idx = np.nonzero(keep)[0]
        kw = dict(
            input_path=self.input_path,
            image_size=self.image_size,
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            class_ids=self.class_ids[idx],
            class_names=[self.class_names[i] for i in idx],
            mask_probs=None if self._soft is None else self._soft.take(idx),
            mask_threshold=self.mask_threshold,
            threshold=self.threshold,
            image=self.image,
            model_name=self.model_name,
            page_index=self.page_index,
            output_stem=self.output_stem,
        )
        if self._rles is not None:
            kw["rles"] = [self._rles[i] for i in idx]
        elif self._masks is not None and (self._masks_given or self._soft is None):
            kw["masks"] = self._masks[idx]
        kw.update(changes)
        return Result(**kw)

    def filter(
        self,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        class_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> Result:
        """A new Result with score >= ``threshold`` (and only the given classes).

        ``mask_threshold`` re-binarises the masks from the soft masks; without soft masks (e.g. a
        Result read from JSON) only the threshold the masks were made with is possible.
        A threshold below the one the prediction was made with cannot bring back dropped instances.
        """
        keep = np.ones(len(self), bool)
        if threshold is not None:
            keep &= self.scores >= threshold
        if class_ids is not None:
            keep &= np.isin(self.class_ids, list(class_ids))
        if class_names is not None:
            keep &= np.isin(np.array(self.class_names, dtype=object), list(class_names))
        changes: dict = {}
        if threshold is not None:
            changes["threshold"] = max(float(threshold), self.threshold)
        if mask_threshold is not None and abs(mask_threshold - self.mask_threshold) > 1e-9:
            if self._soft is None:
                raise ValueError(
                    f"this Result has no soft masks (mask_probs); its masks were thresholded at "
                    f"{self.mask_threshold} and cannot be re-thresholded at {mask_threshold}"
                )
            changes["mask_threshold"] = float(mask_threshold)
            out = self._select(keep, **changes)
            out._rles = out._masks = None  # made from the soft masks at the new threshold
            out._masks_given = False
            return out
        return self._select(keep, **changes)

    def __getitem__(self, item) -> Result:
        keep = np.zeros(len(self), bool)
        keep[np.arange(len(self))[item]] = True
        return self._select(keep)

    # ------------------------------------------------------------------ output
    def to_dict(self, include_masks: bool = True) -> dict:
        """The PaddleX-like JSON schema (what ``save_to_json`` writes)."""
        boxes = []
        rles = self.rles if include_masks and self.has_masks else None
        for i in range(len(self)):
            b = {
                "cls_id": int(self.class_ids[i]),
                "label": self.class_names[i],
                "score": float(self.scores[i]),
                "coordinate": [float(v) for v in self.boxes[i]],
            }
            if rles is not None:
                b["mask"] = rles[i]
            boxes.append(b)
        return {
            "input_path": self.input_path,
            "page_index": self.page_index,
            "model_name": self.model_name,
            "image_size": list(self.image_size),
            "threshold": self.threshold,
            "mask_threshold": self.mask_threshold,
            "boxes": boxes,
        }

    @property
    def json(self) -> dict:
        return {"res": self.to_dict()}

    def __repr__(self) -> str:
        return (
            f"Result({self.input_path!r}, size={self.image_size}, instances={len(self)}, "
            f"classes={sorted(set(self.class_names))})"
        )

    def print(self, json_format: bool = False, indent: int = 4, ensure_ascii: bool = False) -> None:
        """Print like PaddleX: ``{'res': {...}}``; masks are summarised (they are in the JSON file)."""
        d = self.to_dict(include_masks=False)
        d["masks"] = f"<{len(self)} masks of {self.image_size[0]}x{self.image_size[1]}>"
        if json_format:
            print(json.dumps({"res": d}, indent=indent, ensure_ascii=ensure_ascii))
        else:
            print({"res": d})

    def save_to_json(self, save_path: str | os.PathLike) -> Path:
        """Write the JSON (RLE masks). A folder gets ``<output stem>_res.json`` (``_target``)."""
        from ..utils.io import atomic_write_json

        path = self._target(save_path, ".json")
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_json(cls, path_or_dict: str | os.PathLike | dict) -> Result:
        d = path_or_dict
        if not isinstance(d, dict):
            d = json.loads(Path(path_or_dict).read_text(encoding="utf-8-sig"))  # a BOM is fine
        d = d.get("res", d)
        boxes = d.get("boxes", [])
        has_masks = bool(boxes) and all("mask" in b for b in boxes)
        return cls(
            input_path=d.get("input_path"),
            image_size=d["image_size"],
            boxes=[b["coordinate"] for b in boxes],
            scores=[b["score"] for b in boxes],
            class_ids=[b["cls_id"] for b in boxes],
            class_names=[b["label"] for b in boxes],
            rles=[b["mask"] for b in boxes] if has_masks else ([] if not boxes else None),
            mask_threshold=d.get("mask_threshold", 0.5),
            threshold=d.get("threshold", 0.0),
            model_name=d.get("model_name"),
            page_index=d.get("page_index"),
        )

    def to_coco(self, image_id: int | None = None) -> list[dict]:
        """COCO results (``loadRes`` format): bbox xywh, score, category_id, RLE segmentation."""
        if image_id is None:
            image_id = 0
        rles = self.rles if self.has_masks else None
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            d = {
                "image_id": int(image_id),
                "category_id": int(self.class_ids[i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(self.scores[i]),
            }
            if rles is not None:
                d["segmentation"] = rles[i]
            out.append(d)
        return out

    def _load_image(self) -> np.ndarray:
        if self.image is not None:
            return self.image
        if self.input_path is None:
            raise ValueError("this Result has neither the image nor an input path to read it from")
        from ..data.dataset import read_image_rgb

        return read_image_rgb(self.input_path)

    def visualize(self, show_boxes: bool = True, show_labels: bool = True, alpha: float = 0.45) -> np.ndarray:
        from ..viz import draw_instances

        return draw_instances(
            self._load_image(),
            masks=_MaskCrops(self) if self.has_masks else None,
            boxes=self.boxes,
            class_ids=self.class_ids,
            labels=self.class_names,
            scores=self.scores,
            alpha=alpha,
            show_boxes=show_boxes,
            show_labels=show_labels,
        )

    def save_to_img(self, save_path: str | os.PathLike, **kwargs) -> Path:
        """Overlay PNG/JPG; a folder gets ``<output stem>_res.png`` (``_target``)."""
        from ..viz import save_image

        path = self._target(save_path, ".png")
        save_image(path, self.visualize(**kwargs))
        return path

    def _target(self, save_path: str | os.PathLike, ext: str) -> Path:
        """``save_path`` itself when it names a file of the kind, else ``<save_path>/<stem>_res<ext>``:
        ``stem`` is ``output_stem`` (set by ``predict``, unique among its inputs, with the subfolder
        of a folder's image: ``a/x`` for ``<folder>/a/x.png`` -> ``<save_path>/a/x_res.png``), else the
        input file's stem (``image`` for an array)."""
        p = Path(save_path)
        if p.suffix.lower() in ((".json",) if ext == ".json" else (".png", ".jpg", ".jpeg", ".bmp")):
            return p
        stem = self.output_stem or (Path(self.input_path).stem if self.input_path else "image")
        if self.page_index is not None:
            stem = f"{stem}_{self.page_index}"
        return p / f"{stem}_res{ext}"
