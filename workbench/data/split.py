"""Re-split a PaddleX COCO-layout dataset into train/val, reproducibly and class-stratified."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.errors import ConfigError, DatasetError
from ..utils.io import remove_stale_temp_files, replace_all_with_backup
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


@dataclass
class SplitPlan:
    """What :func:`make_split_plan` chose: the image ids per split, the val images that ``min_val``
    put there against the class rule, and the classes those left without a train image."""

    train_ids: list[int]
    val_ids: list[int]
    forced_val_ids: list[int] = field(default_factory=list)
    classes_without_train: list[int] = field(default_factory=list)


def plan_split(dataset: Dataset, val_percent: float, seed: int = 0, min_val: int = 0) -> tuple[list[int], list[int]]:
    """Choose (train_image_ids, val_image_ids); see :func:`make_split_plan`."""
    plan = make_split_plan(dataset, val_percent, seed, min_val)
    return plan.train_ids, plan.val_ids


# complexity: one placement rule after another (rare classes, fill to target, min_val, the checks)
def make_split_plan(dataset: Dataset, val_percent: float, seed: int = 0,  # noqa: C901
                    min_val: int = 0, where: str | None = None) -> SplitPlan:
    """Choose the train and val images.

    Every class that occurs in at least two images gets at least one image in each split; the
    remaining images fill val up to ``val_percent`` in a seeded random order. The same seed and
    input always give the same split.

    With ``val_percent > 0`` an empty val split is an error (:class:`DatasetError`) that says what
    is missing: at least 2 images, and one image whose classes all occur in another image too
    (moving it must leave each class a train image). ``min_val=N`` instead puts at least N images
    in val even when that leaves a class without train images (those images and classes are in
    the returned plan, for the caller to report); it changes nothing when val has N images anyway.
    ``where`` names the dataset in messages.
    """
    where = where or str(dataset.source or "dataset")
    if isinstance(min_val, bool) or not isinstance(min_val, int) or min_val < 0:
        raise ConfigError(f"min_val must be a whole number >= 0, got {min_val!r}")
    ids = sorted(im.id for im in dataset.images)
    if val_percent > 0 and min_val > max(0, len(ids) - 1):
        raise DatasetError(f"{where}: min_val={min_val} needs at least {min_val + 1} images (one stays in train); "
                           f"there are {len(ids)}")
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

    forced: list[int] = []
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
        while len(val) < min_val:  # against the class rule: the image costing the fewest classes first
            left = [i for i in order if i not in val]
            i = min(left, key=lambda i: sum(remaining_train[c] <= 1 for c in classes_of[i]))
            move(i)
            forced.append(i)
    train_ids = [i for i in ids if i not in val]
    val_ids = [i for i in ids if i in val]
    if val_percent < 100 and not train_ids:
        raise DatasetError(f"{where}: split would leave the train split empty")
    if val_percent > 0 and not val_ids:
        raise DatasetError(_empty_val_message(dataset, where, val_percent, classes_of, images_of))
    starved = sorted(c for c, n in remaining_train.items() if n <= 0)
    return SplitPlan(train_ids, val_ids, forced, starved)


def val_count_note(num_images: int, num_val: int, val_percent: float) -> str:
    """Why val holds another number of images than ``val_percent`` of them ("" when it does not).

    The split is class-stratified (:func:`make_split_plan`): each class found in two or more images
    gets a val image first, and an image moves to val only if each of its classes keeps a train
    image; on a small dataset that gives more, or fewer, val images than the share asked for."""
    if num_images <= 0 or val_percent <= 0:
        return ""
    target = int(round(num_images * val_percent / 100.0)) or (1 if num_images > 1 else 0)
    if num_val == target:
        return ""
    why = ("each class found in two or more images gets at least one val image"
           if num_val > target else "an image goes to val only if each of its classes keeps a train image")
    return (f"val holds {num_val} of {num_images} images, not the {target} that {val_percent:g} % would give: "
            f"the split is class-stratified ({why})")


def _empty_val_message(dataset: Dataset, where: str, val_percent: float, classes_of: dict, images_of: dict) -> str:
    n = len(dataset.images)
    head = f"{where}: val_percent {val_percent:g} of {n} image(s) leaves the val split empty"
    fix = "; use val_percent 0 for a train-only dataset"
    if n < 2:
        return f"{head}: a train and a val split need at least 2 images{fix}"
    names = {c.id: c.name for c in dataset.categories}
    files = {im.id: im.file_name for im in dataset.images}
    why = "; ".join(f"{files[i]}: " + ", ".join(repr(names.get(c, str(c))) for c in sorted(classes_of[i])
                                                 if len(images_of[c]) == 1)
                    for i in sorted(classes_of)[:5]) + ("; …" if n > 5 else "")
    return (f"{head}: every image holds a class that no other image has ({why}), so moving any image to val "
            f"would leave a class without training images. A non-empty val needs at least 2 images and one image "
            f"whose classes all occur in at least one other image too: add images of these classes, or pass "
            f"min_val=1 (--min-val 1) to put one image in val anyway{fix}")


def split_dataset(dataset_dir: str | os.PathLike, train_percent: float = 90, val_percent: float = 10,
                  seed: int = 0, verbose: bool = True, min_val: int = 0,
                  own_files: Mapping[str | os.PathLike, str] | None = None) -> dict[str, Dataset]:
    """Merge the existing train and val splits and split them again.

    The old ``annotations/instance_*.json`` are kept as ``.bak`` (PaddleX behaviour); new files are
    written completely before any old file is replaced. Temporary files that a killed earlier run
    left in ``annotations/`` are removed first. A split that would leave val empty is an error
    naming what is missing, unless ``min_val`` (see :func:`make_split_plan`) puts images there.
    ``own_files``: path -> SHA-256 of annotation files the caller wrote itself earlier (a panel run
    again): those are replaced without another ``.bak`` (``replace_all_with_backup(own=...)``).
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
        raise DatasetError(f"{dataset_dir}: {len(merged.images)} image(s) cannot be split into train and val: "
                           "at least 2 images are needed")
    plan = make_split_plan(merged, val_percent, seed, min_val, where=str(dataset_dir))
    train_ids, val_ids = plan.train_ids, plan.val_ids
    out = {"train": merged.subset(train_ids, "train"), "val": merged.subset(val_ids, "val")}
    removed = remove_stale_temp_files(dataset_dir / "annotations")
    # everything is serialised before any file is touched; both files are replaced or neither
    replace_all_with_backup({dataset_dir / "annotations" / ANNOTATION_FILES[s]:
                             json.dumps(out[s].to_coco_dict(), ensure_ascii=False).encode("utf-8") for s in SPLITS},
                            own=own_files)
    if verbose:
        if removed:
            print(f"removed {len(removed)} temporary file(s) of an interrupted run: "
                  + ", ".join(p.name for p in removed))
        print(f"split {len(merged.images)} images (seed {seed}): train {len(train_ids)}, val {len(val_ids)}")
        for split, d in out.items():
            print(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in d.class_counts().items()))
    if plan.forced_val_ids:
        print(forced_val_note(merged, plan, min_val))
    return out


def forced_val_note(dataset: Dataset, plan: SplitPlan, min_val: int) -> str:
    """One line: which images ``min_val`` put in val, and which classes that left without train images."""
    files = {im.id: im.file_name for im in dataset.images}
    names = {c.id: c.name for c in dataset.categories}
    note = (f"min_val={min_val}: put {', '.join(files[i] for i in plan.forced_val_ids)} in val although the class "
            f"rule did not allow it")
    if plan.classes_without_train:
        note += "; no train image left for class(es) " + ", ".join(
            repr(names.get(c, str(c))) for c in plan.classes_without_train)
    return note
