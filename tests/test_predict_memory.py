"""Prediction memory does not grow with resolution x detections (issue 12, items 5 and 11).

``Result`` holds soft masks one instance at a time (``SoftMasks``: the model's low-resolution
masks, pasted/resized on demand) and binary masks as RLE made straight from each crop; nothing
makes an (N, H, W) array unless ``masks``/``mask_probs`` is asked for. These tests check that on
big images with many detections, and that the new path gives exactly the masks, RLEs and areas of
the dense computation it replaces.
"""
import json
import re
import tracemalloc

import numpy as np
import pytest
import torch

from workbench.engine.result import Result, SoftMasks, _rle_encode, rle_from_crop


def _dense_result(probs, boxes, **kw):
    n = len(probs)
    return Result(input_path=None, image_size=probs.shape[1:], boxes=boxes, scores=np.linspace(1, 0.1, n),
                  class_ids=np.arange(n) % 3 + 1, class_names=[f"c{i % 3}" for i in range(n)], **kw)


def _same_masks(a: Result, b: Result):
    assert a.rles == b.rles
    assert np.array_equal(a.areas, b.areas)
    assert np.array_equal(a.masks, b.masks)


def test_rle_from_crop_is_pycocotools_encode():
    rng = np.random.default_rng(0)
    cases = [(5, 4, 5, 4, 0, 0), (5, 1, 5, 3, 0, 2), (1, 4, 3, 4, 2, 0), (0, 0, 3, 3, 1, 1), (3, 3, 3, 7, 0, 4)]
    cases += [(*rng.integers(0, 25, 2), 0, 0, 0, 0) for _ in range(400)]
    for h, w, hh, ww, y0, x0 in cases:
        if hh == 0:  # a random crop placed at random in a slightly bigger image
            hh, ww = h + rng.integers(0, 4), w + rng.integers(0, 4)
            y0, x0 = rng.integers(0, hh - h + 1), rng.integers(0, ww - w + 1)
        if hh == 0 or ww == 0:
            continue
        crop = rng.random((h, w)) < rng.random()
        if rng.random() < 0.2:
            crop[:] = True
        full = np.zeros((hh, ww), bool)
        full[y0:y0 + h, x0:x0 + w] = crop
        assert rle_from_crop(y0, x0, crop, (hh, ww)) == _rle_encode(full), (h, w, hh, ww, y0, x0)
    with pytest.raises(ValueError, match="does not fit"):
        rle_from_crop(3, 0, np.ones((3, 3), bool), (4, 4))


def test_big_image_many_detections_never_dense(tmp_path):
    """100 detections on a 3000x4000 image: an (N, H, W) bool array would be 1.2 GB; every output
    (RLEs, areas, COCO, JSON, overlay PNG, a re-thresholded copy) stays far under that."""
    h, w, n = 3000, 4000, 100
    rng = np.random.default_rng(1)
    crops, boxes = [], []
    for _ in range(n):
        y0, x0 = int(rng.integers(0, h - 120)), int(rng.integers(0, w - 160))
        c = (rng.random((120, 160)) * 255).astype(np.uint8)
        crops.append((y0, x0, c))
        boxes.append([x0, y0, x0 + 160, y0 + 120])
    image = np.full((h, w, 3), 90, np.uint8)
    r = Result(input_path=None, image_size=(h, w), boxes=boxes, scores=np.linspace(1, 0.1, n),
               class_ids=np.arange(n) % 3 + 1, class_names=[f"c{i % 3}" for i in range(n)],
               mask_probs=SoftMasks((h, w), crops), image=image)
    tracemalloc.start()
    try:
        areas = r.areas
        coco = r.to_coco(3)
        p = r.save_to_json(tmp_path / "big_res.json")
        g = r.filter(threshold=0.5, mask_threshold=0.3)
        g_areas = g.areas
        img = r.save_to_img(tmp_path / "big_res.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # the image copy (36 MiB) and one crop at a time
    assert r._masks is None and g._masks is None  # no (N, H, W) bitmaps were made
    assert len(coco) == n and img.exists() and len(json.loads(p.read_text())["boxes"]) == n
    # the numbers are the crops' own
    cut = Result._prob_cut(0.5)
    assert areas.tolist() == [float((c >= cut).sum()) for _, _, c in crops]
    k = int((r.scores >= 0.5).sum())
    assert len(g) == k and g_areas.tolist() == [float((c >= Result._prob_cut(0.3)).sum()) for _, _, c in crops[:k]]
    back = Result.from_json(p)
    assert back.rles == r.rles and np.array_equal(back.areas, areas)


def test_soft_crops_equal_dense_result():
    """A Result over box crops gives the masks, RLEs, areas, filter and overlay of the same soft masks
    held as a dense (N, H, W) array."""
    rng = np.random.default_rng(2)
    h, w = 50, 70
    probs = np.zeros((4, h, w), np.uint8)
    probs[0, 3:20, 5:30] = rng.integers(0, 256, (17, 25))
    probs[1, 25:50, 40:70] = rng.integers(100, 256, (25, 30))
    probs[2, 0:10, 60:70] = 200
    boxes = [[5, 3, 30, 20], [40, 25, 70, 50], [60, 0, 70, 10], [0, 0, 1, 1]]  # the last one empty
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    soft = _dense_result(probs, boxes, mask_probs=SoftMasks.from_dense(probs), image=image)
    dense = _dense_result(probs, boxes, masks=probs >= 128, image=image)
    assert np.array_equal(soft.mask_probs, probs)
    _same_masks(soft, dense)
    low = soft.filter(mask_threshold=0.2)
    _same_masks(low, _dense_result(probs, boxes, masks=probs >= 0.2 * 255 - 1e-6))
    assert np.array_equal(soft.visualize(), dense.visualize())
    assert np.array_equal(soft[1:3].masks, dense.masks[1:3])


def test_detectron2_pasted_soft_masks_equal_paste_masks_in_image():
    pytest.importorskip("detectron2")
    from detectron2.layers import paste_masks_in_image

    from workbench.models.detectron2.predictor import PastedSoftMasks

    g = torch.Generator().manual_seed(0)
    h, w, n = 90, 120, 12
    probs = torch.rand((n, 28, 28), generator=g)
    xy = torch.rand((n, 2), generator=g) * torch.tensor([w - 10, h - 10])
    wh = 2 + torch.rand((n, 2), generator=g) * torch.tensor([w, h]) * 0.8
    boxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([w, h]))], 1)
    soft = PastedSoftMasks((h, w), probs, boxes)
    ref = paste_masks_in_image(probs, boxes, (h, w), threshold=-1).numpy()
    assert np.array_equal(soft.dense(), ref)
    a = _dense_result(ref, boxes.numpy(), mask_probs=soft)
    b = _dense_result(ref, boxes.numpy(), mask_probs=ref)
    _same_masks(a, b)
    _same_masks(a.filter(threshold=0.5, mask_threshold=0.7), b.filter(threshold=0.5, mask_threshold=0.7))
    assert isinstance(a.filter(threshold=0.5).soft_masks, PastedSoftMasks)


