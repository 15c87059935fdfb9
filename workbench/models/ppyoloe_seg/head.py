"""PP-YOLOE's instance head (PaddleDetection ``heads/ppyoloe_ins_head.py``): per level an ESE
attention stem and a 3x3 prediction conv for each of classification, box distribution (DFL,
``reg_max`` 16 -> 17 bins per side) and 32 mask coefficients; a YOLOv8-style prototype branch
(``MaskProto``: conv, 2x transposed conv, conv, 1x1 conv) on the stride-8 level gives 32
prototypes at stride 4.

``forward`` returns, in training and inference alike, a dict: ``scores`` [B, L, C] (sigmoid),
``reg_distri`` [B, L, 4 * 17] (bin logits), ``boxes`` [B, L, 4] (decoded, xyxy input pixels),
``coeffs`` [B, L, 32], ``proto`` [B, 32, H/4, W/4], ``anchor_points`` [L, 2] (pixels) and
``stride`` [L, 1]; ``L`` runs over the levels P5, P4, P3 (strides 32, 16, 8)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BaseConv, ConvBNLayer


class ESEAttn(nn.Module):
    def __init__(self, channels: int, act: str = "swish"):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.conv = ConvBNLayer(channels, channels, 1, act=act)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feat: torch.Tensor, avg_feat: torch.Tensor) -> torch.Tensor:
        return self.conv(feat * torch.sigmoid(self.fc(avg_feat)))


class MaskProto(nn.Module):
    def __init__(self, ch_in: int, num_protos: int = 256, num_masks: int = 32):
        super().__init__()
        self.conv1 = BaseConv(ch_in, num_protos, 3)
        self.upsample = nn.ConvTranspose2d(num_protos, num_protos, 2, 2, 0, bias=True)
        self.conv2 = BaseConv(num_protos, num_protos, 3)
        self.conv3 = BaseConv(num_protos, num_masks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.upsample(self.conv1(x))))


def make_anchors(feats: list[torch.Tensor], strides, offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (cell centres, input pixels) [L, 2] and their strides [L, 1], level by level."""
    points, strides_out = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        ys = (torch.arange(h, device=f.device, dtype=torch.float32) + offset) * s
        xs = (torch.arange(w, device=f.device, dtype=torch.float32) + offset) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([gx, gy], -1).reshape(-1, 2))
        strides_out.append(torch.full((h * w, 1), float(s), device=f.device))
    return torch.cat(points), torch.cat(strides_out)


def distance2bbox(points: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """ltrb distances -> xyxy boxes (same units as ``points``)."""
    lt, rb = distance.chunk(2, -1)
    return torch.cat([points - lt, points + rb], -1)


class PPYOLOEInsHead(nn.Module):
    def __init__(self, in_channels=(1024, 512, 256), num_classes: int = 80, act: str = "swish",
                 fpn_strides=(32, 16, 8), grid_cell_offset: float = 0.5, reg_max: int = 16,
                 num_masks: int = 32, num_protos: int = 256, width_mult: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.fpn_strides = tuple(fpn_strides)
        self.grid_cell_offset = grid_cell_offset
        self.reg_channels = reg_max + 1
        self.num_masks = num_masks
        self.num_protos = int(num_protos * width_mult)
        self.stem_cls = nn.ModuleList([ESEAttn(c, act) for c in in_channels])
        self.stem_reg = nn.ModuleList([ESEAttn(c, act) for c in in_channels])
        self.stem_ins = nn.ModuleList([ESEAttn(c, act) for c in in_channels])
        self.pred_cls = nn.ModuleList([nn.Conv2d(c, num_classes, 3, padding=1) for c in in_channels])
        self.pred_reg = nn.ModuleList([nn.Conv2d(c, 4 * self.reg_channels, 3, padding=1) for c in in_channels])
        self.pred_ins = nn.ModuleList([nn.Conv2d(c, num_masks, 3, padding=1) for c in in_channels])
        # the DFL projection 0..reg_max: a fixed 1x1 conv, as in Paddle (its weight is in .pdparams)
        self.proj_conv = nn.Conv2d(self.reg_channels, 1, 1, bias=False)
        self.proj_conv.weight.requires_grad_(False)
        self.proto = MaskProto(in_channels[-1], self.num_protos, num_masks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bias_cls = -math.log((1 - 0.01) / 0.01)
        for cls_, reg_ in zip(self.pred_cls, self.pred_reg):
            nn.init.zeros_(cls_.weight)
            nn.init.constant_(cls_.bias, bias_cls)
            nn.init.zeros_(reg_.weight)
            nn.init.constant_(reg_.bias, 1.0)
        with torch.no_grad():
            self.proj_conv.weight.copy_(torch.arange(self.reg_channels, dtype=torch.float32).view(1, -1, 1, 1))

    def reset_class_layers(self, num_classes: int) -> None:
        """New classification convs for ``num_classes`` (fine-tuning to other classes)."""
        dev = self.pred_cls[0].weight.device
        self.num_classes = num_classes
        self.pred_cls = nn.ModuleList([nn.Conv2d(c.in_channels, num_classes, 3, padding=1) for c in self.pred_cls])
        self.pred_cls.to(dev)
        bias_cls = -math.log((1 - 0.01) / 0.01)
        for c in self.pred_cls:
            nn.init.zeros_(c.weight)
            nn.init.constant_(c.bias, bias_cls)

    def decode_distances(self, reg_distri: torch.Tensor) -> torch.Tensor:
        """[B, L, 4 * bins] logits -> [B, L, 4] expected ltrb distances (stride units)."""
        b, n, _ = reg_distri.shape
        p = F.softmax(reg_distri.reshape(b, n, 4, self.reg_channels), -1)
        return (p * self.proj_conv.weight.reshape(-1).to(p.dtype)).sum(-1)

    def forward(self, feats: list[torch.Tensor]) -> dict:
        if len(feats) != len(self.fpn_strides):
            raise ValueError(f"{len(feats)} feature levels for {len(self.fpn_strides)} strides")
        proto = self.proto(feats[-1])
        cls_list, reg_list, ins_list = [], [], []
        for i, feat in enumerate(feats):
            avg = F.adaptive_avg_pool2d(feat, 1)
            cls_logit = self.pred_cls[i](self.stem_cls[i](feat, avg) + feat)
            reg = self.pred_reg[i](self.stem_reg[i](feat, avg))
            ins = self.pred_ins[i](self.stem_ins[i](feat, avg) + feat)
            cls_list.append(cls_logit.flatten(2).transpose(1, 2))
            reg_list.append(reg.flatten(2).transpose(1, 2))
            ins_list.append(ins.flatten(2).transpose(1, 2))
        scores = torch.sigmoid(torch.cat(cls_list, 1))
        reg_distri = torch.cat(reg_list, 1)
        anchor_points, stride = make_anchors(feats, self.fpn_strides, self.grid_cell_offset)
        boxes = distance2bbox(anchor_points / stride, self.decode_distances(reg_distri)) * stride
        return {"scores": scores, "reg_distri": reg_distri, "boxes": boxes, "coeffs": torch.cat(ins_list, 1),
                "proto": proto, "anchor_points": anchor_points, "stride": stride}
