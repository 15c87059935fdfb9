"""PP-YOLOE_seg's losses (PaddleDetection ``PPYOLOEInsHead.get_loss``): varifocal classification,
GIoU and distribution focal loss on the boxes, and the prototype mask loss (BCE of
``coeffs @ proto`` against the assigned ground-truth mask, cropped to its box and divided by the
box's normalised area), all divided by the sum of the soft targets. Weights ``class 1.0, iou 2.5,
dfl 0.5``; the mask loss takes the ``iou`` weight, as Paddle's does.

Targets: per image ``labels`` [n] (0-based), ``boxes`` [n, 4] normalised cxcywh and ``masks``
[n, S, S] at the input size (``mask_rtdetr.data.Collate``, the workbench's batch format).

One deliberate difference: Paddle normalises the mask-loss boxes by a hard-coded 640 x 640; this
port uses the actual input size (the same numbers at 640)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .assigner import TaskAlignedAssigner

LOSS_WEIGHT = {"class": 1.0, "iou": 2.5, "dfl": 0.5}


def varifocal_loss(pred: torch.Tensor, gt_score: torch.Tensor, label: torch.Tensor, alpha: float = 0.75,
                   gamma: float = 2.0) -> torch.Tensor:
    """Sum over anchors and classes; the weight is differentiated too, as in Paddle (torch's
    ``binary_cross_entropy`` refuses a weight that needs a gradient, hence the explicit BCE, with
    its log clamped at -100 like torch's)."""
    weight = alpha * pred.pow(gamma) * (1 - label) + gt_score * label
    bce = -(gt_score * pred.log().clamp(min=-100) + (1 - gt_score) * (1 - pred).log().clamp(min=-100))
    return (bce * weight).sum()


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """1 - GIoU of xyxy boxes [N, 4] -> [N, 1] (Paddle's ``GIoULoss``)."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).prod(-1)
    union = area_p + area_t - overlap + eps
    iou = overlap / union
    c = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(-1) + eps
    return (1 - (iou - (c - union) / c)).unsqueeze(-1)


def dfl_loss(pred_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: [N, 4, bins] logits, [N, 4] targets in bin units -> [N, 1]."""
    left = target.floor().long()
    w_left = (left + 1).float() - target
    bins = pred_dist.shape[-1]
    flat = pred_dist.reshape(-1, bins)
    l_left = F.cross_entropy(flat, left.flatten(), reduction="none").view_as(target) * w_left
    l_right = F.cross_entropy(flat, (left + 1).flatten(), reduction="none").view_as(target) * (1 - w_left)
    return (l_left + l_right).mean(-1, keepdim=True)


def crop_mask(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero ``masks`` [n, h, w] outside ``boxes`` [n, 4] (xyxy in mask pixels)."""
    _, h, w = masks.shape
    x1, y1, x2, y2 = boxes[:, :, None].chunk(4, 1)
    r = torch.arange(w, device=masks.device, dtype=boxes.dtype)[None, None, :]
    c = torch.arange(h, device=masks.device, dtype=boxes.dtype)[None, :, None]
    return masks * ((r >= x1) & (r < x2) & (c >= y1) & (c < y2)).to(masks.dtype)


def pad_targets(targets: list[dict], size: tuple[int, int], mask_size: tuple[int, int], device):
    """Batch the ground truth: labels [B, n, 1], xyxy pixel boxes [B, n, 4], pad mask [B, n, 1],
    masks [B, n, h * w] at the prototype size (nearest)."""
    b = len(targets)
    n = max((len(t["labels"]) for t in targets), default=0)
    h, w = size
    mh, mw = mask_size
    labels = torch.zeros((b, n, 1), dtype=torch.long, device=device)
    boxes = torch.zeros((b, n, 4), device=device)
    pad = torch.zeros((b, n, 1), device=device)
    masks = torch.zeros((b, n, mh * mw), device=device)
    for i, t in enumerate(targets):
        k = len(t["labels"])
        if not k:
            continue
        labels[i, :k, 0] = t["labels"].to(device)
        cx, cy, bw, bh = t["boxes"].to(device).float().unbind(-1)
        boxes[i, :k] = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
        pad[i, :k] = 1.0
        m = t["masks"].to(device).float()
        if tuple(m.shape[-2:]) != (mh, mw):
            m = F.interpolate(m[None], (mh, mw), mode="nearest")[0]
        masks[i, :k] = m.flatten(1)
    return labels, boxes, pad, masks


class PPYOLOESegLoss(nn.Module):
    def __init__(self, num_classes: int, reg_max: int = 16, loss_weight: dict | None = None, topk: int = 13,
                 alpha: float = 1.0, beta: float = 6.0):
        super().__init__()
        self.num_classes = num_classes
        self.reg_channels = reg_max + 1
        self.loss_weight = dict(loss_weight or LOSS_WEIGHT)
        self.assigner = TaskAlignedAssigner(topk=topk, alpha=alpha, beta=beta)

    def forward(self, out: dict, targets: list[dict]) -> dict:
        scores, distri, boxes = out["scores"], out["reg_distri"], out["boxes"]
        coeffs, proto = out["coeffs"], out["proto"]
        points, stride = out["anchor_points"], out["stride"]
        bsz = scores.shape[0]
        mh, mw = proto.shape[-2:]
        img_h, img_w = mh * 4, mw * 4
        gt_labels, gt_boxes, pad, gt_masks = pad_targets(targets, (img_h, img_w), (mh, mw), scores.device)
        labels, a_boxes, a_scores, gt_index = self.assigner(scores.detach(), boxes.detach(), points, gt_labels,
                                                            gt_boxes, pad, self.num_classes)
        one_hot = F.one_hot(labels, self.num_classes + 1)[..., :-1].to(scores.dtype)
        loss_cls = varifocal_loss(scores, a_scores, one_hot)
        score_sum = a_scores.sum()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(score_sum)
            score_sum = score_sum / torch.distributed.get_world_size()
        score_sum = score_sum.clamp(min=1.0)
        loss_cls = loss_cls / score_sum
        pos = labels != self.num_classes
        zero = (distri * 0).sum() + (coeffs * 0).sum() + (proto * 0).sum()
        if pos.sum() == 0:
            loss_iou = loss_dfl = loss_mask = zero
        else:
            points_s = points / stride
            pred_s = boxes / stride  # stride units, as Paddle's loss
            tgt_s = a_boxes / stride
            weight = a_scores.sum(-1)[pos].unsqueeze(-1)
            loss_iou = (giou_loss(pred_s[pos], tgt_s[pos]) * weight).sum() / score_sum
            ltrb = torch.cat([points_s - tgt_s[..., :2], tgt_s[..., 2:] - points_s], -1)
            ltrb = ltrb.clamp(0, self.reg_channels - 1 - 0.01)
            pred_dist = distri[pos].reshape(-1, 4, self.reg_channels)
            loss_dfl = (dfl_loss(pred_dist, ltrb[pos]) * weight).sum() / score_sum
            a_masks = gt_masks.reshape(-1, mh * mw)[gt_index.flatten()].reshape(bsz, -1, mh, mw)
            norm = a_boxes / torch.tensor([img_w, img_h, img_w, img_h], device=a_boxes.device, dtype=a_boxes.dtype)
            area = (norm[..., 2] - norm[..., 0]) * (norm[..., 3] - norm[..., 1])
            mxyxy = norm * torch.tensor([mw, mh, mw, mh], device=norm.device, dtype=norm.dtype)
            loss_mask = zero
            for i in range(bsz):
                p = pos[i]
                if not p.any():
                    continue
                logits = (coeffs[i][p] @ proto[i].reshape(proto.shape[1], -1)).reshape(-1, mh, mw)
                bce = F.binary_cross_entropy_with_logits(logits, a_masks[i][p], reduction="none")
                loss_mask = loss_mask + (crop_mask(bce, mxyxy[i][p]).mean((1, 2)) / area[i][p]).sum()
            loss_mask = loss_mask / score_sum
        w = self.loss_weight
        return {"loss_cls": w["class"] * loss_cls, "loss_iou": w["iou"] * loss_iou, "loss_dfl": w["dfl"] * loss_dfl,
                "loss_mask": w["iou"] * loss_mask}


def build_criterion(num_classes: int, **kwargs) -> PPYOLOESegLoss:
    return PPYOLOESegLoss(num_classes, **kwargs)


def total_loss(losses: dict) -> torch.Tensor:
    return sum(losses.values())
