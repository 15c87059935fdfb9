"""Training batches from a ``workbench.data.dataset.Dataset``.

Each image is resized (aspect ratio not kept) to a square side, scaled to [0, 1] (no mean/std,
as in PaddleDetection's Mask-RT-DETR reader); boxes become normalised cxcywh; GT masks are
resized (nearest) to the same side. Augmentation: horizontal flip and a random side per batch.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from workbench.data.dataset import Dataset


def category_index(ds: Dataset) -> dict[int, int]:
    """COCO category id -> contiguous 0-based class index (order of ``ds.categories``)."""
    return {c.id: i for i, c in enumerate(ds.categories)}


class InstanceSegDataset(TorchDataset):
    """Per image: uint8 RGB image, instance masks [n, H, W] bool, labels [n] (0-based).
    Crowd annotations and empty masks are skipped."""

    def __init__(self, ds: Dataset, hflip_prob: float = 0.0):
        self.ds = ds
        self.items = list(ds.iter_images())
        self.cat_index = category_index(ds)
        self.hflip_prob = hflip_prob

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        info, insts = self.items[i]
        img = self.ds.load_image(info)
        h, w = img.shape[:2]
        masks, labels = [], []
        for a in insts:
            if a.iscrowd or a.category_id not in self.cat_index:
                continue
            m = a.mask(h, w)
            if not m.any():
                continue
            masks.append(m)
            labels.append(self.cat_index[a.category_id])
        masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        if self.hflip_prob > 0 and random.random() < self.hflip_prob:
            img = img[:, ::-1]
            masks = masks[:, :, ::-1]
        return {"image": np.ascontiguousarray(img), "masks": np.ascontiguousarray(masks),
                "labels": np.asarray(labels, np.int64), "image_id": info.id, "orig_size": (h, w)}


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Normalised cxcywh boxes [n, 4] of bool masks [n, H, W] (pixel-edge convention)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4))
    rows, cols = masks.any(2), masks.any(1)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    y1 = torch.where(rows, ar_h, h).min(1).values.float()
    y2 = torch.where(rows, ar_h, -1).max(1).values.float() + 1
    x1 = torch.where(cols, ar_w, w).min(1).values.float()
    x2 = torch.where(cols, ar_w, -1).max(1).values.float() + 1
    return torch.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], 1)


def to_model_input(image: np.ndarray, size: int, interp: str = "bicubic") -> torch.Tensor:
    """uint8 HxWx3 RGB -> [3, size, size] float in [0, 1]."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().unsqueeze(0)
    kw = {"align_corners": False} if interp in ("bilinear", "bicubic") else {}
    x = F.interpolate(x, size=(size, size), mode=interp, **kw)
    return (x[0] / 255.0).clamp(0, 1)


class Collate:
    """Resize a list of samples to one square side (random among ``sizes``) and build targets."""

    def __init__(self, sizes=(640,), random_interp: bool = False):
        self.sizes = list(sizes)
        self.random_interp = random_interp

    def __call__(self, samples: list[dict]):
        size = random.choice(self.sizes)
        interp = random.choice(["nearest", "bilinear", "bicubic", "area"]) if self.random_interp else "bicubic"
        images, targets = [], []
        for s in samples:
            images.append(to_model_input(s["image"], size, interp))
            m = torch.from_numpy(s["masks"])
            if len(m):
                m = F.interpolate(m[None].float(), size=(size, size), mode="nearest")[0]
            else:
                m = torch.zeros((0, size, size))
            keep = m.flatten(1).any(1) if len(m) else torch.zeros(0, dtype=torch.bool)
            m = m[keep]
            labels = torch.from_numpy(s["labels"])[keep]
            targets.append({"labels": labels, "boxes": boxes_from_masks(m > 0.5), "masks": m,
                            "image_id": s["image_id"], "orig_size": s["orig_size"]})
        return torch.stack(images), targets


def make_loader(ds: Dataset, batch_size: int = 4, sizes=(640,), augment: bool = True, shuffle: bool = True,
                num_workers: int = 0, distributed: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader of ``(images [B,3,S,S], targets)``; uses a DistributedSampler when asked."""
    tds = InstanceSegDataset(ds, hflip_prob=0.5 if augment else 0.0)
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(tds, shuffle=shuffle)
    return DataLoader(tds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, collate_fn=Collate(sizes, random_interp=augment), drop_last=drop_last)
