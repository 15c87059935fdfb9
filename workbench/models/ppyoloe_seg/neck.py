"""CustomCSPPAN (PaddleDetection ``necks/custom_pan.py``, without its optional transformer): a
top-down FPN then a bottom-up PAN, each level a CSP stage of ``BasicBlock``s without shortcut, an
SPP (max pools 5/9/13) in the deepest stage. Inputs C3..C5 (strides 8/16/32); outputs
``[P5, P4, P3]`` with ``out_channels`` [768, 384, 192] x ``width_mult``."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BasicBlock, ConvBNLayer


class SPP(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, k: int, pool_size=(5, 9, 13), act: str = "swish"):
        super().__init__()
        self.pool_sizes = tuple(pool_size)
        for i, s in enumerate(self.pool_sizes):
            self.add_module(f"pool{i}", nn.MaxPool2d(s, 1, s // 2))
        self.conv = ConvBNLayer(ch_in, ch_out, k, padding=k // 2, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [getattr(self, f"pool{i}")(x) for i in range(len(self.pool_sizes))]
        return self.conv(torch.cat(outs, 1))


class CSPStage(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, n: int, act: str = "swish", spp: bool = False,
                 use_alpha: bool = False):
        super().__init__()
        ch_mid = ch_out // 2
        self.conv1 = ConvBNLayer(ch_in, ch_mid, 1, act=act)
        self.conv2 = ConvBNLayer(ch_in, ch_mid, 1, act=act)
        self.convs = nn.Sequential()
        for i in range(n):
            self.convs.add_module(str(i), BasicBlock(ch_mid, ch_mid, act=act, shortcut=False, use_alpha=use_alpha))
            if i == (n - 1) // 2 and spp:
                self.convs.add_module("spp", SPP(ch_mid * 4, ch_mid, 1, (5, 9, 13), act=act))
        self.conv3 = ConvBNLayer(ch_mid * 2, ch_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat([self.conv1(x), self.convs(self.conv2(x))], 1))


class CustomCSPPAN(nn.Module):
    def __init__(self, in_channels=(256, 512, 1024), out_channels=(768, 384, 192), act: str = "swish",
                 stage_num: int = 1, block_num: int = 3, spp: bool = True, width_mult: float = 1.0,
                 depth_mult: float = 1.0, use_alpha: bool = False):
        super().__init__()
        out_channels = [max(round(c * width_mult), 1) for c in out_channels]
        block_num = max(round(block_num * depth_mult), 1)
        self.num_blocks = len(in_channels)
        self.out_channels = out_channels
        ins = list(in_channels)[::-1]

        def stage(ch_in, ch_out, with_spp):
            s = nn.Sequential()
            for j in range(stage_num):
                s.add_module(str(j), CSPStage(ch_in if j == 0 else ch_out, ch_out, block_num, act=act,
                                              spp=with_spp, use_alpha=use_alpha))
            return s

        fpn_stages, fpn_routes = [], []
        ch_pre = 0
        for i, (ch_in, ch_out) in enumerate(zip(ins, out_channels)):
            if i > 0:
                ch_in += ch_pre // 2
            fpn_stages.append(stage(ch_in, ch_out, spp and i == 0))
            if i < self.num_blocks - 1:
                fpn_routes.append(ConvBNLayer(ch_out, ch_out // 2, 1, act=act))
            ch_pre = ch_out
        self.fpn_stages = nn.ModuleList(fpn_stages)
        self.fpn_routes = nn.ModuleList(fpn_routes)

        pan_stages, pan_routes = [], []
        for i in reversed(range(self.num_blocks - 1)):
            pan_routes.append(ConvBNLayer(out_channels[i + 1], out_channels[i + 1], 3, stride=2, padding=1, act=act))
            pan_stages.append(stage(out_channels[i] + out_channels[i + 1], out_channels[i], False))
        self.pan_stages = nn.ModuleList(pan_stages[::-1])
        self.pan_routes = nn.ModuleList(pan_routes[::-1])

    def forward(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        blocks = blocks[::-1]
        fpn_feats = []
        route = None
        for i, block in enumerate(blocks):
            if i > 0:
                block = torch.cat([route, block], 1)
            route = self.fpn_stages[i](block)
            fpn_feats.append(route)
            if i < self.num_blocks - 1:
                route = F.interpolate(self.fpn_routes[i](route), scale_factor=2.0, mode="nearest")
        pan_feats = [fpn_feats[-1]]
        route = fpn_feats[-1]
        for i in reversed(range(self.num_blocks - 1)):
            route = self.pan_stages[i](torch.cat([self.pan_routes[i](route), fpn_feats[i]], 1))
            pan_feats.append(route)
        return pan_feats[::-1]
