"""MaskHybridEncoder: RT-DETR's hybrid encoder (1x1 projection, AIFI, CCFM with CSPRep blocks)
on strides 8/16/32, plus the mask branch that builds stride-4 prototype features."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BatchNorm2d, ConvBN, get_activation


class RepVggBlock(nn.Module):
    """3x3 conv-BN plus 1x1 conv-BN, summed, then the activation (training form, not fused)."""

    def __init__(self, in_ch: int, out_ch: int, act: str = "silu"):
        super().__init__()
        self.conv1 = ConvBN(in_ch, out_ch, 3, 1, act=None)
        self.conv2 = ConvBN(in_ch, out_ch, 1, 1, act=None)
        self.act = get_activation(act)

    def forward(self, x):
        return self.act(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_blocks: int = 3, expansion: float = 1.0, act: str = "silu"):
        super().__init__()
        hidden = int(out_ch * expansion)
        self.conv1 = ConvBN(in_ch, hidden, 1, 1, act=act)
        self.conv2 = ConvBN(in_ch, hidden, 1, 1, act=act)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = ConvBN(hidden, out_ch, 1, 1, act=act) if hidden != out_ch else nn.Identity()

    def forward(self, x):
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class TransformerLayer(nn.Module):
    """Post-norm transformer encoder layer used by AIFI (pos-embed added to q and k only)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = get_activation(activation)

    def forward(self, src, pos_embed=None):
        q = k = src if pos_embed is None else src + pos_embed
        attn = self.self_attn(q, k, src, need_weights=False)[0]
        src = self.norm1(src + self.dropout(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, src, pos_embed=None):
        for layer in self.layers:
            src = layer(src, pos_embed)
        return src


def build_2d_sincos_position_embedding(w: int, h: int, embed_dim: int = 256, temperature: float = 10000.0,
                                       device=None) -> torch.Tensor:
    """[1, w*h, embed_dim] sin-cos embedding.

    Paddle builds the grid with ``meshgrid(grid_w, grid_h)`` ('ij'), so the flattened order is
    w-major while features are flattened h-major; the quirk is kept for weight compatibility
    (it is invisible on square inputs only in shape, not in content).
    """
    if embed_dim % 4:
        raise ValueError("embed_dim must be divisible by 4 for the 2D sin-cos embedding")
    grid_w = torch.arange(int(w), dtype=torch.float32, device=device)
    grid_h = torch.arange(int(h), dtype=torch.float32, device=device)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32, device=device) / pos_dim
    omega = 1.0 / (temperature ** omega)
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], 1)[None]


class MaskFeatFPN(nn.Module):
    """Per level ``max(1, log2(s / s_min))`` ConvBN 3x3 steps (each followed by a bilinear x2
    except on the finest level), summed at the finest stride, then ``output_conv``.

    Each conv is wrapped in its own ``nn.Sequential`` and the ``nn.Upsample`` modules take
    index slots, reproducing Paddle's ``scale_heads.{i}.{j}.0`` names.
    """

    def __init__(self, in_channels, fpn_strides, feat_channels: int, out_channels: int, act: str = "silu"):
        super().__init__()
        order = list(np.argsort(fpn_strides))
        self.reorder_index = [int(i) for i in order]
        in_channels = [in_channels[i] for i in order]
        strides = [fpn_strides[i] for i in order]
        self.fpn_strides = strides
        self.scale_heads = nn.ModuleList()
        for i, s in enumerate(strides):
            n = max(1, int(math.log2(s) - math.log2(strides[0])))
            head = []
            for k in range(n):
                head.append(nn.Sequential(ConvBN(in_channels[i] if k == 0 else feat_channels, feat_channels, 3, 1, act=act)))
                if s != strides[0]:
                    head.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*head))
        self.output_conv = ConvBN(feat_channels, out_channels, 3, 1, act=act)

    def forward(self, feats):
        x = [feats[i] for i in self.reorder_index]
        out = self.scale_heads[0](x[0])
        for i in range(1, len(x)):
            out = out + F.interpolate(self.scale_heads[i](x[i]), size=out.shape[2:], mode="bilinear",
                                      align_corners=False)
        return self.output_conv(out)


