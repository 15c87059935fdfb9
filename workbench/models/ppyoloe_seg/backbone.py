"""CSPResNet (PP-YOLOE's backbone, PaddleDetection ``backbones/cspresnet.py``): a large stem of three
3x3 convs, then four CSP stages (stride 2 each), every stage a 3x3 stride-2 down conv, two 1x1
halves, ``n`` residual RepVGG ``BasicBlock``s on one half, effective SE and a 1x1 fuse.

Channels and depths scale with ``width_mult``/``depth_mult`` (``round``, as Paddle does):
PP-YOLOE_seg-S is 0.50/0.33 -> channels [32, 64, 128, 256, 512], blocks [1, 2, 2, 1]."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import BasicBlock, ConvBNLayer, EffectiveSELayer


class CSPResStage(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, n: int, stride: int, act: str = "swish", use_alpha: bool = False):
        super().__init__()
        ch_mid = (ch_in + ch_out) // 2
        self.conv_down = ConvBNLayer(ch_in, ch_mid, 3, stride=2, padding=1, act=act) if stride == 2 else None
        self.conv1 = ConvBNLayer(ch_mid, ch_mid // 2, 1, act=act)
        self.conv2 = ConvBNLayer(ch_mid, ch_mid // 2, 1, act=act)
        self.blocks = nn.Sequential(*[BasicBlock(ch_mid // 2, ch_mid // 2, act=act, shortcut=True,
                                                 use_alpha=use_alpha) for _ in range(n)])
        self.attn = EffectiveSELayer(ch_mid, act="hardsigmoid")
        self.conv3 = ConvBNLayer(ch_mid, ch_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_down is not None:
            x = self.conv_down(x)
        y = torch.cat([self.conv1(x), self.blocks(self.conv2(x))], 1)
        return self.conv3(self.attn(y))


class CSPResNet(nn.Module):
    def __init__(self, layers=(3, 6, 6, 3), channels=(64, 128, 256, 512, 1024), act: str = "swish",
                 return_idx=(1, 2, 3), use_large_stem: bool = True, width_mult: float = 1.0,
                 depth_mult: float = 1.0, use_alpha: bool = True):
        super().__init__()
        channels = [max(round(c * width_mult), 1) for c in channels]
        layers = [max(round(n * depth_mult), 1) for n in layers]
        c0 = channels[0]
        if use_large_stem:
            self.stem = nn.Sequential()
            self.stem.add_module("conv1", ConvBNLayer(3, c0 // 2, 3, stride=2, padding=1, act=act))
            self.stem.add_module("conv2", ConvBNLayer(c0 // 2, c0 // 2, 3, padding=1, act=act))
            self.stem.add_module("conv3", ConvBNLayer(c0 // 2, c0, 3, padding=1, act=act))
        else:
            self.stem = nn.Sequential()
            self.stem.add_module("conv1", ConvBNLayer(3, c0 // 2, 3, stride=2, padding=1, act=act))
            self.stem.add_module("conv2", ConvBNLayer(c0 // 2, c0, 3, padding=1, act=act))
        self.stages = nn.Sequential(*[CSPResStage(channels[i], channels[i + 1], layers[i], 2, act=act,
                                                  use_alpha=use_alpha) for i in range(len(channels) - 1)])
        self.return_idx = tuple(return_idx)
        self.out_channels = [channels[i + 1] for i in self.return_idx]
        self.out_strides = [4 * 2 ** i for i in self.return_idx]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