def test_mask_rtdetr_per_instance_upsampling_equals_batched():
    from workbench.models.mask_rtdetr.postprocess import UpsampledSoftMasks, binary_masks, image_detections

    g = torch.Generator().manual_seed(0)
    k, size = 15, (75, 101)
    logits = torch.randn((k, 24, 24), generator=g) * 3
    scores, labels = torch.rand(k, generator=g), torch.randint(0, 5, (k,), generator=g)
    boxes = torch.rand((k, 4), generator=g).sort(1).values
    dense = image_detections(scores, labels, boxes, logits, size, threshold=0.3)
    lazy = image_detections(scores, labels, boxes, logits, size, threshold=0.3, dense=False)
    assert torch.equal(dense["boxes"], lazy["boxes"]) and "mask_probs" not in lazy
    ref_u8 = (dense["mask_probs"] * 255).round().to(torch.uint8).numpy()  # what infer held before
    soft = UpsampledSoftMasks(size, lazy["mask_logits"])
    assert np.array_equal(soft.dense(), ref_u8)
    assert np.array_equal(binary_masks(lazy["mask_logits"], size, 0.5), (dense["mask_probs"] >= 0.5).numpy())
    _same_masks(_dense_result(ref_u8, dense["boxes"].numpy(), mask_probs=soft),
                _dense_result(ref_u8, dense["boxes"].numpy(), mask_probs=ref_u8))


def _status(key):
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def test_mask_rtdetr_infer_big_image_memory(tmp_path):
    """A small random-init Mask-RT-DETR, 100 detections on a 1500x2000 image: infer and every output
    add far less than the (N, H, W) float32 masks (1.2 GB) the old post-processing made."""
    from workbench.models.mask_rtdetr.facade import create_model
    from workbench.models.mask_rtdetr.postprocess import UpsampledSoftMasks

    torch.manual_seed(0)
    model = create_model("Mask-RT-DETR-S", device="cpu", input_size=128, num_queries=20, num_decoder_layers=2,
                         num_denoising=10, num_sample_points=512)
    image = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    model.infer([image[:200, :200].copy()], [None], threshold=0.0)  # warm-up
    try:
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # restart the peak-RSS mark from the current RSS
    except OSError:
        before = None
    r = model.infer([image], [None], threshold=0.0)[0]
    assert len(r) == 100 and isinstance(r.soft_masks, UpsampledSoftMasks)
    assert tuple(r.soft_masks.logits.shape) == (100, 32, 32)  # stride 4 of the 128 px input
    r.to_coco(1)
    r.save_to_json(tmp_path / "x_res.json")
    r.save_to_img(tmp_path / "x_res.png")
    assert r._masks is None
    if before is not None:
        added = _status("VmHWM") - before
        assert added < 400 * 2**20, f"predicting added {added / 2**20:.0f} MiB"