class MaskHybridEncoder(nn.Module):
    """Input: 4 backbone maps (strides 4, 8, 16, 32). Output: ([3 maps of ``hidden_dim`` at
    strides 8/16/32], mask_feat [B, num_prototypes, H/4, W/4]).

    ``use_encoder_idx`` is given in the 4-level indexing of the configs and shifted by -1.
    """

    def __init__(self, in_channels=(128, 512, 1024, 2048), feat_strides=(4, 8, 16, 32), hidden_dim: int = 256,
                 use_encoder_idx=(3,), num_encoder_layers: int = 1, nhead: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.0, enc_act: str = "gelu", num_prototypes: int = 32, pe_temperature: float = 10000.0,
                 expansion: float = 1.0, depth_mult: float = 1.0, mask_feat_channels=(64, 64), act: str = "silu"):
        super().__init__()
        in_channels, feat_strides = list(in_channels), list(feat_strides)
        if feat_strides[0] != 4:
            raise ValueError("the first backbone level must have stride 4")
        x4_ch = in_channels.pop(0)
        feat_strides.pop(0)
        self.in_channels = in_channels
        self.feat_strides = feat_strides
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = [i - 1 for i in use_encoder_idx]
        self.num_encoder_layers = num_encoder_layers
        self.pe_temperature = pe_temperature

        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1, bias=False), BatchNorm2d(hidden_dim)) for c in in_channels)
        self.encoder = nn.ModuleList(
            TransformerEncoder(num_encoder_layers, d_model=hidden_dim, nhead=nhead, dim_feedforward=dim_feedforward,
                               dropout=dropout, activation=enc_act)
            for _ in self.use_encoder_idx)
        nblocks = round(3 * depth_mult)
        n = len(in_channels)
        self.lateral_convs = nn.ModuleList(ConvBN(hidden_dim, hidden_dim, 1, 1, act=act) for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(hidden_dim * 2, hidden_dim, nblocks, expansion, act) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(ConvBN(hidden_dim, hidden_dim, 3, 2, act=act) for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(hidden_dim * 2, hidden_dim, nblocks, expansion, act) for _ in range(n - 1))

        self.mask_feat_head = MaskFeatFPN([hidden_dim] * n, feat_strides, mask_feat_channels[0],
                                          mask_feat_channels[1], act=act)
        self.enc_mask_lateral = ConvBN(x4_ch, mask_feat_channels[1], 3, 1, act=act)
        self.enc_mask_output = nn.Sequential(
            ConvBN(mask_feat_channels[1], mask_feat_channels[1], 3, 1, act=act),
            nn.Conv2d(mask_feat_channels[1], num_prototypes, 1))

    def forward_hybrid(self, feats):
        proj = [self.input_proj[i](f) for i, f in enumerate(feats)]
        for i, idx in enumerate(self.use_encoder_idx):
            b, c, h, w = proj[idx].shape
            # [B, C, H, W] -> [B, HW, C] by permute+reshape, not flatten(2).transpose(1, 2): with one
            # image, PyTorch's CPU BatchNorm backward returns wrong gradients when the upstream
            # gradient comes back through the transpose view (docs/mask_rtdetr.md, "Batch-1 gradients").
            src = proj[idx].permute(0, 2, 3, 1).reshape(b, h * w, c)
            pos = build_2d_sincos_position_embedding(w, h, self.hidden_dim, self.pe_temperature, src.device)
            mem = self.encoder[i](src, pos.to(src.dtype))
            proj[idx] = mem.transpose(1, 2).reshape(b, self.hidden_dim, h, w)

        n = len(self.in_channels)
        inner = [proj[-1]]
        for idx in range(n - 1, 0, -1):
            k = n - 1 - idx
            high = self.lateral_convs[k](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[k](torch.cat([up, proj[idx - 1]], 1)))
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self.downsample_convs[idx](outs[-1])
            outs.append(self.pan_blocks[idx](torch.cat([down, inner[idx + 1]], 1)))
        return outs

    def forward(self, feats):
        x4, rest = feats[0], list(feats[1:])
        outs = self.forward_hybrid(rest)
        mask_feat = self.mask_feat_head(outs)
        mask_feat = F.interpolate(mask_feat, scale_factor=2, mode="bilinear", align_corners=False)
        mask_feat = mask_feat + self.enc_mask_lateral(x4)
        mask_feat = self.enc_mask_output(mask_feat)
        return outs, mask_feat
