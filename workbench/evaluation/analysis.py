"""Error analysis on masks: confusion matrix with background, per-image error breakdown,
score-threshold sweep, PR curves and the worst images.

Matching rule (one place, used by everything here): within an image, detections at or above the
score threshold are taken in descending score order; mask IoU is computed against every
ground-truth instance (crowd regions excluded). A detection is

- ``tp``          — IoU >= ``iou`` with a not-yet-matched GT of its own class (best such GT);
- ``duplicate``   — IoU >= ``iou`` with a GT of its own class that an earlier detection matched;
- ``wrong_class`` — otherwise IoU >= ``iou`` with a GT of another class;
- ``poor_mask``   — otherwise ``poor_iou`` <= IoU < ``iou`` with a GT of its own class;
- ``background``  — overlaps nothing enough (a false positive on background).

A GT left unmatched at the end is ``missed``. In the confusion matrix rows are GT classes plus
"background" (last), columns are predicted classes plus "background": a wrong-class detection counts
in (gt class, predicted class) and its GT, if it is not matched by anything else, is not counted again
as missed in the matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.dataset import Dataset

ERROR_KINDS = ("tp", "duplicate", "wrong_class", "poor_mask", "background", "missed")


@dataclass
class ImageErrors:
    image_id: int
    file_name: str
    counts: dict = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    # (detection index in the image's list, kind, gt annotation id or None, iou)
    detections: list = field(default_factory=list)
    missed_gt: list = field(default_factory=list)

    @property
    def num_errors(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "tp")

    @property
    def f1(self) -> float:
        tp = self.counts["tp"]
        fp = self.num_errors - self.counts["missed"]
        fn = self.counts["missed"]
        return 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0


def worst_first_key(e: ImageErrors) -> tuple:
    """Sort key of the worst images (the report's and the explorer's): lowest F1 first, then the most errors."""
    return (e.f1, -e.num_errors)


def _to_rle(seg, h, w):
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    r = dict(seg)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return r


def _group(dets: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for d in dets:
        out.setdefault(int(d["image_id"]), []).append(d)
    return out


def match_image(gt_insts, dets, h, w, iou: float = 0.5, poor_iou: float = 0.1):
    """Classify the detections of one image (already score-filtered); see the module docstring.

    Returns (kinds per detection in descending-score order with (det, kind, gt_index, iou),
    indices of missed GT)."""
    from pycocotools import mask as mask_utils

    gts = [a for a in gt_insts if not a.iscrowd]
    dets = sorted(dets, key=lambda d: -float(d.get("score", 1.0)))
    if dets and gts:
        ious = mask_utils.iou([_to_rle(d["segmentation"], h, w) for d in dets],
                              [_to_rle(a.segmentation, h, w) for a in gts], [0] * len(gts))
        ious = np.asarray(ious, float).reshape(len(dets), len(gts))
    else:
        ious = np.zeros((len(dets), len(gts)))
    gt_cls = np.array([a.category_id for a in gts])
    matched = np.zeros(len(gts), bool)
    out = []
    for i, d in enumerate(dets):
        same = gt_cls == int(d["category_id"])
        row = ious[i]
        cand = np.where(same & ~matched & (row >= iou))[0]
        if cand.size:
            j = int(cand[np.argmax(row[cand])])
            matched[j] = True
            out.append((d, "tp", j, float(row[j])))
            continue
        cand = np.where(same & (row >= iou))[0]
        if cand.size:
            j = int(cand[np.argmax(row[cand])])
            out.append((d, "duplicate", j, float(row[j])))
            continue
        cand = np.where(~same & (row >= iou))[0]
        if cand.size:
            j = int(cand[np.argmax(row[cand])])
            out.append((d, "wrong_class", j, float(row[j])))
            continue
        cand = np.where(same & (row >= poor_iou))[0]
        if cand.size:
            j = int(cand[np.argmax(row[cand])])
            out.append((d, "poor_mask", j, float(row[j])))
            continue
        out.append((d, "background", None, float(row.max()) if row.size else 0.0))
    missed = [j for j in range(len(gts)) if not matched[j]]
    return out, missed, gts


def error_breakdown(gt: Dataset, dets: list[dict], score_threshold: float = 0.5, iou: float = 0.5,
                    poor_iou: float = 0.1) -> tuple[list[ImageErrors], np.ndarray, list[str]]:
    """Per-image error counts and the confusion matrix (GT rows × predicted columns, background last)."""
    cats = [c.id for c in gt.categories]
    idx = {c: i for i, c in enumerate(cats)}
    names = [c.name for c in gt.categories] + ["background"]
    bg = len(cats)
    cm = np.zeros((bg + 1, bg + 1), int)
    by_img = _group([d for d in dets if float(d.get("score", 1.0)) >= score_threshold])
    per_image = []
    for im, insts in gt.iter_images():
        res, missed, gts = match_image(insts, by_img.get(im.id, []), im.height, im.width, iou, poor_iou)
        e = ImageErrors(im.id, im.file_name)
        wrong_gt = set()
        for d, kind, j, v in res:
            e.counts[kind] += 1
            e.detections.append({"category_id": int(d["category_id"]), "score": float(d.get("score", 1.0)),
                                 "kind": kind, "gt_id": gts[j].id if j is not None else None, "iou": v})
            p = idx.get(int(d["category_id"]), bg)
            if kind == "tp":
                cm[idx[gts[j].category_id], p] += 1
            elif kind == "wrong_class":
                cm[idx[gts[j].category_id], p] += 1
                wrong_gt.add(j)
            else:  # duplicate, poor mask and background detections are false positives
                cm[bg, p] += 1
        for j in missed:
            e.counts["missed"] += 1
            e.missed_gt.append(gts[j].id)
            if j not in wrong_gt:
                cm[idx[gts[j].category_id], bg] += 1
        per_image.append(e)
    return per_image, cm, names


def threshold_sweep(gt: Dataset, dets: list[dict], thresholds=None, iou: float = 0.5) -> dict:
    """Precision, recall and F1 of mask matches at each score threshold (one matching pass)."""
    thresholds = np.round(np.arange(0.05, 1.0, 0.05), 2) if thresholds is None else np.asarray(thresholds)
    by_img = _group(dets)
    n_gt = sum(1 for a in gt.instances if not a.iscrowd)
    # Greedy matching in score order: a detection's outcome depends only on higher-scored ones, so
    # one pass at the lowest threshold gives the outcome at every threshold.
    scores, is_tp = [], []
    lo = float(thresholds.min())
    for im, insts in gt.iter_images():
        dd = [d for d in by_img.get(im.id, []) if float(d.get("score", 1.0)) >= lo]
        res, _, _ = match_image(insts, dd, im.height, im.width, iou)
        for d, kind, _, _ in res:
            scores.append(float(d.get("score", 1.0)))
            is_tp.append(kind == "tp")
    scores = np.asarray(scores)
    is_tp = np.asarray(is_tp, bool)
    prec, rec, f1 = [], [], []
    for t in thresholds:
        keep = scores >= t
        tp = int(is_tp[keep].sum())
        n = int(keep.sum())
        p = tp / n if n else 1.0
        r = tp / n_gt if n_gt else 1.0
        prec.append(p)
        rec.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    best = int(np.argmax(f1)) if len(f1) else 0
    return {"thresholds": [float(t) for t in thresholds], "precision": prec, "recall": rec, "f1": f1,
            "best_threshold": float(thresholds[best]) if len(f1) else None,
            "best_f1": float(f1[best]) if len(f1) else None}


def pr_curves(metrics_for_type: dict, names: dict[int, str]) -> dict:
    """PR curves per class at IoU 0.50, 0.75 and averaged over 0.50:0.95, from COCOeval's arrays
    (area "all", 100 detections): ``{"recall": [101 points], "curves": {"IoU 0.50": {class: [...]}}}``,
    a class's list is ``None`` when it has no ground truth."""
    prec = metrics_for_type["_precision"]
    iou_thrs = metrics_for_type["_iou_thrs"]
    out = {"recall": [float(r) for r in metrics_for_type["_rec_thrs"]], "curves": {}}
    for label, sel in (("IoU 0.50", np.isclose(iou_thrs, 0.5)), ("IoU 0.75", np.isclose(iou_thrs, 0.75)),
                       ("IoU 0.50:0.95", np.ones_like(iou_thrs, bool))):
        out["curves"][label] = {}
        for k, cid in enumerate(metrics_for_type["_cat_ids"]):
            p = prec[sel, :, k, 0, -1]
            out["curves"][label][names.get(cid, str(cid))] = \
                None if (p < 0).all() else np.where(p < 0, 0, p).mean(0).tolist()
    return out
