"""Re-split a PaddleX COCO-layout dataset into train/val, reproducibly and class-stratified."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..utils.io import replace_all_with_backup
from .dataset import ANNOTATION_FILES, SPLITS, Dataset


def _class_index(dataset: Dataset, ids: list[int], order: list[int]) -> tuple[dict, dict]:
    """image id -> its classes, and class -> its images (in ``order``)."""
    classes_of: dict[int, set[int]] = {i: set() for i in ids}
    for a in dataset.instances:
        if a.image_id in classes_of:
            classes_of[a.image_id].add(a.category_id)
    images_of: dict[int, list[int]] = {}
    for i in order:
        for c in classes_of[i]:
            images_of.setdefault(c, []).append(i)
    return classes_of, images_of


def plan_split(dataset: Dataset, val_percent: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Choose (train_image_ids, val_image_ids).

    Every class that occurs in at least two images gets at least one image in each split; the
    remaining images fill val up to ``val_percent`` in a seeded random order. The same seed and
    input always give the same split.
    """
    ids = sorted(im.id for im in dataset.images)
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    classes_of, images_of = _class_index(dataset, ids, order)
    target = int(round(len(ids) * val_percent / 100.0))
    if val_percent > 0 and target == 0 and len(ids) > 1:
        target = 1
    val: set[int] = set()
    remaining_train = {c: len(v) for c, v in images_of.items()}

    def can_move(i: int) -> bool:
        return all(remaining_train[c] > 1 for c in classes_of[i])

    def move(i: int) -> None:
        val.add(i)
        for c in classes_of[i]:
            remaining_train[c] -= 1

    if val_percent > 0:
        # rarest classes first, so their few images are placed before common classes take them
        for c in sorted(images_of, key=lambda c: (len(images_of[c]), c)):
            if len(images_of[c]) < 2 or any(i in val for i in images_of[c]):
                continue
            for i in images_of[c]:
                if i not in val and can_move(i):
                    move(i)
                    break
        for i in order:
            if len(val) >= target:
                break
            if i not in val and can_move(i):
                move(i)
    train_ids = [i for i in ids if i not in val]
    val_ids = [i for i in ids if i in val]
    if val_percent < 100 and not train_ids:
        raise ValueError("split would leave the train split empty")
    return train_ids, val_ids


def split_dataset(dataset_dir: str | os.PathLike, train_percent: float = 90, val_percent: float = 10,
                  seed: int = 0, verbose: bool = True) -> dict[str, Dataset]:
    """Merge the existing train and val splits and split them again.

    The old ``annotations/instance_*.json`` are kept as ``.bak`` (PaddleX behaviour); new files are
    written completely before any old file is replaced.
    """
    for name, v in (("train_percent", train_percent), ("val_percent", val_percent)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 100:
            raise ValueError(f"{name} must be a number between 0 and 100, got {v!r}")
    if abs(train_percent + val_percent - 100) > 1e-9:
        raise ValueError(f"train_percent + val_percent must be 100, got {train_percent} + {val_percent} = "
                         f"{train_percent + val_percent}")
    if val_percent == 0 or train_percent == 0:
        raise ValueError("both splits must get a share: train_percent and val_percent must be > 0")
    dataset_dir = Path(dataset_dir)
    parts = []
    for split in SPLITS:
        jf = dataset_dir / "annotations" / ANNOTATION_FILES[split]
        if jf.is_file():
            parts.append(Dataset.load_coco(jf, dataset_dir, split))
    if not parts:
        raise FileNotFoundError(f"{dataset_dir / 'annotations'}: no instance_train.json or instance_val.json to split")
    merged = Dataset.merge(parts)
    if len(merged.images) < 2:
        raise ValueError(f"{dataset_dir}: {len(merged.images)} image(s) cannot be split into train and val")
    train_ids, val_ids = plan_split(merged, val_percent, seed)
    out = {"train": merged.subset(train_ids, "train"), "val": merged.subset(val_ids, "val")}
    # everything is serialised before any file is touched; both files are replaced or neither
    replace_all_with_backup({dataset_dir / "annotations" / ANNOTATION_FILES[s]:
                             json.dumps(out[s].to_coco_dict(), ensure_ascii=False).encode("utf-8") for s in SPLITS})
    if verbose:
        print(f"split {len(merged.images)} images (seed {seed}): train {len(train_ids)}, val {len(val_ids)}")
        for split, d in out.items():
            print(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in d.class_counts().items()))
    return out
