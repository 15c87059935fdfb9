"""Training batches for PP-YOLOE_seg: the workbench's batch format (``mask_rtdetr.data``: square
resize without keeping the aspect ratio, bicubic, [0, 1] with no mean/std, as Paddle's seg reader:
``NormalizeImage`` mean 0, std 1), with the reference recipe's ``RandomFlip`` and a
``RandomDistort`` (brightness, contrast, saturation, hue, each with probability 0.5).

Not ported from ``ppyoloe_plus_seg_reader.yml``: ``RandomExpand`` (zoom-out onto a mean-coloured
canvas) and ``RandomCrop`` (IoU-constrained crops). ``multi_scale`` (off by default: the seg reader
has none) picks one size per batch among 0.75x .. 1.25x of the input size."""
from __future__ import annotations

import random

import cv2
import numpy as np
from torch.utils.data import DataLoader

from workbench.data.dataset import Dataset

from ..mask_rtdetr.data import Collate, InstanceSegDataset


def random_distort(img: np.ndarray, rng: random.Random = random) -> np.ndarray:
    """Paddle's ``RandomDistort`` defaults: hue +-18, saturation/contrast/brightness x [0.5, 1.5],
    each applied with probability 0.5, in a random order of the last three."""
    out = img.astype(np.float32)

    def brightness(x):
        return x * rng.uniform(0.5, 1.5)

    def contrast(x):
        m = x.mean()
        return (x - m) * rng.uniform(0.5, 1.5) + m

    def saturation(x):
        gray = (x * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1, keepdims=True)
        return gray + (x - gray) * rng.uniform(0.5, 1.5)

    ops = [brightness, contrast, saturation]
    rng.shuffle(ops)
    for op in ops:
        if rng.random() < 0.5:
            out = op(out)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(rng.uniform(-9, 9))) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


class SegTrainDataset(InstanceSegDataset):
    def __init__(self, ds: Dataset, augment: bool):
        super().__init__(ds, hflip_prob=0.5 if augment else 0.0)
        self.distort = augment

    def __getitem__(self, i: int) -> dict:
        s = super().__getitem__(i)
        if self.distort:
            s["image"] = random_distort(s["image"])
        return s


def train_sizes(input_size: int, multi_scale: bool) -> list[int]:
    if not multi_scale:
        return [int(input_size)]
    return sorted({max(32, int(round(input_size * f / 32)) * 32) for f in (0.75, 0.875, 1.0, 1.125, 1.25)})


def make_loader(ds: Dataset, batch_size: int = 8, sizes=(640,), augment: bool = True, shuffle: bool = True,
                num_workers: int = 0, distributed: bool = False, drop_last: bool = False) -> DataLoader:
    tds = SegTrainDataset(ds, augment)
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(tds, shuffle=shuffle)
    return DataLoader(tds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, collate_fn=Collate(sizes, random_interp=False), drop_last=drop_last)
