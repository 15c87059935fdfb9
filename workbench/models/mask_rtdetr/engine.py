"""Mask-RT-DETR's training pieces: optimiser with backbone lr multipliers, linear warmup,
global-norm clipping, EMA, AMP on CUDA, optional DDP, one epoch of steps, checkpoints, and
prediction with a bare network (``predict_images``)."""
from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .criterion import total_loss
from .data import make_loader, to_model_input
from .model import MaskRTDETR, build_mask_rtdetr
from .postprocess import binary_masks, decode


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# ---------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, lr: float = 1e-4, weight_decay: float = 1e-4,
                    backbone_lr_mult: float | None = None, stem_lr_mult: float = 0.0) -> torch.optim.AdamW:
    """AdamW on every trainable parameter (weight decay on all, as Paddle's config does);
    the backbone stem and stages get their own lr multipliers."""
    m = unwrap(model)
    if backbone_lr_mult is None:
        backbone_lr_mult = m.config.get("backbone_lr_mult", 0.1) if isinstance(m, MaskRTDETR) else 1.0
    groups: dict[float, list] = {}
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone.stem."):
            mult = stem_lr_mult
        elif name.startswith("backbone."):
            mult = backbone_lr_mult
        else:
            mult = 1.0
        if mult == 0:
            continue
        groups.setdefault(mult, []).append(p)
    param_groups = [{"params": ps, "lr": lr * mult, "lr_mult": mult} for mult, ps in groups.items()]
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)


def build_warmup_scheduler(optimizer, warmup_steps: int = 2000, start_factor: float = 0.001):
    """Linear warmup from ``start_factor`` x lr to lr over ``warmup_steps`` iterations, then constant."""
    def factor(step: int) -> float:
        if warmup_steps <= 0 or step >= warmup_steps:
            return 1.0
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ModelEMA:
    """EMA of every floating-point state entry (parameters and BN statistics) with decay
    ``decay * (1 - exp(-(updates + 1) / warmup))`` (Paddle's "exponential" EMA)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: int = 2000):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-(self.updates + 1) / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        msd = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach().to(v.dtype), alpha=1 - d)
            else:
                v.copy_(msd[k])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd["model"])
        self.updates = int(sd.get("updates", 0))


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel when torch.distributed is initialised (else unchanged)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[device.index], find_unused_parameters=True)
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    return model


def _move_targets(targets, device):
    out = []
    for t in targets:
        d = dict(t)
        for k in ("labels", "boxes", "masks"):
            d[k] = t[k].to(device)
        out.append(d)
    return out


def train_one_epoch(model: nn.Module, criterion: nn.Module, loader, optimizer, device, scheduler=None,
                    ema: ModelEMA | None = None, clip_max_norm: float = 0.1, amp: bool | None = None,
                    scaler=None, max_steps: int | None = None, log_every: int = 0, print_fn=print,
                    on_step=None) -> dict:
    """One pass over ``loader``; returns the mean of each loss term and of the total.

    ``on_step(step, losses)``, if given, is called after every optimiser step with the float
    value of each loss term and ``loss`` (the total). A NaN/inf loss raises ``FloatingPointError``
    before the optimiser step (under DDP on every process, so none waits for the others)."""
    device = torch.device(device)
    amp = (device.type == "cuda") if amp is None else amp
    if amp and scaler is None:
        scaler = torch.amp.GradScaler("cuda")
    model.train()
    sums: dict[str, float] = {}
    n = 0
    for step, (images, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images = images.to(device, non_blocking=True)
        targets = _move_targets(targets, device)
        ctx = torch.autocast(device.type, dtype=torch.float16) if amp else contextlib.nullcontext()
        with ctx:
            outputs = model(images, targets)
        with torch.autocast(device.type, enabled=False) if amp else contextlib.nullcontext():
            outputs = _to_float(outputs)
            losses = criterion(outputs, targets)
            loss = total_loss(losses)
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite.item()):
            raise FloatingPointError(f"non-finite loss at step {step}: { {k: float(v.detach()) for k, v in losses.items()} }")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        n += 1
        if on_step is not None:
            on_step(step, {**{k: float(v.detach()) for k, v in losses.items()}, "loss": float(loss.detach())})
        if log_every and step % log_every == 0:
            print_fn(f"step {step}: loss {float(loss):.4f}")
    return {k: v / max(n, 1) for k, v in sums.items()}


def _to_float(o):
    if isinstance(o, torch.Tensor):
        return o.float() if o.is_floating_point() else o
    if isinstance(o, dict):
        return {k: _to_float(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_to_float(v) for v in o]
    return o


# ---------------------------------------------------------------------------- inference
@torch.no_grad()
def predict_images(model: nn.Module, images: list[np.ndarray], threshold: float = 0.5, size: int = 640,
                   device=None, num_top_queries: int = 100, batch_size: int = 4,
                   mask_threshold: float = 0.5) -> list[dict]:
    """Run a bare network on RGB uint8 arrays (``postprocess.decode``: ``score >= threshold``). Per
    image: numpy ``boxes`` [N, 4] xyxy pixels, ``scores`` [N], ``labels`` [N] (0-based contiguous
    class index), ``masks`` [N, H, W] bool (resized and thresholded one instance at a time). The model
    facade's ``infer`` is the same path with ``Result``s."""
    model = unwrap(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    try:
        for s in range(0, len(images), batch_size):
            chunk = images[s:s + batch_size]
            out = model(torch.stack([to_model_input(im, size) for im in chunk]).to(device))
            for im, d in zip(chunk, decode(out, [im.shape[:2] for im in chunk], threshold, num_top_queries,
                                           dense=False)):
                results.append({"boxes": d["boxes"].cpu().numpy(), "scores": d["scores"].cpu().numpy(),
                                "labels": d["labels"].cpu().numpy().astype(np.int64),
                                "masks": binary_masks(d["mask_logits"], im.shape[:2], mask_threshold)})
    finally:
        model.train(was_training)
    return results


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, model: nn.Module, ema: ModelEMA | None = None, optimizer=None, scheduler=None,
                    epoch: int | None = None, extra: dict | None = None) -> Path:
    m = unwrap(model)
    ckpt = {"model": m.state_dict(), "config": getattr(m, "config", {}), "epoch": epoch,
            "variant": getattr(m, "config", {}).get("variant"), "num_classes": m.num_classes}
    if ema is not None:
        ckpt["ema"] = ema.state_dict()
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    if extra:
        ckpt["extra"] = extra
    from ...engine.weights import save_weights_file

    return save_weights_file(path, ckpt)  # atomic: a hidden temp file, then a rename


