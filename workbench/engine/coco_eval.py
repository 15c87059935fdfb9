"""COCO evaluation (pycocotools) of predictions against our ``Dataset``.

``evaluate_coco(dataset, predictions)`` takes COCO result dicts (``Result.to_coco``: dataset
category ids, xywh boxes, RLE masks) and returns, per IoU type (``bbox``, ``segm``), the 12 COCO
summary numbers under readable keys (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
ARl) plus per-class AP — all as fractions in 0..1; ``None`` where COCO gives -1 (no ground truth
of that size / class).
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Iterable

import numpy as np

from ..data.dataset import Dataset

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _num(v: float) -> float | None:
    v = float(v)
    return None if v < 0 or not np.isfinite(v) else v


def evaluate_coco(dataset: Dataset, predictions: Iterable[dict], iou_types: tuple[str, ...] = ("bbox", "segm"),
                  ) -> dict:
    from pycocotools.cocoeval import COCOeval

    gt = dataset.to_pycocotools()
    preds = [dict(p) for p in predictions]
    out: dict = {"num_images": len(dataset.images), "num_predictions": len(preds)}
    for iou_type in iou_types:
        if iou_type == "segm" and any("segmentation" not in p for p in preds):
            raise ValueError("segm evaluation needs a 'segmentation' in every prediction")
        if not preds:
            out[iou_type] = {**{k: 0.0 for k in STAT_NAMES},
                             "per_class": {c.name: 0.0 for c in dataset.categories}}
            continue
        ps = copy.deepcopy(preds)
        if iou_type == "bbox":
            for p in ps:
                p.pop("segmentation", None)  # loadRes would take the box from the mask otherwise
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(ps)
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = {k: _num(v) for k, v in zip(STAT_NAMES, ev.stats)}
        # per-class AP: precision has shape [T, R, K, A, M]; area "all", maxDets 100
        prec = ev.eval["precision"]
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = prec[:, :, k, 0, -1]
            p = p[p > -1]
            name = dataset.category_by_id()[cat_id].name
            per_class[name] = float(p.mean()) if p.size else None
        stats["per_class"] = per_class
        out[iou_type] = stats
    return out


def flat_metrics(res: dict) -> dict[str, float | None]:
    """``{"bbox_AP": ..., "segm_AP50": ...}`` from ``evaluate_coco``'s result (no per-class)."""
    out = {}
    for iou_type in ("bbox", "segm"):
        for k, v in res.get(iou_type, {}).items():
            if k != "per_class":
                out[f"{iou_type}_{k}"] = v
    return out
