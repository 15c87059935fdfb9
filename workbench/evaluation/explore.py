"""Exploring a model's predictions of a split: worst-image ranking and PR curves from ``Result``s.

The evaluation explorer (``workbench.widgets.EvaluationExplorer``) holds one ``Result`` per image
of the split (``predict_split``) and re-ranks them when the score threshold changes. It ranks with
the report's matcher (``analysis.error_breakdown`` -> ``analysis.match_image``: mask IoU >= 0.5,
greedy by score, crowd regions excluded) and the report's order (``worst_first_key``: lowest
per-image F1 first, then most errors), so the explorer and ``EvalReport.worst_images`` agree.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.dataset import Dataset
from .analysis import ImageErrors, error_breakdown, worst_first_key
from .analysis import pr_curves as _pr_curves_from_arrays
from .predict import to_coco_detections


def check_results(dataset: Dataset, results: Sequence) -> None:
    """``results`` must be one per image of ``dataset``, in order (``predict_split``)."""
    if len(results) != len(dataset.images):
        raise ValueError(f"{len(results)} results for {len(dataset.images)} images of the "
                         f"{dataset.split or 'dataset'} split: predict every image of the split, in order "
                         "(workbench.evaluation.predict_split)")


def result_detections(dataset: Dataset, results: Sequence) -> list[dict]:
    """COCO detections of ``results`` (one per image of ``dataset``), with masks."""
    check_results(dataset, results)
    dets = to_coco_detections(dataset, list(results))
    if any("segmentation" not in d for d in dets):
        raise ValueError("the results have no masks: the image ranking matches masks")
    return dets


def rank_images(dataset: Dataset, detections: list[dict], score_threshold: float = 0.5,
                iou: float = 0.5) -> list[tuple[int, ImageErrors]]:
    """``(index in dataset.images, ImageErrors)`` of every image, worst first.

    ``detections``: COCO detections (``result_detections``); those scored below
    ``score_threshold`` are ignored, as in the report's analysis."""
    per_image, _, _ = error_breakdown(dataset, detections, score_threshold=score_threshold, iou=iou)
    index = {im.id: i for i, im in enumerate(dataset.images)}
    return [(index[e.image_id], e) for e in sorted(per_image, key=worst_first_key)]


def mean_match_iou(e: ImageErrors) -> float:
    """Mean mask IoU of the image's true-positive matches (0 when there are none)."""
    ious = [d["iou"] for d in e.detections if d["kind"] == "tp"]
    return float(np.mean(ious)) if ious else 0.0


def pr_curves_from_results(dataset: Dataset, results: Sequence, iou_type: str = "segm") -> dict:
    """PR curves per class at IoU 0.50, 0.75 and 0.50:0.95 from ``results`` (one per image of
    ``dataset``, in order), in the format of ``evaluate_result.json``'s ``analysis.pr_curves``."""
    from .metrics import coco_metrics

    check_results(dataset, results)
    dets = to_coco_detections(dataset, list(results))
    if not dets:
        return {"recall": np.linspace(0, 1, 101).tolist(), "curves": {}}
    m = coco_metrics(dataset, dets, iou_types=(iou_type,), keep_arrays=True)
    return _pr_curves_from_arrays(m[iou_type], {c.id: c.name for c in dataset.categories})
