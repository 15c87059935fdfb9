"""PP-YOLOE's building blocks (PaddleDetection ``backbones/cspresnet.py``), PyTorch: conv + BN +
activation, the RepVGG block (3x3 and 1x1 branches, optional learnable ``alpha`` on the 1x1),
the residual ``BasicBlock`` and the effective squeeze-excitation layer.

Module and parameter names follow Paddle's, so that ``.pdparams`` keys map one to one (BN's
``_mean``/``_variance`` become ``running_mean``/``running_var``; see ``convert.py``). Paddle's
BatchNorm momentum 0.9 is torch's 0.1; eps 1e-5 in both."""
from __future__ import annotations

import torch
import torch.nn as nn


def activation(name: str | None) -> nn.Module:
    if name in (None, "", "none"):
        return nn.Identity()
    if name in ("swish", "silu"):
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "hardsigmoid":  # Paddle's slope 1/6, offset 0.5 = torch's
        return nn.Hardsigmoid()
    raise ValueError(f"unknown activation {name!r}")


class ConvBNLayer(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, filter_size: int = 3, stride: int = 1, groups: int = 1,
                 padding: int = 0, act: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(ch_in, ch_out, filter_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(ch_out)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BaseConv(nn.Module):
    """YOLOX-style conv + BN + SiLU (the mask prototype branch uses it; always SiLU, as Paddle's)."""

    def __init__(self, ch_in: int, ch_out: int, ksize: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(ch_in, ch_out, ksize, stride, (ksize - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(ch_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.bn(self.conv(x)))


class RepVggBlock(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, act: str = "relu", alpha: bool = False):
        super().__init__()
        self.conv1 = ConvBNLayer(ch_in, ch_out, 3, padding=1)
        self.conv2 = ConvBNLayer(ch_in, ch_out, 1)
        self.act = activation(act)
        self.alpha = nn.Parameter(torch.ones(1)) if alpha else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.conv2(x)
        if self.alpha is not None:
            b = self.alpha * b
        return self.act(self.conv1(x) + b)


class BasicBlock(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, act: str = "relu", shortcut: bool = True, use_alpha: bool = False):
        super().__init__()
        if ch_in != ch_out:
            raise ValueError("BasicBlock needs ch_in == ch_out")
        self.conv1 = ConvBNLayer(ch_in, ch_out, 3, padding=1, act=act)
        self.conv2 = RepVggBlock(ch_out, ch_out, act=act, alpha=use_alpha)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class EffectiveSELayer(nn.Module):
    """Effective squeeze-excitation (CenterMask): x * hardsigmoid(fc(mean(x)))."""

    def __init__(self, channels: int, act: str = "hardsigmoid"):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(x.mean((2, 3), keepdim=True)))
