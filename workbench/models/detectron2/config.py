"""Detectron2 configs for the PaddleX names: model-zoo YAML + our from-scratch choices.

Choices made for training from scratch (``weights=None``), measured on this machine:
Detectron2's default ``FrozenBN`` with random initialisation diverges to NaN within a few
iterations, so

* ``norm="GN"`` (default): GroupNorm(32) in the backbone, the FPN and the mask head; the box
  head keeps Detectron2's two FC layers (no norm needed there). Trains stably without clipping.
  Works with any batch size, also 1 image per process.
* ``norm="BN"``: BatchNorm trained in the backbone, FPN and mask head, with per-parameter
  gradient-norm clipping (``SOLVER.CLIP_GRADIENTS``, norm 1.0), which it needs to stay finite
  from scratch. Needs a few images per process for stable statistics. ``"SyncBN"`` is the
  multi-GPU form.
* ``norm="FrozenBN"``: Detectron2's default; only sensible with pretrained weights. ``weights="coco"``
  (the model zoo's checkpoints) builds it, with the zoo config otherwise unchanged (``STRIDE_IN_1X1``,
  ``FREEZE_AT=2``), so that every tensor of the checkpoint loads.
* ``MODEL.BACKBONE.FREEZE_AT = 0`` (nothing frozen) unless FrozenBN.

``depth`` overrides the ResNet depth (18, 34, 50, 101, 152); a smaller depth is a legitimate way
to fit CPU budgets (the tests use it where documented). Input size: images are resized so that
the short side is ``input_size`` (long side at most ``input_size * 1333 / 800``), in training and
at test time.
"""
from __future__ import annotations

import os
from typing import Any

from ._compat import import_detectron2
from .names import DETECTRON2_MODELS

NORMS = ("GN", "BN", "SyncBN", "FrozenBN")
DEPTHS = (18, 34, 50, 101, 152)


def zoo_config_path(rel: str) -> str:
    import detectron2

    path = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Detectron2 model-zoo config {rel} is missing from {path}; "
                                "reinstall Detectron2 with tools/install_detectron2.py")
    return path


def build_cfg(name: str, *, num_classes: int = 1, norm: str = "GN", depth: int | None = None,
              input_size: int = 640, device: str = "cpu", score_thresh_test: float = 0.05,
              d2_overrides: dict[str, Any] | None = None):
    """The full Detectron2 ``CfgNode`` for model ``name``."""
    import_detectron2()
    from detectron2.config import CfgNode, get_cfg

    from . import resnet_vd  # noqa: F401  (registers the vd backbones)

    spec = DETECTRON2_MODELS[name]
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    depth = int(depth or spec.depth)
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth}")
    if spec.num_groups > 1 and depth < 50:
        raise ValueError(f"{name}: ResNeXt needs depth >= 50 (bottleneck blocks), got {depth}")

    cfg = get_cfg()
    cfg.merge_from_file(zoo_config_path(spec.zoo_config))
    m = cfg.MODEL
    m.WEIGHTS = ""  # never download ImageNet weights implicitly
    m.DEVICE = device
    m.MASK_ON = True
    m.RESNETS.DEPTH = depth
    m.RESNETS.NUM_GROUPS = spec.num_groups
    m.RESNETS.WIDTH_PER_GROUP = spec.width_per_group
    if depth < 50:
        m.RESNETS.RES2_OUT_CHANNELS = 64
    if spec.backbone == "resnet_vd":
        m.BACKBONE.NAME = "build_resnet_vd_fpn_backbone" if spec.fpn else "build_resnet_vd_backbone"
        m.RESNETS.STRIDE_IN_1X1 = False
    m.ROI_HEADS.NUM_CLASSES = int(num_classes)
    m.ROI_HEADS.SCORE_THRESH_TEST = score_thresh_test
    m.RETINANET.NUM_CLASSES = int(num_classes)

    if norm == "FrozenBN":
        m.BACKBONE.FREEZE_AT = 2
    else:
        m.BACKBONE.FREEZE_AT = 0
        m.RESNETS.NORM = norm
        m.RESNETS.STRIDE_IN_1X1 = False
        if spec.fpn:
            m.FPN.NORM = norm
            m.ROI_MASK_HEAD.NORM = norm
    if norm in ("BN", "SyncBN"):
        cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
        cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
        cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0

    size = int(input_size)
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = int(round(size * 1333 / 800))
    cfg.INPUT.MIN_SIZE_TEST = size
    cfg.INPUT.MAX_SIZE_TEST = int(round(size * 1333 / 800))
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATALOADER.NUM_WORKERS = 0

    cfg.WORKBENCH = CfgNode()
    cfg.WORKBENCH.MODEL_NAME = name
    cfg.WORKBENCH.NORM = norm
    cfg.WORKBENCH.DEPTH = depth
    cfg.WORKBENCH.INPUT_SIZE = size
    cfg.WORKBENCH.CLASS_NAMES = []
    cfg.WORKBENCH.CATEGORY_IDS = []

    for key, value in (d2_overrides or {}).items():
        cfg.merge_from_list([key, value])  # yacs checks the key exists and the type matches
    return cfg
