"""Predicting a dataset split with any model: one ``Result`` per image, in the split's order.

Used by ``model.evaluate``, by the evaluation during training and by the evaluation explorer, so
a split is predicted the same way everywhere (threshold 0: every detection the model gives).

Each ``Result`` keeps its masks as RLE only (``keep_soft_masks=False``): a split's results are
held together, and the soft masks (the model's low-resolution masks, for re-thresholding) would
add up over the split; the evaluation and its explorer re-filter by score only.
"""
from __future__ import annotations

import os
from typing import Any

from ..data.dataset import Dataset


def predict_split(model: Any, dataset: Dataset | str | os.PathLike, split: str = "val", threshold: float = 0.0,
                  batch_size: int = 1, progress: bool | None = None, keep_image: bool = False,
                  keep_soft_masks: bool = False, desc: str | None = None) -> list:
    """``model.infer`` on every image of ``dataset`` (a ``Dataset`` or a PaddleX dataset folder).
    ``keep_soft_masks``: keep each ``Result``'s soft masks (``filter(mask_threshold=...)``).
    ``progress``: a progress bar (images; None: when there is more than one), titled ``desc``."""
    from tqdm.auto import tqdm

    ds = dataset if isinstance(dataset, Dataset) else Dataset.load_paddlex(dataset, split)
    images = list(ds.images)
    bs = max(1, int(batch_size))
    show = len(images) > 1 if progress is None else progress
    out = []
    with tqdm(total=len(images), desc=desc or f"predict {ds.split or 'split'}", unit="img", disable=not show) as bar:
        for i in range(0, len(images), bs):
            chunk = images[i:i + bs]
            arrays = [ds.load_image(im) for im in chunk]
            results = model.infer(arrays, [str(ds.image_path(im)) for im in chunk], threshold=threshold,
                                  keep_image=keep_image)
            if not keep_soft_masks:
                for r in results:
                    if getattr(r, "soft_masks", None) is not None:
                        r.rles  # noqa: B018 - the RLEs are made now, then the soft masks go
                        r.mask_probs = None
            out.extend(results)
            bar.update(len(chunk))
    return out


def to_coco_detections(dataset: Dataset, results: list) -> list[dict]:
    """COCO result dicts of ``results`` (one per image of ``dataset``, same order)."""
    return [d for im, r in zip(dataset.images, results) for d in r.to_coco(im.id)]
