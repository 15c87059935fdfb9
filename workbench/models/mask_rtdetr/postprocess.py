"""Raw predictions -> per-image detections, the one decoding every Mask-RT-DETR inference path
uses (the model facade, ``PostProcess``, the ONNX runner): top-k over queries x classes, the
workbench's threshold rule (``score >= threshold``), xyxy boxes in original pixels clamped to the
image, masks resized from stride 4 straight to the original size as probabilities.

``dense=False`` keeps the kept queries' stride-4 mask logits instead (``mask_logits``), and
``UpsampledSoftMasks`` resizes one instance at a time when asked: what ``Result`` holds, so that
predicting never makes an (N, H, W) float array (N x H x W x 4 bytes, several times over)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...engine.model import keep_scores
from ...engine.result import SoftMasks
from .box_ops import cxcywh_to_xyxy


def upsample_probs(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[K, h, w] mask logits -> [K, H, W] probabilities at ``size`` (bilinear, then sigmoid)."""
    return F.interpolate(logits.unsqueeze(0).float(), size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False)[0].sigmoid_()


class UpsampledSoftMasks(SoftMasks):
    """Soft masks of Mask-RT-DETR detections: the (N, h, w) stride-4 mask logits, resized to the
    image one instance at a time (``upsample_probs``, then ``round(p * 255)`` as uint8, exactly
    the values of resizing them all at once) and cut to where they are non-zero."""

    def __init__(self, image_size: Sequence[int], logits: torch.Tensor):
        super().__init__(image_size)
        self.logits = logits.detach().float().cpu()

    def __len__(self) -> int:
        return len(self.logits)

    def crop(self, i: int) -> tuple[int, int, np.ndarray]:
        from ...engine.result import tight_crop

        p = upsample_probs(self.logits[i:i + 1], self.image_size)[0]
        u8 = p.mul_(255).round_().to(torch.uint8).numpy()
        y0, x0, c = tight_crop(u8)
        return y0, x0, (c if c.size * 4 > u8.size else c.copy())

    def take(self, idx) -> UpsampledSoftMasks:
        return UpsampledSoftMasks(self.image_size, self.logits[[int(i) for i in idx]])


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
                     size: tuple[int, int], threshold: float = 0.0, dense: bool = True) -> dict:
    """One image's top-k (``scores``/``labels`` [K], normalised xyxy ``boxes`` [K, 4], ``mask_logits``
    [K, h, w] of those queries) -> the kept detections: ``scores``, ``labels`` (0-based), ``boxes``
    [N, 4] pixels, ``mask_probs`` [N, H, W] float in [0, 1] at the original ``size`` (H, W) — or,
    with ``dense=False``, ``mask_logits`` [N, h, w] (the kept queries' stride-4 logits) instead."""
    h, w = int(size[0]), int(size[1])
    keep = torch.nonzero(keep_scores(scores, threshold)).flatten()
    b = boxes[keep] * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    out = {"scores": scores[keep], "labels": labels[keep], "boxes": b}
    if not dense:
        out["mask_logits"] = mask_logits[keep]
    elif len(keep):
        out["mask_probs"] = upsample_probs(mask_logits[keep], (h, w))
    else:
        out["mask_probs"] = torch.zeros((0, h, w), device=mask_logits.device)
    return out


def decode(outputs: dict, sizes, threshold: float = 0.0, num_top_queries: int = 100, dense: bool = True) -> list[dict]:
    """``image_detections`` for every image of a batch of raw outputs (``sizes``: (H, W) each)."""
    scores, labels, qidx, boxes = select_topk(outputs["pred_logits"], outputs["pred_boxes"], num_top_queries)
    masks = outputs["pred_masks"]
    return [image_detections(scores[i], labels[i], boxes[i], masks[i][qidx[i]], hw, threshold, dense)
            for i, hw in enumerate(sizes)]


def binary_masks(mask_logits: torch.Tensor, size: Sequence[int], mask_threshold: float = 0.5) -> np.ndarray:
    """[N, h, w] logits -> [N, H, W] bool ``probability >= mask_threshold``, resized one instance at
    a time (no [N, H, W] float array)."""
    h, w = int(size[0]), int(size[1])
    out = np.zeros((len(mask_logits), h, w), bool)
    for i in range(len(mask_logits)):
        out[i] = (upsample_probs(mask_logits[i:i + 1], (h, w))[0] >= mask_threshold).cpu().numpy()
    return out


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
        for d, hw in zip(decode(outputs, orig_sizes, self.threshold, self.num_top_queries, dense=False), orig_sizes):
            d["masks"] = torch.from_numpy(binary_masks(d.pop("mask_logits"), hw, self.mask_threshold)).to(
                d["boxes"].device)
            out.append(d)
        return out