def load_checkpoint(path, model: nn.Module | None = None, ema: ModelEMA | None = None, optimizer=None,
                    scheduler=None, use_ema_weights: bool = False, map_location="cpu", **build_overrides) -> tuple:
    """Load a checkpoint written by :func:`save_checkpoint` or by ``convert``. Builds the model
    from the stored variant/config when ``model`` is None. With ``use_ema_weights`` the model
    gets the EMA weights. Returns ``(model, checkpoint_dict)``."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if model is None:
        cfg = dict(ckpt.get("config") or {})
        variant = cfg.pop("variant", None) or ckpt.get("variant") or "S"
        num_classes = cfg.pop("num_classes", None) or ckpt.get("num_classes") or 80
        for k in ("backbone_channels", "enc_hidden_dim", "use_encoder_idx", "num_encoder_layers",
                  "enc_dim_feedforward", "expansion", "mask_feat_channels", "num_prototypes", "backbone_lr_mult"):
            cfg.pop(k, None)
        cfg.update(build_overrides)
        model = build_mask_rtdetr(variant, num_classes, **cfg)
    weights = ckpt["ema"]["model"] if use_ema_weights and "ema" in ckpt else ckpt["model"]
    unwrap(model).load_state_dict(weights, strict=True)
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    return model, ckpt


__all__ = ["build_optimizer", "build_warmup_scheduler", "ModelEMA", "wrap_ddp", "train_one_epoch",
           "predict_images", "save_checkpoint", "load_checkpoint", "make_loader"]
