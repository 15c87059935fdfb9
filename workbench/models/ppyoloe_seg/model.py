"""PP-YOLOE_seg: ``CSPResNet`` backbone -> ``CustomCSPPAN`` neck -> ``PPYOLOEInsHead``
(PaddleDetection ``configs/ppyoloe_seg/``). ``build_ppyoloe_seg(variant, num_classes)``.

Variants: depth/width multipliers of PaddleDetection's configs (S 0.33/0.50, M 0.67/0.75,
L 1.0/1.0, X 1.33/1.25); only S is registered as a workbench model (PaddleX's
``PP-YOLOE_seg-S``). Architecture constants from ``_base_/ppyoloe_plus_crn_seg.yml``: backbone
layers [3, 6, 6, 3], channels [64, 128, 256, 512, 1024], large stem, alpha; neck out channels
[768, 384, 192], one stage of 3 blocks, SPP; head strides [32, 16, 8], reg_max 16, 32 masks,
256 x width prototypes."""
from __future__ import annotations

import torch
import torch.nn as nn

from .backbone import CSPResNet
from .head import PPYOLOEInsHead
from .neck import CustomCSPPAN

VARIANTS = {"S": (0.33, 0.50), "M": (0.67, 0.75), "L": (1.0, 1.0), "X": (1.33, 1.25)}
# parameters (trainable + the fixed DFL projection) at 80 classes, counted on this port
EXPECTED_PARAMS = {"S": 8_995_715}  # PaddleDetection: 8.99 M


def variant_config(variant: str, num_classes: int = 80, **overrides) -> dict:
    variant = str(variant).upper()
    if variant not in VARIANTS:
        raise ValueError(f"unknown PP-YOLOE_seg variant {variant!r} (one of {', '.join(VARIANTS)})")
    depth, width = VARIANTS[variant]
    cfg = {"variant": variant, "num_classes": int(num_classes), "depth_mult": depth, "width_mult": width,
           "num_masks": 32, "num_protos": 256, "reg_max": 16}
    unknown = [k for k in overrides if k not in cfg or k in ("variant", "num_classes")]
    if unknown:
        raise ValueError(f"unknown PP-YOLOE_seg option(s) {unknown}; options: "
                         f"{sorted(k for k in cfg if k not in ('variant', 'num_classes'))}")
    cfg.update(overrides)
    return cfg


class PPYOLOESeg(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        d, w = config["depth_mult"], config["width_mult"]
        self.num_classes = int(config["num_classes"])
        self.backbone = CSPResNet(layers=(3, 6, 6, 3), channels=(64, 128, 256, 512, 1024), act="swish",
                                  return_idx=(1, 2, 3), use_large_stem=True, width_mult=w, depth_mult=d,
                                  use_alpha=True)
        self.neck = CustomCSPPAN(in_channels=self.backbone.out_channels, out_channels=(768, 384, 192), act="swish",
                                 stage_num=1, block_num=3, spp=True, width_mult=w, depth_mult=d)
        self.yolo_head = PPYOLOEInsHead(self.neck.out_channels, self.num_classes, act="swish",
                                        fpn_strides=(32, 16, 8), reg_max=int(config["reg_max"]),
                                        num_masks=int(config["num_masks"]), num_protos=int(config["num_protos"]),
                                        width_mult=w)

    def forward(self, images: torch.Tensor, targets=None) -> dict:
        """``images`` [B, 3, S, S] in [0, 1] (S a multiple of 32) -> the head's outputs (``head.py``);
        ``targets`` is accepted (and unused) so the training loop can pass it."""
        return self.yolo_head(self.neck(self.backbone(images)))


def build_ppyoloe_seg(variant: str = "S", num_classes: int = 80, **overrides) -> PPYOLOESeg:
    return PPYOLOESeg(variant_config(variant, num_classes, **overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["PPYOLOESeg", "build_ppyoloe_seg", "variant_config", "VARIANTS", "EXPECTED_PARAMS", "count_parameters"]
