"""Box and mask geometry helpers (boxes are normalised cxcywh unless named otherwise)."""
from __future__ import annotations

import torch


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _inter_union(a: torch.Tensor, b: torch.Tensor):
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def elementwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """IoU of matching rows of two xyxy box sets (broadcasting)."""
    inter, union = _inter_union(a, b)
    return inter / (union + eps)


def elementwise_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Generalised IoU of matching rows of two xyxy box sets (broadcasting)."""
    inter, union = _inter_union(a, b)
    iou = inter / (union + eps)
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / (hull + eps)


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N,4] x [M,4] xyxy -> [N,M] generalised IoU."""
    return elementwise_giou(a[:, None, :], b[None, :, :])


def masks_to_boxes_cxcywh(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes around boolean masks ``[..., h, w]``, normalised by the mask size, as cxcywh.

    The right/bottom edge is the last set pixel + 1; an empty mask gives an all-zero box.
    """
    h, w = masks.shape[-2:]
    dtype = torch.float32
    m = masks.to(dtype)
    ys = torch.arange(h, device=masks.device, dtype=dtype)
    xs = torch.arange(w, device=masks.device, dtype=dtype)
    col = m.amax(-2)  # [..., w] any pixel set in this column
    row = m.amax(-1)  # [..., h]
    big = torch.tensor(1e8, device=masks.device, dtype=dtype)
    x_max = (xs * col).amax(-1) + 1
    y_max = (ys * row).amax(-1) + 1
    x_min = torch.where(col > 0, xs, big).amin(-1)
    y_min = torch.where(row > 0, ys, big).amin(-1)
    box = torch.stack([x_min, y_min, x_max, y_max], -1)
    nonempty = (col.amax(-1) > 0).to(dtype).unsqueeze(-1)
    box = box * nonempty
    box = box / torch.tensor([w, h, w, h], device=masks.device, dtype=dtype)
    return xyxy_to_cxcywh(box)
