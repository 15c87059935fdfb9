"""PP-HGNetV2 backbone (timm ``hgnetv2_b*`` with ``use_lab=False``), stride 4/8/16/32 outputs.

timm hard-codes ``use_lab=True`` for b0-b3 in its registered constructors, so the private
``_create_hgnet`` builder is used (PaddleDetection's PPHGNetV2 has ``use_lab=False`` for every
Mask-RT-DETR variant). The timm feature wrapper's
children (``stem``, ``stages_0`` …) are re-registered directly on this module so state-dict
names are ``backbone.stem.*`` / ``backbone.stages_N.*``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import convert_batchnorms

TIMM_ARCH = {"S": "hgnetv2_b1", "M": "hgnetv2_b2", "L": "hgnetv2_b4", "X": "hgnetv2_b5", "H": "hgnetv2_b6"}


class HGNetV2Backbone(nn.Module):
    def __init__(self, variant: str = "S", freeze_norm: bool = True, freeze_stem: bool = True,
                 return_idx: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        from timm.models.hgnet import _create_hgnet

        net = _create_hgnet(TIMM_ARCH[variant.upper()], pretrained=False, use_lab=False,
                            features_only=True, out_indices=tuple(return_idx))
        self.out_channels = list(net.feature_info.channels())
        self.out_strides = list(net.feature_info.reduction())
        self._order = list(net.keys())
        self._return = dict(net.return_layers)
        for name in self._order:
            self.add_module(name, net[name])
        convert_batchnorms(self)
        self.freeze_norm = freeze_norm
        if freeze_stem:
            for p in self.stem.parameters():
                p.requires_grad_(False)
        if freeze_norm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_norm:  # frozen BN always uses its running statistics
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for name in self._order:
            x = getattr(self, name)(x)
            if name in self._return:
                outs.append(x)
        return outs
