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

import functools
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
        return sum(self.counts.values()) - self.counts["tp"]

    @property
    def f1(self) -> float:
        c = self.counts
        tp = c["tp"]
        fp_fn = sum(c.values()) - tp  # false positives (every error kind but missed) + missed
        return 2 * tp / (2 * tp + fp_fn) if (tp + fp_fn) else 1.0


def worst_first_key(e: ImageErrors) -> tuple:
    """Sort key of the worst images (the report's and the explorer's): lowest F1 first, then the most errors."""
    c = e.counts
    tp = c["tp"]
    errors = sum(c.values()) - tp
    return (2 * tp / (2 * tp + errors) if tp + errors else 1.0, -errors)


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


def _iou_rle(seg, h, w):
    """``seg`` as pycocotools' ``iou`` takes it: a compressed RLE (str counts are fine) as is."""
    if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):
        return seg
    return _to_rle(seg, h, w)


@functools.lru_cache(maxsize=1)
def _mask_iou():
    """RLE mask IoU: faster-coco-eval's port of the COCO mask API where installed (the same
    arithmetic, less call overhead: ~35 vs ~80 µs a call for a few masks, one call an image), else
    pycocotools'. ``tests/test_evaluation.py`` checks the analysis against pycocotools'."""
    try:
        from faster_coco_eval.core.mask import iou
    except ImportError:
        from pycocotools.mask import iou
    return iou


def _gt_rle(a, h, w, gt_rles: dict | None):
    r = gt_rles.get(a.id) if gt_rles else None
    return r if r is not None else _to_rle(a.segmentation, h, w)


