"""TaskAlignedAssigner (TOOD; PaddleDetection ``assigners/task_aligned_assigner.py``): for each
ground truth the ``topk`` anchors (13) whose centres lie inside it and whose alignment metric
``score^alpha * IoU^beta`` (1.0, 6.0) is largest; an anchor claimed by several ground truths goes to
the one its predicted box overlaps most; the soft target of a positive is its normalised metric
(metric / max metric of its ground truth x max IoU of its ground truth).

PP-YOLOE_seg's config sets ``static_assigner_epoch: -1``: the ATSS warm-up assigner is never used,
so it is not ported."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of xyxy boxes ``a`` [B, n, 4] and ``b`` [B, L, 4] -> [B, n, L]."""
    a, b = a.unsqueeze(2), b.unsqueeze(1)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    overlap = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return overlap / (area_a + area_b - overlap + eps)


def points_inside_boxes(points: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """[L, 2] points, [B, n, 4] boxes -> [B, n, L] float, 1 where the point is strictly inside."""
    p = points.view(1, 1, -1, 2)
    b = boxes.unsqueeze(2)
    ltrb = torch.cat([p - b[..., :2], b[..., 2:] - p], -1)
    return (ltrb.min(-1).values > eps).to(boxes.dtype)


class TaskAlignedAssigner:
    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0, eps: float = 1e-9):
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, pred_scores: torch.Tensor, pred_bboxes: torch.Tensor, anchor_points: torch.Tensor,
                 gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, pad_gt_mask: torch.Tensor, bg_index: int):
        """``pred_scores`` [B, L, C], ``pred_bboxes`` [B, L, 4] and ``gt_bboxes`` [B, n, 4] xyxy in input
        pixels, ``anchor_points`` [L, 2], ``gt_labels`` [B, n, 1] int64, ``pad_gt_mask`` [B, n, 1] (1: real).

        Returns ``labels`` [B, L] (``bg_index``: background), ``bboxes`` [B, L, 4], ``scores``
        [B, L, C] (soft targets) and ``gt_index`` [B, L] (into the flattened B x n ground truths)."""
        b, n_anchors, n_classes = pred_scores.shape
        n = gt_bboxes.shape[1]
        dev = pred_scores.device
        if n == 0:
            return (torch.full((b, n_anchors), bg_index, dtype=torch.long, device=dev),
                    torch.zeros((b, n_anchors, 4), device=dev), torch.zeros((b, n_anchors, n_classes), device=dev),
                    torch.zeros((b, n_anchors), dtype=torch.long, device=dev))
        ious = pairwise_iou(gt_bboxes, pred_bboxes)  # [B, n, L]
        labels = gt_labels.squeeze(-1).long()  # [B, n]
        cls_scores = torch.gather(pred_scores.transpose(1, 2), 1, labels.unsqueeze(-1).expand(-1, -1, n_anchors))
        metrics = cls_scores.pow(self.alpha) * ious.pow(self.beta)
        inside = points_inside_boxes(anchor_points, gt_bboxes)
        k = min(self.topk, n_anchors)
        top_idx = (metrics * inside).topk(k, dim=-1).indices  # [B, n, k]
        in_topk = torch.zeros_like(metrics).scatter_(-1, top_idx, 1.0) * pad_gt_mask
        positive = in_topk * inside * pad_gt_mask
        pos_sum = positive.sum(-2)  # [B, L]
        if pos_sum.max() > 1:  # an anchor claimed by several ground truths: the one of highest IoU
            multiple = (pos_sum.unsqueeze(1) > 1).expand(-1, n, -1)
            max_iou = F.one_hot(ious.argmax(-2), n).transpose(1, 2).to(positive.dtype)
            positive = torch.where(multiple, max_iou, positive)
            pos_sum = positive.sum(-2)
        gt_index = positive.argmax(-2) + torch.arange(b, device=dev).unsqueeze(-1) * n  # [B, L]
        out_labels = labels.flatten()[gt_index]
        out_labels = torch.where(pos_sum > 0, out_labels, torch.full_like(out_labels, bg_index))
        out_bboxes = gt_bboxes.reshape(-1, 4)[gt_index]
        out_scores = F.one_hot(out_labels, n_classes + 1).to(pred_scores.dtype)
        keep = [i for i in range(n_classes + 1) if i != bg_index]
        out_scores = out_scores[..., keep]
        metrics = metrics * positive
        max_metrics = metrics.max(-1, keepdim=True).values
        max_ious = (ious * positive).max(-1, keepdim=True).values
        norm = (metrics / (max_metrics + self.eps) * max_ious).max(-2).values.unsqueeze(-1)
        return out_labels, out_bboxes, out_scores * norm, gt_index
