"""``Result``: the single prediction currency of every model family.

One ``Result`` per image: the input path (or ``None`` for an array), the image size, and per
instance a box (xyxy, pixels), a score, a class id (the *dataset's* category id) and name, and a
mask. Masks are held in whichever form they came in and converted on access:

* ``masks``: (N, H, W) bool bitmaps;
* ``rles``: COCO compressed RLE dicts (``counts`` as str), what ``save_to_json``/``to_coco`` write;
* ``mask_probs``: optional (N, H, W) uint8 soft masks (probability x 255) when the model gives
  them; then ``filter(mask_threshold=...)`` re-binarises without running the model again.

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

    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(r).astype(bool)


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
        self._rles = None if rles is None else [dict(r) for r in rles]
        self.mask_probs = None if mask_probs is None else np.asarray(mask_probs, np.uint8)
        self.mask_threshold = float(mask_threshold)
        self.threshold = float(threshold)
        self.image = image
        self.model_name = model_name
        self.page_index = page_index
        self.output_stem = output_stem  # set by predict: unique among its inputs (``a/x`` for <folder>/a/x.png)
        if self._masks is None and self._rles is None and self.mask_probs is not None:
            self._masks = self.mask_probs >= self._prob_cut(self.mask_threshold)
        for name, arr in (("scores", self.scores), ("class_ids", self.class_ids), ("class_names", self.class_names)):
            if len(arr) != n:
                raise ValueError(f"Result: {name} has {len(arr)} entries but there are {n} boxes")
        for name, arr in (("masks", self._masks), ("rles", self._rles), ("mask_probs", self.mask_probs)):
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
    def has_masks(self) -> bool:
        return self._masks is not None or self._rles is not None

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool."""
        if self._masks is None:
            h, w = self.image_size
            self._masks = np.stack([_rle_decode(r) for r in self._rles]) if self._rles else np.zeros((0, h, w), bool)
        return self._masks

    @property
    def rles(self) -> list[dict]:
        """COCO compressed RLE per instance (``counts`` as str)."""
        if self._rles is None:
            self._rles = [_rle_encode(m) for m in self.masks] if self._masks is not None else []
        return self._rles

    @property
    def areas(self) -> np.ndarray:
        from pycocotools import mask as mask_utils

        if not len(self):
            return np.zeros(0)
        if self._masks is not None:
            return self._masks.reshape(len(self), -1).sum(1).astype(np.float64)
        return np.array(
            [mask_utils.area({"size": r["size"], "counts": r["counts"].encode("ascii")}) for r in self.rles], np.float64
        )

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
            mask_probs=None if self.mask_probs is None else self.mask_probs[idx],
            mask_threshold=self.mask_threshold,
            threshold=self.threshold,
            image=self.image,
            model_name=self.model_name,
            page_index=self.page_index,
            output_stem=self.output_stem,
        )
        if self._masks is not None:
            kw["masks"] = self._masks[idx]
        elif self._rles is not None:
            kw["rles"] = [self._rles[i] for i in idx]
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
            if self.mask_probs is None:
                raise ValueError(
                    f"this Result has no soft masks (mask_probs); its masks were thresholded at "
                    f"{self.mask_threshold} and cannot be re-thresholded at {mask_threshold}"
                )
            idx = np.nonzero(keep)[0]
            changes["masks"] = self.mask_probs[idx] >= self._prob_cut(mask_threshold)
            changes["rles"] = None
            changes["mask_threshold"] = float(mask_threshold)
        out = self._select(keep, **{k: v for k, v in changes.items() if k != "rles"})
        if "masks" in changes:
            out._rles = None
        return out

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
            masks=self.masks if self.has_masks else None,
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
