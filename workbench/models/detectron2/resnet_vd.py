"""ResNet-vd for Detectron2, registered in its ``BACKBONE_REGISTRY``.

ResNet-vd ("Bag of Tricks", He et al. 2019, variant D; PaddleX/PaddleClas's default ResNet):

* the 7x7 stem convolution is replaced by three 3x3 convolutions (32, 32, 64 channels, the first
  with stride 2) followed by the usual 3x3 max-pool (``DeepStem``);
* a downsampling shortcut averages 2x2 first and then applies a 1x1 convolution with stride 1,
  instead of a strided 1x1 convolution that drops 3/4 of the input (``VdBottleneckBlock``,
  ``VdBasicBlock``);
* the stride of a bottleneck sits in its 3x3 convolution (``MODEL.RESNETS.STRIDE_IN_1X1 = False``).

Everything else (block layout, ResNeXt groups, freezing, output features) is Detectron2's own
``ResNet``; this module only supplies the stem and blocks and two builders:

* ``build_resnet_vd_backbone`` (``MODEL.BACKBONE.NAME = "build_resnet_vd_backbone"``), for C4 use;
* ``build_resnet_vd_fpn_backbone``: the same bottom-up network under Detectron2's ``FPN``.
"""
from __future__ import annotations

from ._compat import import_detectron2

import_detectron2()

import fvcore.nn.weight_init as weight_init  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY  # noqa: E402
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool  # noqa: E402
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet  # noqa: E402
from torch import nn  # noqa: E402

NUM_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class DeepStem(CNNBlockBase):
    """Three 3x3 convolutions (stride 2, 1, 1) and a 3x3/2 max-pool: stride 4 in total."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        mid = out_channels // 2
        self.conv1 = Conv2d(in_channels, mid, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv2 = Conv2d(mid, mid, 3, stride=1, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv3 = Conv2d(mid, out_channels, 3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(layer)

    def forward(self, x):
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _avgpool_shortcut(in_channels: int, out_channels: int, stride: int, norm) -> nn.Module:
    conv = Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False,
                  norm=get_norm(norm, out_channels))
    weight_init.c2_msra_fill(conv)
    return nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), conv)


class VdBottleneckBlock(BottleneckBlock):
    """Detectron2's bottleneck with the vd shortcut (avg-pool, then 1x1 conv) when it downsamples."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", **kwargs):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm, **kwargs)
        if self.shortcut is not None and stride > 1:
            self.shortcut = _avgpool_shortcut(in_channels, out_channels, stride, norm)


class VdBasicBlock(BasicBlock):
    """Detectron2's basic block (ResNet-18/34) with the vd shortcut when it downsamples."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN"):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        if self.shortcut is not None and stride > 1:
            self.shortcut = _avgpool_shortcut(in_channels, out_channels, stride, norm)


def _register(fn):
    # a second import (e.g. importlib.reload in a notebook) must not fail on re-registration
    if fn.__name__ not in BACKBONE_REGISTRY:
        BACKBONE_REGISTRY.register(fn)
    return fn


@_register
def build_resnet_vd_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-vd from ``cfg.MODEL.RESNETS`` (same keys as Detectron2's ``build_resnet_backbone``)."""
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    depth = r.DEPTH
    if depth not in NUM_BLOCKS:
        raise ValueError(f"ResNet-vd depth must be one of {sorted(NUM_BLOCKS)}, got {depth}")
    if any(r.DEFORM_ON_PER_STAGE):
        raise ValueError("deformable convolutions are not available in this (Python-only) Detectron2 build")
    stem = DeepStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm)
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    if depth in (18, 34):
        if out_channels != 64 or r.NUM_GROUPS != 1 or r.RES5_DILATION != 1:
            raise ValueError("ResNet-vd 18/34 needs RES2_OUT_CHANNELS=64, NUM_GROUPS=1, RES5_DILATION=1")
    stage_names = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}
    max_stage = max(stage_names.get(f, 5) for f in r.OUT_FEATURES)
    stages = []
    for idx, stage_idx in enumerate(range(2, max_stage + 1)):
        dilation = r.RES5_DILATION if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        n = NUM_BLOCKS[depth][idx]
        kw = dict(num_blocks=n, stride_per_block=[first_stride] + [1] * (n - 1),
                  in_channels=in_channels, out_channels=out_channels, norm=norm)
        if depth in (18, 34):
            kw["block_class"] = VdBasicBlock
        else:
            kw.update(block_class=VdBottleneckBlock, bottleneck_channels=bottleneck_channels,
                      stride_in_1x1=r.STRIDE_IN_1X1, dilation=dilation, num_groups=r.NUM_GROUPS)
        stages.append(ResNet.make_stage(**kw))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@_register
def build_resnet_vd_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Detectron2's FPN (P2-P6) on top of ResNet-vd."""
    return FPN(bottom_up=build_resnet_vd_backbone(cfg, input_shape), in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
