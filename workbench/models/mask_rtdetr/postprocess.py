"""Raw predictions -> per-image detections, the one decoding every Mask-RT-DETR inference path
uses (the model facade, ``PostProcess``, the ONNX runner): top-k over queries x classes, the
workbench's threshold rule (``score >= threshold``), xyxy boxes in original pixels clamped to the
image, masks resized from stride 4 straight to the original size as probabilities."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...engine.model import keep_scores
from .box_ops import cxcywh_to_xyxy


def select_topk(logits: torch.Tensor, boxes: torch.Tensor, num_top: int):
    """Sigmoid scores, top-k over the flattened Q x C grid. Returns scores, labels, query index,
    boxes (normalised xyxy) — all [B, K]/[B, K, 4]."""
    b, q, c = logits.shape
    scores = logits.sigmoid().flatten(1)
    k = min(num_top, q * c)
    scores, index = scores.topk(k, dim=1)
    labels = index % c
    qidx = torch.div(index, c, rounding_mode="floor")
    sel = torch.gather(cxcywh_to_xyxy(boxes), 1, qidx.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, qidx, sel


def image_detections(scores: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, mask_logits: torch.Tensor,
                     size: tuple[int, int], threshold: float = 0.0) -> dict:
    """One image's top-k (``scores``/``labels`` [K], normalised xyxy ``boxes`` [K, 4], ``mask_logits``
    [K, h, w] of those queries) -> the kept detections: ``scores``, ``labels`` (0-based), ``boxes``
    [N, 4] pixels, ``mask_probs`` [N, H, W] float in [0, 1] at the original ``size`` (H, W)."""
    h, w = int(size[0]), int(size[1])
    keep = torch.nonzero(keep_scores(scores, threshold)).flatten()
    b = boxes[keep] * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    if len(keep):
        m = F.interpolate(mask_logits[keep].unsqueeze(0).float(), size=(h, w), mode="bilinear",
                          align_corners=False)[0].sigmoid()
    else:
        m = torch.zeros((0, h, w), device=mask_logits.device)
    return {"scores": scores[keep], "labels": labels[keep], "boxes": b, "mask_probs": m}


def decode(outputs: dict, sizes, threshold: float = 0.0, num_top_queries: int = 100) -> list[dict]:
    """``image_detections`` for every image of a batch of raw outputs (``sizes``: (H, W) each)."""
    scores, labels, qidx, boxes = select_topk(outputs["pred_logits"], outputs["pred_boxes"], num_top_queries)
    masks = outputs["pred_masks"]
    return [image_detections(scores[i], labels[i], boxes[i], masks[i][qidx[i]], hw, threshold)
            for i, hw in enumerate(sizes)]


class PostProcess(nn.Module):
    """``decode`` as a module, with bitmasks: per image ``scores``, ``labels``, ``boxes``, ``masks``
    [K, H0, W0] bool (``probability >= mask_threshold``)."""

    def __init__(self, num_top_queries: int = 100, mask_threshold: float = 0.5, threshold: float = 0.0):
        super().__init__()
        self.num_top_queries = num_top_queries
        self.mask_threshold = mask_threshold
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, outputs: dict, orig_sizes) -> list[dict]:
        out = []
        for d in decode(outputs, orig_sizes, self.threshold, self.num_top_queries):
            d["masks"] = d.pop("mask_probs") >= self.mask_threshold
            out.append(d)
        return out
