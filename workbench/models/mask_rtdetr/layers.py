"""Small building blocks shared by the encoder and the decoder.

Module and attribute names follow PaddleDetection so that converted ``.pdparams``
load with a plain rename (``conv``/``bn``, ``layers.i``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm without the ``num_batches_tracked`` buffer (Paddle has none).

    Keeping state-dict entries one-to-one with Paddle's makes the converter a pure rename.
    Momentum is fixed (0.1, i.e. Paddle's 0.9), so the counter is never needed.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        local_metadata = dict(local_metadata)
        local_metadata["version"] = 2  # skip the base class's back-fill of the counter
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def convert_batchnorms(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.BatchNorm2d`` inside ``module`` into :class:`BatchNorm2d` in place."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = BatchNorm2d
            m._buffers["num_batches_tracked"] = None
    return module


def get_activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    name = name.lower()
    if name in ("silu", "swish"):
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}")


class ConvBN(nn.Module):
    """Conv (no bias) + BN + optional activation; the names ``conv``/``bn`` match Paddle's
    ``BaseConv`` (csp_darknet) and ``ConvBNLayer`` (cspresnet)."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int, stride: int = 1, act: str | None = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ksize, stride, padding=(ksize - 1) // 2, bias=False)
        self.bn = BatchNorm2d(out_ch)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between (Paddle's ``heads/detr_head.MLP``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x