def _group(dets: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for d in dets:
        out.setdefault(int(d["image_id"]), []).append(d)
    return out


def _score(d: dict) -> float:
    return float(d.get("score", 1.0))


def match_image(gt_insts, dets, h, w, iou: float = 0.5, poor_iou: float = 0.1, gt_rles: dict | None = None):
    """Classify the detections of one image (already score-filtered); see the module docstring.

    Returns (kinds per detection in descending-score order with (det, kind, gt_index, iou),
    indices of missed GT, the non-crowd GT instances the indices refer to). Among equally good
    GT candidates the first (lowest index) is taken. Detections of equal score keep their order, so
    the outcome of a detection depends only on the detections before it: the result for the
    detections at or above a higher threshold is a prefix of this one. ``gt_rles``: compressed
    RLEs by annotation id already made (``coco_metrics``' COCO index has them), used where present."""
    gts = [a for a in gt_insts if not a.iscrowd]
    dets = sorted(dets, key=lambda d: -_score(d))
    if dets and gts:
        ious = _mask_iou()([_iou_rle(d["segmentation"], h, w) for d in dets],
                              [_gt_rle(a, h, w, gt_rles) for a in gts], [0] * len(gts))
        rows = np.asarray(ious, float).reshape(len(dets), len(gts)).tolist()
    else:
        rows = [[0.0] * len(gts) for _ in dets]
    gt_cls = [a.category_id for a in gts]
    matched = [False] * len(gts)
    out = []
    for d, row in zip(dets, rows):
        c = int(d["category_id"])
        # best (first on ties) GT: unmatched same class >= iou, same class >= iou, other class >= iou,
        # same class >= poor_iou
        best = [-1, -1, -1, -1]
        for j, v in enumerate(row):
            if gt_cls[j] == c:
                if v >= iou:
                    if not matched[j] and (best[0] < 0 or v > row[best[0]]):
                        best[0] = j
                    if best[1] < 0 or v > row[best[1]]:
                        best[1] = j
                if v >= poor_iou and (best[3] < 0 or v > row[best[3]]):
                    best[3] = j
            elif v >= iou and (best[2] < 0 or v > row[best[2]]):
                best[2] = j
        for kind, j in zip(("tp", "duplicate", "wrong_class", "poor_mask"), best):
            if j >= 0:
                if kind == "tp":
                    matched[j] = True
                out.append((d, kind, j, row[j]))
                break
        else:
            out.append((d, "background", None, max(row) if row else 0.0))
    missed = [j for j in range(len(gts)) if not matched[j]]
    return out, missed, gts


def _default_thresholds():
    return np.round(np.arange(0.05, 1.0, 0.05), 2)


def analyse(gt: Dataset, dets: list[dict], score_threshold: float = 0.5, thresholds=None, iou: float = 0.5,
            poor_iou: float = 0.1, gt_rles: dict | None = None) -> tuple[list[ImageErrors], np.ndarray, list[str], dict]:
    """``error_breakdown`` at ``score_threshold`` and ``threshold_sweep`` over ``thresholds`` from
    one matching pass: (per-image errors, confusion matrix, its labels, the sweep).

    Greedy matching in score order: a detection's outcome depends only on higher-scored ones, so
    one pass at the lowest threshold gives the outcome at every threshold (``match_image``, which
    also explains ``gt_rles``)."""
    thresholds = _default_thresholds() if thresholds is None else np.asarray(thresholds, float)
    lo = min([score_threshold, *thresholds.tolist()])
    cats = [c.id for c in gt.categories]
    idx = {c: i for i, c in enumerate(cats)}
    names = [c.name for c in gt.categories] + ["background"]
    bg = len(cats)
    cm = np.zeros((bg + 1, bg + 1), int)
    by_img = _group([d for d in dets if _score(d) >= lo])
    per_image = []
    scores, is_tp = [], []
    for im, insts in gt.iter_images():
        res, _, gts = match_image(insts, by_img.get(im.id, []), im.height, im.width, iou, poor_iou, gt_rles)
        e = ImageErrors(im.id, im.file_name)
        wrong_gt = set()
        matched = set()
        for d, kind, j, v in res:
            s = _score(d)
            scores.append(s)
            is_tp.append(kind == "tp")
            if s < score_threshold:
                continue  # in the sweep only; the breakdown's detections are a prefix of res
            e.counts[kind] += 1
            e.detections.append({"category_id": int(d["category_id"]), "score": s,
                                 "kind": kind, "gt_id": gts[j].id if j is not None else None, "iou": v})
            p = idx.get(int(d["category_id"]), bg)
            if kind == "tp":
                matched.add(j)
                cm[idx[gts[j].category_id], p] += 1
            elif kind == "wrong_class":
                cm[idx[gts[j].category_id], p] += 1
                wrong_gt.add(j)
            else:  # duplicate, poor mask and background detections are false positives
                cm[bg, p] += 1
        for j in range(len(gts)):
            if j in matched:
                continue
            e.counts["missed"] += 1
            e.missed_gt.append(gts[j].id)
            if j not in wrong_gt:
                cm[idx[gts[j].category_id], bg] += 1
        per_image.append(e)
    n_gt = sum(1 for a in gt.instances if not a.iscrowd)
    return per_image, cm, names, _sweep(np.asarray(scores, float), np.asarray(is_tp, bool), n_gt, thresholds)


def error_breakdown(gt: Dataset, dets: list[dict], score_threshold: float = 0.5, iou: float = 0.5,
                    poor_iou: float = 0.1) -> tuple[list[ImageErrors], np.ndarray, list[str]]:
    """Per-image error counts and the confusion matrix (GT rows × predicted columns, background last)."""
    per_image, cm, names, _ = analyse(gt, dets, score_threshold, [], iou, poor_iou)
    return per_image, cm, names


def threshold_sweep(gt: Dataset, dets: list[dict], thresholds=None, iou: float = 0.5) -> dict:
    """Precision, recall and F1 of mask matches at each score threshold (one matching pass)."""
    thresholds = _default_thresholds() if thresholds is None else np.asarray(thresholds, float)
    lo = float(thresholds.min()) if thresholds.size else 1.0
    return analyse(gt, dets, lo, thresholds, iou)[3]


def _sweep(scores: np.ndarray, is_tp: np.ndarray, n_gt: int, thresholds: np.ndarray) -> dict:
    prec, rec, f1 = [], [], []
    for t in thresholds:
        keep = scores >= t
        tp = int(is_tp[keep].sum())
        n = int(keep.sum())
        p = tp / n if n else None  # no predictions at this threshold: precision is undefined (a gap)
        r = tp / n_gt if n_gt else 1.0
        prec.append(p)
        rec.append(r)
        f1.append(2 * p * r / (p + r) if p is not None and p + r else 0.0)
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
