"""Non-contrastive denoising (DN) query groups, as in Mask-RT-DETR (RT-DETR's DN is contrastive)."""
from __future__ import annotations

import torch

from .box_ops import inverse_sigmoid


def get_denoising_training_group(targets, num_classes: int, num_queries: int, class_embed: torch.Tensor,
                                 num_denoising: int = 100, label_noise_ratio: float = 0.5,
                                 box_noise_scale: float = 1.0, generator: torch.Generator | None = None):
    """Build noised GT queries.

    ``targets``: list (per image) of dicts with ``labels`` [n] (int64, 0-based) and ``boxes`` [n, 4]
    (normalised cxcywh). Returns ``(dn_class_embed [B, D, C], dn_bbox_unact [B, D, 4],
    attn_mask [T, T] bool where True = may attend, dn_meta)`` or four ``None`` when there is nothing
    to denoise. Each of the ``num_group`` groups holds every GT of the image once (padded to the
    batch maximum); groups cannot see each other and matching queries cannot see any group.
    """
    if num_denoising <= 0:
        return None, None, None, None
    num_gts = [int(len(t["labels"])) for t in targets]
    max_gt = max(num_gts) if num_gts else 0
    if max_gt == 0:
        return None, None, None, None
    device = class_embed.device
    num_group = max(1, num_denoising // max_gt)
    bs = len(targets)

    cls = torch.full((bs, max_gt), num_classes, dtype=torch.long, device=device)
    box = torch.zeros((bs, max_gt, 4), device=device)
    pad = torch.zeros((bs, max_gt), device=device)
    for i, t in enumerate(targets):
        n = num_gts[i]
        if n:
            cls[i, :n] = t["labels"].to(device)
            box[i, :n] = t["boxes"].to(device=device, dtype=box.dtype)
            pad[i, :n] = 1
    cls = cls.repeat(1, num_group)
    box = box.repeat(1, num_group, 1)
    pad = pad.repeat(1, num_group)

    positive_idx = [torch.nonzero(pad[i] > 0).flatten() for i in range(bs)]
    total = max_gt * num_group

    def rand(shape):
        return torch.rand(shape, generator=generator, device="cpu" if generator is not None else device).to(device)

    if label_noise_ratio > 0:
        flip = (rand(cls.shape) < label_noise_ratio * 0.5) & (pad > 0)
        new = (rand(cls.shape) * num_classes).long().clamp_(max=num_classes - 1)
        cls = torch.where(flip, new, cls)

    if box_noise_scale > 0:
        diff = torch.cat([box[..., 2:] * 0.5, box[..., 2:]], -1) * box_noise_scale
        box = box + diff * (rand(box.shape) * 2.0 - 1.0)
    box_unact = inverse_sigmoid(box)

    table = torch.cat([class_embed, class_embed.new_zeros(1, class_embed.shape[-1])], 0)
    dn_embed = table[cls.flatten()].reshape(bs, total, -1)

    size = total + num_queries
    blocked = torch.zeros((size, size), dtype=torch.bool, device=device)
    blocked[total:, :total] = True
    for g in range(num_group):
        s, e = max_gt * g, max_gt * (g + 1)
        blocked[s:e, e:total] = True
        blocked[s:e, :s] = True
    meta = {"dn_positive_idx": positive_idx, "dn_num_group": num_group, "dn_num_split": [total, num_queries]}
    return dn_embed, box_unact, ~blocked, meta
