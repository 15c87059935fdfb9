"""Mask-RT-DETR loss (Paddle's ``MaskDINOLoss``).

* class: varifocal loss x4; the target score is the mask IoU for the last layer (of the matching
  part and of the DN part) and the box IoU for every auxiliary layer (enc, init, dec_1..L-1);
* boxes: L1 x5 and GIoU x2, summed and divided by the number of GTs;
* masks: BCE x5 and dice x5 at ``num_sample_points`` points per matched mask, chosen by
  uncertainty (3x oversampling, 75% most uncertain + 25% uniform).

Keys: ``loss_{class,bbox,giou,mask,dice}`` plus ``_aux``, ``_dn`` and ``_aux_dn`` variants.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .box_ops import cxcywh_to_xyxy, elementwise_giou, elementwise_iou
from .matcher import HungarianMatcher, point_sample

LOSS_NAMES = ("class", "bbox", "giou", "mask", "dice")


def varifocal_loss(logits, gt_score, label, normalizer, alpha: float = 0.75, gamma: float = 2.0):
    p = logits.sigmoid()
    weight = alpha * p.pow(gamma) * (1 - label) + gt_score * label
    loss = weight * F.binary_cross_entropy_with_logits(logits, gt_score, reduction="none")
    return loss.mean(1).sum() / normalizer


class MaskRTDETRCriterion(nn.Module):
    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None, weight_dict: dict | None = None,
                 num_sample_points: int = 12544, oversample_ratio: float = 3.0, important_sample_ratio: float = 0.75,
                 vfl_alpha: float = 0.75, vfl_gamma: float = 2.0):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher(num_sample_points=num_sample_points)
        self.weight_dict = dict(weight_dict or {"class": 4.0, "bbox": 5.0, "giou": 2.0, "mask": 5.0, "dice": 5.0})
        self.num_sample_points = num_sample_points
        self.num_oversample = int(num_sample_points * oversample_ratio)
        self.num_important = int(num_sample_points * important_sample_ratio)
        self.num_random = num_sample_points - self.num_important
        self.vfl_alpha, self.vfl_gamma = vfl_alpha, vfl_gamma

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _num_gts(targets, device) -> torch.Tensor:
        n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return n.clamp(min=1.0)

    @staticmethod
    def _gather(pred, targets, indices, key):
        src = torch.cat([pred[i][s.to(pred.device)] for i, (s, _) in enumerate(indices)])
        tgt = torch.cat([t[key][j.to(pred.device)] for t, (_, j) in zip(targets, indices)])
        return src, tgt

    def _mask_iou(self, out, targets, indices):
        src, tgt = self._gather(out["pred_masks"].detach(), targets, indices, "masks")
        src = F.interpolate(src.unsqueeze(0), scale_factor=2, mode="bilinear", align_corners=False)[0]
        tgt = F.interpolate(tgt.float().unsqueeze(0), size=src.shape[-2:], mode="bilinear", align_corners=False)[0]
        s = (src.flatten(1).sigmoid() > 0.5).float()
        t = (tgt.flatten(1) > 0.5).float()
        inter = (s * t).sum(1)
        union = s.sum(1) + t.sum(1) - inter
        return (inter + 1e-2) / (union + 1e-2)

    def _box_iou(self, out, targets, indices):
        src, tgt = self._gather(out["pred_boxes"].detach(), targets, indices, "boxes")
        return elementwise_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt.to(src.dtype)))

    def _loss_class(self, logits, targets, indices, num_gts, iou):
        b, q, c = logits.shape
        label = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        score = torch.zeros((b, q), dtype=logits.dtype, device=logits.device)
        if iou is not None:
            bi = torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(indices)]).to(logits.device)
            si = torch.cat([s for s, _ in indices]).to(logits.device)
            label[bi, si] = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in
                                       zip(targets, indices)]).to(logits.device)
            score[bi, si] = iou.to(logits.dtype)
        onehot = F.one_hot(label, self.num_classes + 1)[..., :-1].to(logits.dtype)
        gt_score = score.unsqueeze(-1) * onehot
        return self.weight_dict["class"] * varifocal_loss(logits, gt_score, onehot, num_gts / q,
                                                          self.vfl_alpha, self.vfl_gamma)

    def _loss_boxes(self, boxes, targets, indices, num_gts):
        src, tgt = self._gather(boxes, targets, indices, "boxes")
        tgt = tgt.to(src.dtype)
        l1 = F.l1_loss(src, tgt, reduction="sum") / num_gts
        giou = (1 - elementwise_giou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt))).sum() / num_gts
        return self.weight_dict["bbox"] * l1, self.weight_dict["giou"] * giou

    def sample_points(self, src_masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance sampling of point coords [N, P, 2] in [0, 1] from the predicted mask logits."""
        n = src_masks.shape[0]
        dev = src_masks.device
        cand = torch.rand(n, self.num_oversample, 2, generator=generator,
                          device="cpu" if generator is not None else dev).to(dev)
        unc = -point_sample(src_masks.detach().float(), cand).abs()
        top = unc.topk(self.num_important, dim=1).indices
        pts = torch.gather(cand, 1, top.unsqueeze(-1).expand(-1, -1, 2))
        if self.num_random > 0:
            extra = torch.rand(n, self.num_random, 2, generator=generator,
                               device="cpu" if generator is not None else dev).to(dev)
            pts = torch.cat([pts, extra], 1)
        return pts

    def _loss_masks(self, masks, targets, indices, num_gts, generator=None):
        src, tgt = self._gather(masks, targets, indices, "masks")
        pts = self.sample_points(src, generator)
        s = point_sample(src.float(), pts)
        t = point_sample(tgt.float(), pts).detach()
        bce = F.binary_cross_entropy_with_logits(s, t, reduction="none").mean(1).sum() / num_gts
        p = s.sigmoid()
        dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / num_gts
        return self.weight_dict["mask"] * bce, self.weight_dict["dice"] * dice

    def layer_losses(self, out, targets, indices, num_gts, iou_type: str, generator=None) -> dict:
        has_gt = sum(len(t["labels"]) for t in targets) > 0
        iou = None
        if has_gt:
            iou = self._mask_iou(out, targets, indices) if iou_type == "mask" else self._box_iou(out, targets, indices)
        losses = {"class": self._loss_class(out["pred_logits"], targets, indices, num_gts, iou)}
        if has_gt:
            losses["bbox"], losses["giou"] = self._loss_boxes(out["pred_boxes"], targets, indices, num_gts)
            losses["mask"], losses["dice"] = self._loss_masks(out["pred_masks"], targets, indices, num_gts, generator)
        else:
            zero = out["pred_boxes"].sum() * 0.0 + out["pred_masks"].sum() * 0.0
            for k in ("bbox", "giou", "mask", "dice"):
                losses[k] = zero
        return losses

    def _set_losses(self, layers, targets, num_gts, postfix, fixed_indices=None, generator=None) -> dict:
        """``layers``: list of output dicts, the last one being the main prediction."""
        result = {}
        *aux, last = layers
        idx = fixed_indices if fixed_indices is not None else self.matcher(last, targets)
        for k, v in self.layer_losses(last, targets, idx, num_gts, "mask", generator).items():
            result[f"loss_{k}{postfix}"] = v
        sums = {}
        for out in aux:
            idx = fixed_indices if fixed_indices is not None else self.matcher(out, targets)
            for k, v in self.layer_losses(out, targets, idx, num_gts, "bbox", generator).items():
                sums[k] = sums.get(k, 0.0) + v
        for k in LOSS_NAMES:
            if k in sums:
                result[f"loss_{k}_aux{postfix}"] = sums[k]
        return result

    @staticmethod
    def dn_match_indices(targets, dn_meta):
        out = []
        g = dn_meta["dn_num_group"]
        for t, pos in zip(targets, dn_meta["dn_positive_idx"]):
            n = len(t["labels"])
            if n:
                out.append((pos.cpu(), torch.arange(n).repeat(g)))
            else:
                e = torch.zeros(0, dtype=torch.long)
                out.append((e, e.clone()))
        return out

    def forward(self, outputs: dict, targets: list[dict], generator: torch.Generator | None = None) -> dict:
        """``targets``: per image ``labels`` [n] int64, ``boxes`` [n, 4] normalised cxcywh,
        ``masks`` [n, H, W] float in {0, 1} (any resolution; sampled in normalised coords)."""
        device = outputs["pred_logits"].device
        num_gts = self._num_gts(targets, device)
        main = {k: outputs[k] for k in ("pred_logits", "pred_boxes", "pred_masks")}
        layers = list(outputs.get("aux_outputs") or []) + [main]
        losses = self._set_losses(layers, targets, num_gts, "", generator=generator)
        if outputs.get("dn_outputs"):
            meta = outputs["dn_meta"]
            idx = self.dn_match_indices(targets, meta)
            losses.update(self._set_losses(outputs["dn_outputs"], targets, num_gts * meta["dn_num_group"], "_dn",
                                           fixed_indices=idx, generator=generator))
        return losses


def total_loss(losses: dict) -> torch.Tensor:
    return sum(losses.values())


def build_criterion(num_classes: int, num_sample_points: int = 12544, **kwargs) -> MaskRTDETRCriterion:
    matcher = HungarianMatcher(num_sample_points=num_sample_points)
    return MaskRTDETRCriterion(num_classes, matcher=matcher, num_sample_points=num_sample_points, **kwargs)
