"""Raw head outputs -> per-image detections (PaddleDetection's ``MultiClassNMS`` and
``process_mask_upsample``): per class the top ``nms_top_k`` (1000) anchors scoring above
``score_threshold`` (0.01), per-class NMS at IoU ``nms_threshold`` (0.7,
``torchvision.ops.batched_nms``), the best ``keep_top_k`` (300) overall; masks are
``sigmoid(coeffs @ proto)`` at stride 4, resized to the input, cut to the box and resized to the
image (``ProtoSoftMasks``, one instance at a time)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ...engine.result import SoftMasks, tight_crop

NMS = {"nms_top_k": 1000, "keep_top_k": 300, "score_threshold": 0.01, "nms_threshold": 0.7}


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, nms_top_k: int = 1000, keep_top_k: int = 300,
                   score_threshold: float = 0.01, nms_threshold: float = 0.7):
    """One image: ``boxes`` [L, 4], ``scores`` [L, C] -> kept ``boxes`` [N, 4], ``scores`` [N],
    ``labels`` [N] and the anchor index of each [N], best first."""
    n_anchors, n_classes = scores.shape
    k = min(nms_top_k, n_anchors)
    top_scores, top_idx = scores.t().topk(k, dim=1)  # [C, k]
    cls = torch.arange(n_classes, device=scores.device).unsqueeze(1).expand(-1, k)
    keep = top_scores > score_threshold
    s, a, c = top_scores[keep], top_idx[keep], cls[keep]
    b = boxes[a]
    kept = batched_nms(b.float(), s.float(), c, nms_threshold)[:keep_top_k]
    return b[kept], s[kept], c[kept], a[kept]


def mask_logits(coeffs: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """[N, M] coefficients, [M, h, w] prototypes -> [N, h, w] logits."""
    m, h, w = proto.shape
    return (coeffs @ proto.reshape(m, -1)).reshape(-1, h, w)


def instance_probs(logits: torch.Tensor, boxes_input: torch.Tensor, input_size: Sequence[int],
                   image_size: Sequence[int]) -> torch.Tensor:
    """[K, h, w] logits -> [K, H, W] probabilities: sigmoid, bilinear to the input size, zero outside
    the box (input pixels), bilinear to the image size (Paddle's order)."""
    from .loss import crop_mask

    p = F.interpolate(logits.sigmoid().unsqueeze(0).float(), size=(int(input_size[0]), int(input_size[1])),
                      mode="bilinear", align_corners=False)[0]
    p = crop_mask(p, boxes_input.float())
    if tuple(p.shape[-2:]) != (int(image_size[0]), int(image_size[1])):
        p = F.interpolate(p.unsqueeze(0), size=(int(image_size[0]), int(image_size[1])), mode="bilinear",
                          align_corners=False)[0]
    return p


class ProtoSoftMasks(SoftMasks):
    """Soft masks of PP-YOLOE_seg detections, made one instance at a time from its stride-4 logits."""

    def __init__(self, image_size: Sequence[int], logits: torch.Tensor, boxes_input: torch.Tensor,
                 input_size: Sequence[int]):
        super().__init__(image_size)
        self.logits = logits.detach().float().cpu()
        self.boxes_input = boxes_input.detach().float().cpu()
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def __len__(self) -> int:
        return len(self.logits)

    def crop(self, i: int) -> tuple[int, int, np.ndarray]:
        p = instance_probs(self.logits[i:i + 1], self.boxes_input[i:i + 1], self.input_size, self.image_size)[0]
        u8 = p.mul_(255).round_().to(torch.uint8).numpy()
        y0, x0, c = tight_crop(u8)
        return y0, x0, (c if c.size * 4 > u8.size else c.copy())

    def take(self, idx) -> ProtoSoftMasks:
        idx = [int(i) for i in idx]
        return ProtoSoftMasks(self.image_size, self.logits[idx], self.boxes_input[idx], self.input_size)


def decode(out: dict, sizes, nms: dict | None = None) -> list[dict]:
    """Per image (original ``sizes`` (H, W)): ``scores``, ``labels`` (0-based), ``boxes`` [N, 4]
    xyxy original pixels clamped to the image, ``boxes_input`` (input pixels) and ``mask_logits``
    [N, h, w] (stride 4)."""
    nms = {**NMS, **(nms or {})}
    proto = out["proto"]
    in_h, in_w = proto.shape[-2] * 4, proto.shape[-1] * 4
    res = []
    for i, (h, w) in enumerate(sizes):
        b, s, c, a = multiclass_nms(out["boxes"][i], out["scores"][i], **nms)
        bi = b.clone()
        bi[:, 0::2] = bi[:, 0::2].clamp(0, in_w)
        bi[:, 1::2] = bi[:, 1::2].clamp(0, in_h)
        scale = torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h], device=b.device, dtype=b.dtype)
        res.append({"scores": s, "labels": c, "boxes": bi * scale, "boxes_input": bi,
                    "mask_logits": mask_logits(out["coeffs"][i][a], proto[i]), "input_size": (in_h, in_w)})
    return res


def binary_masks(d: dict, size: Sequence[int], mask_threshold: float = 0.5) -> np.ndarray:
    """[N, H, W] bool masks of one image's ``decode`` output, one instance at a time."""
    h, w = int(size[0]), int(size[1])
    out = np.zeros((len(d["mask_logits"]), h, w), bool)
    for i in range(len(out)):
        p = instance_probs(d["mask_logits"][i:i + 1], d["boxes_input"][i:i + 1], d["input_size"], (h, w))[0]
        out[i] = (p > mask_threshold).cpu().numpy()
    return out
