"""End to end: data pipeline, training loop, EMA, checkpoints, prediction and COCO segm AP.

Mask-RT-DETR-S with a reduced decoder (20 queries, 2 layers, 512 sample points) at 160 px must
overfit 4 generated images of rectangles and discs to segm AP >= 0.5 (pycocotools).
"""
import time

import cv2
import numpy as np
import pytest
import torch

from workbench.data.dataset import Dataset, rle_from_mask
from workbench.engine.classes import ClassMap
from workbench.evaluation import coco_metrics, flat_metrics, predict_split, to_coco_detections
from workbench.models.mask_rtdetr.criterion import build_criterion
from workbench.models.mask_rtdetr.data import make_loader
from workbench.models.mask_rtdetr.engine import (
    ModelEMA,
    build_optimizer,
    build_warmup_scheduler,
    load_checkpoint,
    predict_images,
    save_checkpoint,
    train_one_epoch,
)
from workbench.models.mask_rtdetr.facade import MaskRTDETRModel
from workbench.models.mask_rtdetr.model import build_mask_rtdetr

SIZE = 160


def make_shapes_dataset(root, n_images=4, size=SIZE, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    images, anns, aid = [], [], 1
    for i in range(n_images):
        img = np.full((size, size, 3), 30, np.uint8)
        occupied = np.zeros((size, size), bool)
        for j in range(int(rng.integers(2, 4))):
            cls = (i + j) % 2
            for _ in range(50):  # place without overlap
                m = np.zeros((size, size), np.uint8)
                cx, cy = (int(v) for v in rng.integers(30, size - 30, 2))
                r = int(rng.integers(15, 28))
                if cls == 0:
                    cv2.rectangle(m, (cx - r, cy - int(r * 0.7)), (cx + r, cy + int(r * 0.7)), 1, -1)
                else:
                    cv2.circle(m, (cx, cy), r, 1, -1)
                if not (occupied & (m > 0)).any():
                    break
            mask = m > 0
            occupied |= mask
            img[mask] = (220, 60, 60) if cls == 0 else (60, 200, 80)
            ys, xs = np.nonzero(mask)
            anns.append({"id": aid, "image_id": i + 1, "category_id": cls + 1, "segmentation": rle_from_mask(mask),
                         "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
                         "area": float(mask.sum()), "iscrowd": 0})
            aid += 1
        cv2.imwrite(str(root / f"{i}.png"), img[:, :, ::-1])
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
    cats = [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "disc"}]
    return Dataset.from_coco_dict({"images": images, "annotations": anns, "categories": cats}, image_root=root)


def test_data_pipeline_targets(tmp_path):
    ds = make_shapes_dataset(tmp_path, n_images=2)
    images, targets = next(iter(make_loader(ds, batch_size=2, sizes=(96, 128), augment=True, shuffle=False)))
    s = images.shape[-1]
    assert images.shape == (2, 3, s, s) and s in (96, 128) and 0 <= images.min() and images.max() <= 1
    for t in targets:
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["masks"].shape == (n, s, s)
        assert ((t["boxes"] > 0) & (t["boxes"] <= 1)).all()
        assert set(t["labels"].tolist()) <= {0, 1}
        # the box encloses its mask
        for b, m in zip(t["boxes"], t["masks"]):
            ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
            assert abs((xs.min() + xs.max() + 1) / 2 / s - b[0]) < 1e-4


@pytest.mark.slow
def test_overfit_segm_ap(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    import random
    random.seed(0)
    ds = make_shapes_dataset(tmp_path)
    model = build_mask_rtdetr("S", 2, num_queries=20, num_decoder_layers=2, num_denoising=10, freeze_norm=False)
    crit = build_criterion(2, num_sample_points=512)
    opt = build_optimizer(model, lr=3e-4, backbone_lr_mult=1.0)
    sched = build_warmup_scheduler(opt, warmup_steps=20, start_factor=0.1)
    ema = ModelEMA(model, decay=0.9999, warmup=2000)
    loader = make_loader(ds, batch_size=4, sizes=(SIZE,), augment=False, shuffle=False)
    t0 = time.time()
    first = None
    for _epoch in range(110):
        stats = train_one_epoch(model, crit, loader, opt, "cpu", scheduler=sched, ema=ema, clip_max_norm=0.1)
        first = first if first is not None else stats["loss"]
    train_s = time.time() - t0
    assert stats["loss"] < 0.5 * first
    wrapped = MaskRTDETRModel.from_net("Mask-RT-DETR-S", model, ClassMap.from_dataset(ds), SIZE)
    ap = flat_metrics(coco_metrics(ds, to_coco_detections(ds, predict_split(wrapped, ds, progress=False))))
    print(f"overfit: {train_s:.0f}s training, loss {first:.1f} -> {stats['loss']:.1f}, {ap}")
    assert ap["segm_AP"] >= 0.5, ap

    # predictions: numpy outputs, 0-based labels, masks at the original size
    img = ds.load_image(ds.images[0])
    pred = predict_images(model, [img], threshold=0.3, size=SIZE)[0]
    assert pred["masks"].shape[1:] == img.shape[:2] and pred["masks"].dtype == bool
    assert pred["boxes"].shape == (len(pred["scores"]), 4) and set(pred["labels"].tolist()) <= {0, 1}
    assert len(pred["scores"]) >= 1

    # checkpoint round trip with EMA
    ck = save_checkpoint(tmp_path / "ck.pth", model, ema=ema, optimizer=opt, epoch=110)
    restored, meta = load_checkpoint(ck)
    assert meta["epoch"] == 110 and ema.updates == 110
    for (k, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), k
    ema_model, _ = load_checkpoint(ck, use_ema_weights=True)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, ema_model.state_dict()[k]), k
