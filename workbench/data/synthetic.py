"""Deterministic synthetic instance-segmentation data for fast tests and demos.

Shapes (circle, square, triangle) on a noisy textured background. Some instances are cut in two
by a thin background-coloured stripe, so their mask has several parts (multi-polygon in COCO, one
``group_id`` in LabelMe). Later shapes occlude earlier ones; masks are the *visible* pixels. The
same ``seed`` always gives the same files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write_bytes, atomic_write_json
from .dataset import ANNOTATION_FILES, Category, Dataset, ImageInfo, Instance, polygons_from_mask

CLASSES = ("circle", "square", "triangle")


def _draw_shape(kind: str, h: int, w: int, rng: np.random.Generator, min_size: int) -> np.ndarray:
    import cv2

    mask = np.zeros((h, w), np.uint8)
    r = int(rng.integers(min_size, max(min_size + 1, min(h, w) // 4)))
    cx = int(rng.integers(r, w - r))
    cy = int(rng.integers(r, h - r))
    if kind == "circle":
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif kind == "square":
        angle = float(rng.uniform(0, 90))
        box = cv2.boxPoints(((cx, cy), (1.6 * r, 1.6 * r), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
    elif kind == "triangle":
        a0 = float(rng.uniform(0, 2 * np.pi))
        pts = [(cx + r * np.cos(a0 + k * 2 * np.pi / 3), cy + r * np.sin(a0 + k * 2 * np.pi / 3)) for k in range(3)]
        cv2.fillPoly(mask, [np.array(pts, np.int32)], 1)
    else:
        raise ValueError(f"unknown synthetic shape {kind!r}; choose from {CLASSES}")
    return mask.astype(bool)


def render_image(rng: np.random.Generator, size: tuple[int, int], classes: tuple[str, ...],
                 max_instances: int = 4, split_prob: float = 0.3, min_size: int = 8):
    """One image and its instances as (class index, visible mask) pairs."""
    import cv2

    h, w = size
    bg = rng.integers(40, 90, size=3)
    img = (bg[None, None, :] + rng.normal(0, 8, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
    palette = {0: (220, 60, 60), 1: (60, 200, 80), 2: (70, 90, 230), 3: (230, 200, 60), 4: (200, 80, 220)}
    n = int(rng.integers(1, max_instances + 1))
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(n):
        c = int(rng.integers(0, len(classes)))
        m = _draw_shape(classes[c], h, w, rng, min_size)
        if rng.random() < split_prob:
            # a thin stripe of background across the shape: the instance gets two parts
            ys, xs = np.nonzero(m)
            y0 = int(np.median(ys))
            stripe = np.zeros_like(m)
            stripe[max(0, y0 - 2): y0 + 2, :] = True
            m = m & ~stripe
        for k in range(len(objects)):  # occlusion: newer shapes cover older ones
            objects[k] = (objects[k][0], objects[k][1] & ~m)
        objects.append((c, m))
        color = np.array(palette[c % len(palette)]) + rng.integers(-25, 25, size=3)
        img[m] = (0.85 * color + 0.15 * img[m]).clip(0, 255).astype(np.uint8)
    objects = [(c, m) for c, m in objects if m.sum() >= 20]
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return img, objects


def make_shapes_dataset(out_dir: str | os.PathLike, num_train: int = 16, num_val: int = 4,
                        size: tuple[int, int] = (128, 128), seed: int = 0,
                        classes: tuple[str, ...] = CLASSES[:2], max_instances: int = 4,
                        split_prob: float = 0.3, formats: tuple[str, ...] = ("coco",)) -> dict[str, Dataset]:
    """Write a synthetic dataset and return it as ``{"train": Dataset, "val": Dataset}``.

    ``formats``: ``"coco"`` writes the PaddleX COCO layout (``images/``, ``annotations/``) into
    ``out_dir``; ``"labelme"`` writes LabelMe JSON files beside PNG images into
    ``out_dir/labelme`` (or into ``out_dir`` itself when it is the only format).
    """
    import cv2

    if len(classes) < 1:
        raise ValueError("need at least one class")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    categories = [Category(i + 1, name) for i, name in enumerate(classes)]
    result: dict[str, Dataset] = {}
    labelme_dir = out_dir if formats == ("labelme",) else out_dir / "labelme"
    img_id = ann_id = 0
    for split, count in (("train", num_train), ("val", num_val)):
        ds = Dataset(categories=list(categories), image_root=out_dir, split=split)
        for _ in range(count):
            img_id += 1
            img, objects = render_image(rng, size, classes, max_instances, split_prob)
            name = f"{split}_{img_id:05d}.png"
            ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            assert ok
            if "coco" in formats:
                atomic_write_bytes(out_dir / "images" / name, buf.tobytes())
            ds.images.append(ImageInfo(img_id, f"images/{name}", size[1], size[0]))
            shapes = []
            for group, (c, m) in enumerate(objects):
                polys = polygons_from_mask(m)
                if not polys:
                    continue
                ann_id += 1
                inst = Instance(ann_id, img_id, c + 1, polys, [0, 0, 0, 0], 0.0)
                from pycocotools import mask as mask_utils

                rle = inst.rle(size[0], size[1])
                inst.bbox = [float(v) for v in mask_utils.toBbox(rle)]
                inst.area = float(mask_utils.area(rle))
                ds.instances.append(inst)
                for p in polys:
                    shapes.append({"label": classes[c], "points": np.asarray(p).reshape(-1, 2).tolist(),
                                   "group_id": group if len(polys) > 1 else None, "description": "",
                                   "shape_type": "polygon", "flags": {}, "mask": None})
            if "labelme" in formats:
                atomic_write_bytes(labelme_dir / name, buf.tobytes())
                atomic_write_json(labelme_dir / name.replace(".png", ".json"), {
                    "version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": name, "imageData": None,
                    "imageHeight": size[0], "imageWidth": size[1]})
        if "coco" in formats:
            ds.save_coco(out_dir / "annotations" / ANNOTATION_FILES[split])
        result[split] = ds
    return result


def noisy_predictions(dataset: Dataset, seed: int = 0, drop: float = 0.15, wrong_class: float = 0.1,
                      max_shift: int = 3, false_positives: float = 0.3, duplicates: float = 0.1) -> list[dict]:
    """COCO result dicts derived from ``dataset``'s ground truth with controlled errors: missed
    instances, shifted masks, wrong classes, duplicates and false positives, with random scores.

    For evaluation tests and benchmarks: a stand-in for a model whose mistakes are known in kind.
    """
    from .dataset import rle_from_mask

    rng = np.random.default_rng(seed)
    cat_ids = [c.id for c in dataset.categories]
    dets: list[dict] = []

    def add(image_id: int, cat: int, m: np.ndarray) -> None:
        if m.any():
            dets.append({"image_id": image_id, "category_id": int(cat), "segmentation": rle_from_mask(m),
                         "score": float(rng.uniform(0.05, 1.0))})

    for im, insts in dataset.iter_images():
        for a in insts:
            if a.iscrowd or rng.random() < drop:
                continue
            m = a.mask(im.height, im.width)
            m = np.roll(m, (int(rng.integers(-max_shift, max_shift + 1)), int(rng.integers(-max_shift, max_shift + 1))),
                        axis=(0, 1))
            cat = a.category_id
            if len(cat_ids) > 1 and rng.random() < wrong_class:
                cat = int(rng.choice([c for c in cat_ids if c != cat]))
            add(im.id, cat, m)
            if rng.random() < duplicates:
                add(im.id, cat, np.roll(m, 1, axis=1))
        if rng.random() < false_positives:
            m = np.zeros((im.height, im.width), bool)
            y, x = int(rng.integers(0, im.height - 8)), int(rng.integers(0, im.width - 8))
            m[y:y + 8, x:x + 8] = True
            add(im.id, int(rng.choice(cat_ids)), m)
    return dets


def add_crowd_and_empty(dataset: Dataset, seed: int = 0, crowd_fraction: float = 0.1,
                        empty_fraction: float = 0.1) -> Dataset:
    """Turn some instances into ``iscrowd=1`` RLE regions and strip all instances from some images
    (in place; returns the dataset). COCO evaluation treats both specially."""
    from .dataset import rle_from_mask

    rng = np.random.default_rng(seed)
    by_id = dataset.image_by_id()
    empty = {im.id for im in dataset.images if rng.random() < empty_fraction}
    kept = []
    for a in dataset.instances:
        if a.image_id in empty:
            continue
        if rng.random() < crowd_fraction:
            im = by_id[a.image_id]
            a.segmentation = rle_from_mask(a.mask(im.height, im.width))
            a.iscrowd = 1
        kept.append(a)
    dataset.instances = kept
    return dataset
