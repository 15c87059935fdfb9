"""Mask-RT-DETR assembled from backbone, MaskHybridEncoder and the MaskRTDETR transformer;
``build_mask_rtdetr`` holds the per-variant hyper-parameters of PaddleDetection's configs."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .backbone import HGNetV2Backbone
from .decoder import MaskRTDETRTransformer
from .encoder import MaskHybridEncoder

# Per-variant settings from configs/mask_rtdetr/mask_rtdetr_hgnetv2_{s,m,l,x,h}_6x_coco.yml.
VARIANTS: dict[str, dict] = {
    "S": dict(backbone_channels=(64, 256, 512, 1024), enc_hidden_dim=256, use_encoder_idx=(2,), num_encoder_layers=1,
              enc_dim_feedforward=1024, expansion=0.5, mask_feat_channels=(64, 32), num_prototypes=128,
              backbone_lr_mult=0.1),
    "M": dict(backbone_channels=(96, 384, 768, 1536), enc_hidden_dim=256, use_encoder_idx=(2,), num_encoder_layers=1,
              enc_dim_feedforward=1024, expansion=0.5, mask_feat_channels=(64, 64), num_prototypes=128,
              backbone_lr_mult=0.1),
    "L": dict(backbone_channels=(128, 512, 1024, 2048), enc_hidden_dim=256, use_encoder_idx=(3,), num_encoder_layers=1,
              enc_dim_feedforward=1024, expansion=1.0, mask_feat_channels=(64, 64), num_prototypes=32,
              backbone_lr_mult=0.05),
    "X": dict(backbone_channels=(128, 512, 1024, 2048), enc_hidden_dim=384, use_encoder_idx=(3,), num_encoder_layers=1,
              enc_dim_feedforward=2048, expansion=1.0, mask_feat_channels=(128, 128), num_prototypes=128,
              backbone_lr_mult=0.01),
    "H": dict(backbone_channels=(192, 512, 1024, 2048), enc_hidden_dim=512, use_encoder_idx=(3,), num_encoder_layers=2,
              enc_dim_feedforward=2048, expansion=1.0, mask_feat_channels=(256, 128), num_prototypes=128,
              backbone_lr_mult=0.01),
}

# Shared by every variant (mask_rtdetr_r50vd.yml + the variant files).
COMMON = dict(hidden_dim=256, num_queries=300, num_decoder_layers=6, nhead=8, num_decoder_points=4,
              dim_feedforward=1024, num_denoising=100, label_noise_ratio=0.5, box_noise_scale=1.0,
              enc_nhead=8, freeze_norm=True, freeze_stem=True, mask_enhanced=True, depth_mult=1.0)

# PaddleDetection's own models built from the variant configs (num_classes=80, BN statistics not
# counted; entries = Paddle state-dict entries). tests/paddle_parity/*.npz hold their name/shape manifests.
EXPECTED_PARAMS = {"S": 14_633_892, "M": 18_780_100, "L": 32_821_428, "X": 68_649_044, "H": 129_808_116}
EXPECTED_STATE_DICT_ENTRIES = {"S": 646, "M": 736, "L": 816, "X": 1066, "H": 1298}


class MaskRTDETR(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module, transformer: nn.Module, config: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.transformer = transformer
        self.config = dict(config or {})

    @property
    def num_classes(self) -> int:
        return self.transformer.num_classes

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None,
                dn_generator: torch.Generator | None = None) -> dict:
        """images: [B, 3, H, W] RGB in [0, 1] (H, W multiples of 32).

        Eval: ``pred_logits`` [B, Q, C], ``pred_boxes`` [B, Q, 4] (normalised cxcywh),
        ``pred_masks`` [B, Q, H/4, W/4] (logits). Training additionally returns ``aux_outputs``,
        ``dn_outputs`` and ``dn_meta`` for the criterion (targets are needed for denoising).
        """
        feats = self.backbone(images)
        enc_feats, mask_feat = self.neck(feats)
        return self.transformer(enc_feats, mask_feat, targets=targets, dn_generator=dn_generator)


def variant_config(variant: str, num_classes: int = 80, **overrides) -> dict:
    v = variant.upper()
    if v not in VARIANTS:
        raise ValueError(f"unknown Mask-RT-DETR variant {variant!r}; choose from {sorted(VARIANTS)}")
    cfg = dict(COMMON)
    cfg.update(VARIANTS[v])
    cfg.update(variant=v, num_classes=int(num_classes))
    unknown = set(overrides) - set(cfg) - {"num_sample_points"}
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)}; allowed: {sorted(set(cfg) | {'num_sample_points'})}")
    cfg.update(overrides)
    return cfg


def build_mask_rtdetr(variant: str = "S", num_classes: int = 80, **overrides) -> MaskRTDETR:
    """Build a randomly initialised Mask-RT-DETR-{S,M,L,X,H}.

    ``overrides`` may change any key of :data:`COMMON` / :data:`VARIANTS` (e.g. ``num_queries``,
    ``num_decoder_layers``, ``num_denoising``, ``freeze_norm``); ``num_sample_points`` is kept in
    ``model.config`` for :func:`build_criterion`.
    """
    cfg = variant_config(variant, num_classes, **overrides)
    backbone = HGNetV2Backbone(cfg["variant"], freeze_norm=cfg["freeze_norm"], freeze_stem=cfg["freeze_stem"])
    neck = MaskHybridEncoder(
        in_channels=list(cfg["backbone_channels"]), feat_strides=[4, 8, 16, 32], hidden_dim=cfg["enc_hidden_dim"],
        use_encoder_idx=list(cfg["use_encoder_idx"]), num_encoder_layers=cfg["num_encoder_layers"],
        nhead=cfg["enc_nhead"], dim_feedforward=cfg["enc_dim_feedforward"], num_prototypes=cfg["num_prototypes"],
        expansion=cfg["expansion"], depth_mult=cfg["depth_mult"], mask_feat_channels=list(cfg["mask_feat_channels"]))
    transformer = MaskRTDETRTransformer(
        num_classes=cfg["num_classes"], hidden_dim=cfg["hidden_dim"], num_queries=cfg["num_queries"],
        backbone_feat_channels=[cfg["enc_hidden_dim"]] * 3, feat_strides=[8, 16, 32],
        num_prototypes=cfg["num_prototypes"], num_decoder_points=cfg["num_decoder_points"], nhead=cfg["nhead"],
        num_decoder_layers=cfg["num_decoder_layers"], dim_feedforward=cfg["dim_feedforward"],
        num_denoising=cfg["num_denoising"], label_noise_ratio=cfg["label_noise_ratio"],
        box_noise_scale=cfg["box_noise_scale"], mask_enhanced=cfg["mask_enhanced"])
    return MaskRTDETR(backbone, neck, transformer, copy.deepcopy(cfg))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
