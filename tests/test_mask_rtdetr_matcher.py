"""Hungarian matcher on hand-made cases; criterion finite, complete and decreasing."""
import math

import pytest
import torch

from workbench.models.mask_rtdetr.criterion import LOSS_NAMES, build_criterion, total_loss
from workbench.models.mask_rtdetr.matcher import HungarianMatcher
from workbench.models.mask_rtdetr.model import build_mask_rtdetr


def _box_mask(box, size=32):
    cx, cy, w, h = box
    m = torch.zeros(size, size)
    m[int((cy - h / 2) * size):int((cy + h / 2) * size), int((cx - w / 2) * size):int((cx + w / 2) * size)] = 1
    return m


def test_matcher_box_and_class_assignment():
    gt_boxes = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.7, 0.3, 0.2]])
    pred_boxes = torch.tensor([[[0.74, 0.71, 0.3, 0.2],   # ~ GT1
                                [0.5, 0.5, 0.9, 0.9],     # poor for both
                                [0.25, 0.26, 0.2, 0.2]]])  # ~ GT0
    logits = torch.full((1, 3, 3), -4.0)
    logits[0, 0, 2] = 4.0
    logits[0, 2, 0] = 4.0
    targets = [{"labels": torch.tensor([0, 2]), "boxes": gt_boxes}]
    m = HungarianMatcher(with_mask=False)
    (src, tgt), = m({"pred_logits": logits, "pred_boxes": pred_boxes}, targets)
    assert dict(zip(src.tolist(), tgt.tolist())) == {0: 1, 2: 0}


def test_matcher_mask_cost_decides_with_injected_points():
    # identical boxes and logits: only the masks can separate the two candidates
    gt_box = [0.5, 0.5, 0.5, 0.5]
    gt_mask = _box_mask([0.3, 0.3, 0.3, 0.3])
    pred_boxes = torch.tensor([[gt_box, gt_box]])
    logits = torch.zeros(1, 2, 1)
    good = (gt_mask * 20 - 10)  # logits agreeing with the GT mask
    bad = -good
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([gt_box]), "masks": gt_mask[None]}]
    pts = [torch.rand(500, 2, generator=torch.Generator().manual_seed(0))]
    m = HungarianMatcher()
    for order, expected in (((bad, good), 1), ((good, bad), 0)):
        out = {"pred_logits": logits, "pred_boxes": pred_boxes, "pred_masks": torch.stack(order)[None]}
        (src, tgt), = m(out, targets, point_coords=pts)
        assert src.tolist() == [expected] and tgt.tolist() == [0]
    c = m.cost_matrix(logits[0], pred_boxes[0], torch.stack((good, bad)), targets[0], pts[0])
    assert c.shape == (2, 1) and c[0, 0] < c[1, 0]


def test_matcher_more_gts_than_queries_and_empty_image():
    m = HungarianMatcher(with_mask=False)
    out = {"pred_logits": torch.zeros(2, 2, 2), "pred_boxes": torch.rand(2, 2, 4) * 0.5 + 0.25}
    targets = [{"labels": torch.tensor([0, 1, 1]), "boxes": torch.rand(3, 4) * 0.5 + 0.25},
               {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    res = m(out, targets)
    assert len(res[0][0]) == 2 and len(set(res[0][1].tolist())) == 2
    assert len(res[1][0]) == 0


def _batch(size=128):
    masks, boxes = [], []
    for b in ([0.3, 0.3, 0.3, 0.25], [0.65, 0.7, 0.4, 0.3]):
        masks.append(_box_mask(b, size))
        boxes.append(b)
    t0 = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor(boxes), "masks": torch.stack(masks)}
    t1 = {"labels": torch.tensor([1]), "boxes": torch.tensor([boxes[0]]), "masks": torch.stack(masks[:1])}
    return [t0, t1]


def test_criterion_keys_and_finite():
    torch.manual_seed(0)
    model = build_mask_rtdetr("S", 2, num_queries=16, num_decoder_layers=2, num_denoising=8).train()
    crit = build_criterion(2, num_sample_points=256)
    targets = _batch()
    losses = crit(model(torch.rand(2, 3, 128, 128), targets), targets)
    expected = {f"loss_{n}{p}" for n in LOSS_NAMES for p in ("", "_aux", "_dn", "_aux_dn")}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    # an image batch without any GT still gives a finite loss (class term only)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 128, 128)}] * 2
    l2 = crit(model(torch.rand(2, 3, 128, 128), empty), empty)
    assert torch.isfinite(total_loss(l2)).item()
    assert float(l2["loss_bbox"].detach()) == 0.0 and float(l2["loss_class"].detach()) > 0


def test_vfl_last_layer_uses_mask_iou():
    crit = build_criterion(1, num_sample_points=64)
    m = _box_mask([0.5, 0.5, 0.5, 0.5], 16)
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]), "masks": m[None]}]
    out = {"pred_logits": torch.zeros(1, 1, 1), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.5, 0.5]]]),
           "pred_masks": (torch.zeros(1, 16, 16) - 10)[None].expand(1, 1, 16, 16)}  # perfect box, empty mask
    idx = [(torch.tensor([0]), torch.tensor([0]))]
    n = torch.tensor([1.0])
    mask_iou_loss = crit.layer_losses(out, targets, idx, n, "mask")["class"]
    box_iou_loss = crit.layer_losses(out, targets, idx, n, "bbox")["class"]
    # matched query, logit 0: VFL = 4 * t * bce(0, t) = 4 * t * log 2 with t the IoU target.
    # mask IoU at 2x the 16 px mask grid: empty prediction vs a 16x16 GT -> t = 0.01 / (256 + 0.01)
    assert float(mask_iou_loss) == pytest.approx(4 * math.log(2) * 0.01 / 256.01, rel=1e-3)
    # box IoU of identical boxes -> t = 1
    assert float(box_iou_loss) == pytest.approx(4 * math.log(2), rel=1e-4)


@pytest.mark.slow
def test_criterion_decreases_on_fixed_batch():
    torch.manual_seed(0)
    model = build_mask_rtdetr("S", 2, num_queries=16, num_decoder_layers=2, num_denoising=8, freeze_norm=False).train()
    crit = build_criterion(2, num_sample_points=256)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    x = torch.rand(2, 3, 128, 128)
    targets = _batch()
    history = []
    for step in range(15):
        g = torch.Generator().manual_seed(step)
        losses = crit(model(x, targets, dn_generator=g), targets, generator=g)
        loss = total_loss(losses)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        history.append(float(loss))
    assert sum(history[-3:]) / 3 < 0.8 * sum(history[:3]) / 3, history
