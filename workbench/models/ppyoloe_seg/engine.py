"""PP-YOLOE_seg's training pieces: SGD with momentum and L2 decay (none on BatchNorm), linear warmup
then cosine decay per iteration, the "threshold" EMA, and prediction with a bare network. The epoch
loop, DDP wrapping and checkpoint files are the Mask-RT-DETR family's (``mask_rtdetr.engine``),
shared as they are."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn

from ..mask_rtdetr.data import to_model_input
from ..mask_rtdetr.engine import save_checkpoint, train_one_epoch, unwrap, wrap_ddp  # noqa: F401 - shared
from .postprocess import binary_masks, decode


def build_optimizer(model: nn.Module, lr: float = 0.001, momentum: float = 0.9,
                    weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD (Paddle's Momentum: same update) with L2 ``weight_decay`` on every parameter but the
    BatchNorm weights and biases."""
    m = unwrap(model)
    no_decay_ids = {id(p) for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)
                    for p in mod.parameters(recurse=False)}
    decay, no_decay = [], []
    for p in m.parameters():
        if p.requires_grad:
            (no_decay if id(p) in no_decay_ids else decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=momentum)


def build_scheduler(optimizer, total_steps: int, warmup_steps: int = 0, cosine_ratio: float = 1.2):
    """Linear warmup from 0 over ``warmup_steps``, times cosine decay over ``cosine_ratio x
    total_steps`` (Paddle: CosineDecay max_epochs 96 for 80 epochs; LinearWarmup start_factor 0)."""
    cos_steps = max(1.0, cosine_ratio * total_steps)

    def factor(step: int) -> float:
        f = 0.5 * (math.cos(math.pi * min(step, cos_steps) / cos_steps) + 1)
        if warmup_steps > 0 and step < warmup_steps:
            f *= step / warmup_steps
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ModelEMA:
    """EMA of every floating-point state entry, decay ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates (Paddle's default "threshold" EMA). Paddle starts its average at zero and divides by
    ``1 - decay^n``; this one starts from the model, which is the same to within that correction."""

    def __init__(self, model: nn.Module, decay: float = 0.9998):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        msd = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point and not k.endswith("proj_conv.weight"):
                v.mul_(d).add_(msd[k].detach().to(v.dtype), alpha=1 - d)
            else:
                v.copy_(msd[k])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd["model"])
        self.updates = int(sd.get("updates", 0))


@torch.no_grad()
def predict_images(model: nn.Module, images: list[np.ndarray], threshold: float = 0.5, size: int = 640,
                   mask_threshold: float = 0.5) -> list[dict]:
    """A bare network on RGB uint8 arrays: per image numpy ``boxes`` [N, 4] (original pixels),
    ``scores``, ``labels`` (0-based) and ``masks`` [N, H, W] bool, ``score >= threshold``."""
    from ...engine.model import keep_scores

    model = unwrap(model)
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        out = model(torch.stack([to_model_input(im, size) for im in images]).to(dev))
    finally:
        model.train(was)
    res = []
    for im, d in zip(images, decode(out, [im.shape[:2] for im in images])):
        keep = torch.nonzero(keep_scores(d["scores"], threshold)).flatten()
        d = {k: (v[keep] if isinstance(v, torch.Tensor) else v) for k, v in d.items()}
        res.append({"boxes": d["boxes"].cpu().numpy(), "scores": d["scores"].cpu().numpy(),
                    "labels": d["labels"].cpu().numpy().astype(np.int64),
                    "masks": binary_masks(d, im.shape[:2], mask_threshold)})
    return res
