"""Turn raw predictions into per-image detections: top-k over queries x classes, xyxy boxes in
original pixels, masks resized from stride 4 straight to the original size and thresholded."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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


class PostProcess(nn.Module):
    def __init__(self, num_top_queries: int = 100, mask_threshold: float = 0.5):
        super().__init__()
        self.num_top_queries = num_top_queries
        self.mask_threshold = mask_threshold

    @torch.no_grad()
    def forward(self, outputs: dict, orig_sizes) -> list[dict]:
        """``orig_sizes``: per image (height, width) of the original image.

        Returns per image ``scores`` [K], ``labels`` [K] (0-based), ``boxes`` [K, 4] xyxy pixels,
        ``masks`` [K, H0, W0] bool.
        """
        scores, labels, qidx, boxes = select_topk(outputs["pred_logits"], outputs["pred_boxes"], self.num_top_queries)
        masks = outputs["pred_masks"]
        results = []
        for i, (h, w) in enumerate(orig_sizes):
            h, w = int(h), int(w)
            scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
            m = masks[i][qidx[i]].unsqueeze(0)
            m = F.interpolate(m.float(), size=(h, w), mode="bilinear", align_corners=False)[0]
            results.append({"scores": scores[i], "labels": labels[i], "boxes": boxes[i] * scale,
                            "masks": m.sigmoid() > self.mask_threshold})
        return results
