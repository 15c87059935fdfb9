"""Hungarian matcher: 4*focal class + 5*L1 + 2*(1 - GIoU) + 5*mask BCE + 5*dice.

Mask costs are evaluated at ``num_sample_points`` uniform random points shared by all
predictions and GTs of one image (``grid_sample``, align_corners=False). The points can be
injected (``point_coords``) to make matching deterministic.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .box_ops import cxcywh_to_xyxy, pairwise_giou


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """masks [N, H, W], coords [N, P, 2] (x, y in [0, 1]) -> [N, P]."""
    grid = 2.0 * coords.unsqueeze(1) - 1.0
    return F.grid_sample(masks.unsqueeze(1), grid.to(masks.dtype), align_corners=False)[:, 0, 0]


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 4.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 cost_mask: float = 5.0, cost_dice: float = 5.0, alpha: float = 0.25, gamma: float = 2.0,
                 num_sample_points: int = 12544, with_mask: bool = True):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.cost_mask, self.cost_dice = cost_mask, cost_dice
        self.alpha, self.gamma = alpha, gamma
        self.num_sample_points, self.with_mask = num_sample_points, with_mask

    def cost_matrix(self, logits, boxes, masks, tgt, point_coords=None):
        """Cost [Q, n] for one image. ``tgt``: dict with ``labels`` [n], ``boxes`` [n, 4] cxcywh,
        ``masks`` [n, H, W] (float/bool); ``point_coords`` [P, 2] in [0, 1]."""
        prob = logits.float().sigmoid()[:, tgt["labels"]]
        neg = (1 - self.alpha) * prob.pow(self.gamma) * (-(1 - prob + 1e-8).log())
        pos = self.alpha * (1 - prob).pow(self.gamma) * (-(prob + 1e-8).log())
        c = self.cost_class * (pos - neg)
        tb = tgt["boxes"].float()
        c = c + self.cost_bbox * torch.cdist(boxes.float(), tb, p=1)
        c = c + self.cost_giou * (1 - pairwise_giou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(tb)))
        if self.with_mask and masks is not None and "masks" in tgt:
            if point_coords is None:
                point_coords = torch.rand(self.num_sample_points, 2, device=logits.device)
            pts = point_coords.to(logits.device).float()
            q, n = masks.shape[0], tb.shape[0]
            om = point_sample(masks.float(), pts[None].expand(q, -1, -1))
            tm = point_sample(tgt["masks"].float(), pts[None].expand(n, -1, -1))
            npts = pts.shape[0]
            pos_m = F.binary_cross_entropy_with_logits(om, torch.ones_like(om), reduction="none")
            neg_m = F.binary_cross_entropy_with_logits(om, torch.zeros_like(om), reduction="none")
            c_mask = (pos_m @ tm.t() + neg_m @ (1 - tm).t()) / npts
            sig = om.sigmoid()
            c_dice = 1 - (2 * sig @ tm.t() + 1) / (sig.sum(-1, keepdim=True) + tm.sum(-1)[None] + 1)
            c = c + self.cost_mask * c_mask + self.cost_dice * c_dice
        return c

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict], point_coords: list[torch.Tensor] | None = None):
        """Returns per image ``(pred_idx, gt_idx)`` int64 tensors (pred_idx sorted)."""
        logits, boxes = outputs["pred_logits"].detach(), outputs["pred_boxes"].detach()
        masks = outputs.get("pred_masks")
        masks = masks.detach() if masks is not None else None
        result = []
        for i, t in enumerate(targets):
            n = len(t["labels"])
            if n == 0:
                empty = torch.zeros(0, dtype=torch.long)
                result.append((empty, empty.clone()))
                continue
            c = self.cost_matrix(logits[i], boxes[i], masks[i] if masks is not None else None, t,
                                 None if point_coords is None else point_coords[i])
            c = torch.nan_to_num(c.cpu(), nan=1e8, posinf=1e8, neginf=-1e8).numpy()
            r, col = linear_sum_assignment(c)
            result.append((torch.as_tensor(r, dtype=torch.long), torch.as_tensor(col, dtype=torch.long)))
        return result
