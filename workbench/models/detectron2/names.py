"""PaddleX model names of the Detectron2 family, the Detectron2 model-zoo config each starts from,
and the official COCO weights of the names that have an exact Detectron2 equivalent.

``backbone``: ``"resnet"`` (Detectron2's own ResNet) or ``"resnet_vd"`` (ours, ``resnet_vd.py``:
deep 3x3 stem and average-pool downsampling on the shortcut, as in PaddleX). SSLDv2 is PaddleX's
name for ImageNet weights distilled with SSLD; the architecture is ResNet-vd, and the SSLDv2 names
build the same vd network as the plain vd names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.weights import D2_PREFIX, PretrainedWeights


@dataclass(frozen=True)
class Spec:
    zoo_config: str  # path inside Detectron2's model_zoo/configs
    depth: int
    backbone: str = "resnet"  # resnet | resnet_vd
    fpn: bool = True
    cascade: bool = False
    num_groups: int = 1
    width_per_group: int = 64


_FPN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
_C4 = "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml"
_R101 = "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml"
_X101 = "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml"
_CASCADE = "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"

DETECTRON2_MODELS: dict[str, Spec] = {
    "MaskRCNN-ResNet50-FPN": Spec(_FPN, 50),
    "MaskRCNN-ResNet50": Spec(_C4, 50, fpn=False),
    "MaskRCNN-ResNet101-FPN": Spec(_R101, 101),
    # PaddleX's ResNeXt101-vd is the 64x4d variant
    "MaskRCNN-ResNeXt101-vd-FPN": Spec(_X101, 101, "resnet_vd", num_groups=64, width_per_group=4),
    "MaskRCNN-ResNet50-vd-FPN": Spec(_FPN, 50, "resnet_vd"),
    "MaskRCNN-ResNet101-vd-FPN": Spec(_R101, 101, "resnet_vd"),
    "MaskRCNN-ResNet50-vd-SSLDv2-FPN": Spec(_FPN, 50, "resnet_vd"),
    "Cascade-MaskRCNN-ResNet50-FPN": Spec(_CASCADE, 50, cascade=True),
    "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN": Spec(_CASCADE, 50, "resnet_vd", cascade=True),
}

# Official COCO weights (``create_model(name, weights="coco")``): Detectron2's model zoo, for the
# names whose zoo config is exactly the network built here (the URLs are those of
# detectron2/model_zoo/model_zoo.py, ``_ModelZooUrls``). They are FrozenBN ResNets with
# STRIDE_IN_1X1 (MSRA weights) trained on COCO's 80 classes; with them the model is built with
# norm="FrozenBN" and the zoo config unchanged. Detectron2 publishes no size or checksum (the
# 6-hex suffix of the file name is not documented as one), so a download is checked against its
# Content-Length and recorded (size, sha256) for later cache hits.
_ZOO_SOURCE = "Detectron2 model zoo (MODEL_ZOO.md)"
COCO_WEIGHTS: dict[str, PretrainedWeights] = {
    "MaskRCNN-ResNet50-FPN": PretrainedWeights(
        D2_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl",
        _ZOO_SOURCE,
        note="mask_rcnn_R_50_FPN_3x: COCO box AP 41.0, mask AP 37.2",
    ),
    "MaskRCNN-ResNet50": PretrainedWeights(
        D2_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x/137849525/model_final_4ce675.pkl",
        _ZOO_SOURCE,
        note="mask_rcnn_R_50_C4_3x: COCO box AP 39.8, mask AP 34.4",
    ),
    "MaskRCNN-ResNet101-FPN": PretrainedWeights(
        D2_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x/138205316/model_final_a3ec72.pkl",
        _ZOO_SOURCE,
        note="mask_rcnn_R_101_FPN_3x: COCO box AP 42.9, mask AP 38.6",
    ),
    "Cascade-MaskRCNN-ResNet50-FPN": PretrainedWeights(
        D2_PREFIX + "Misc/cascade_mask_rcnn_R_50_FPN_3x/144998488/model_final_480dd8.pkl",
        _ZOO_SOURCE,
        note="Misc/cascade_mask_rcnn_R_50_FPN_3x: COCO box AP 44.3, mask AP 38.5",
    ),
}
NO_COCO_WEIGHTS = (
    "Detectron2's model zoo has no ResNet-vd, SSLDv2 or ResNeXt101-64x4d-vd Mask R-CNN (its ResNeXt is "
    "X101-32x8d), and PaddleX's own weights for these names are PaddleDetection networks this Detectron2 "
    "port does not convert"
)
# The zoo's test-time short side (INPUT.MIN_SIZE_TEST), the default input size with COCO weights.
COCO_INPUT_SIZE = 800

# What ``epochs_iters`` counts for this family, and its default training arguments (the panels and
# notebooks read these instead of hard-coding numbers): SGD at 0.01 with GroupNorm from scratch.
UNIT = "iterations"
TRAIN_DEFAULTS = {
    "epochs_iters": 1000,
    "batch_size": 2,
    "learning_rate": 0.01,
    "eval_interval": 500,
    "save_interval": 500,
    "log_interval": 10,
    "warmup_steps": 100,
}
# The family's own training arguments: ResNet norm and depth, raw Detectron2 config keys, and the
# optimizer (Detectron2's SGD, or AdamW).
TRAIN_OPTIONS = {"norm": None, "depth": None, "d2_overrides": None, "optimizer": "SGD"}
# The smallest working configuration of the family (ResNet-18 body, few RoIs): the cross-family
# contract test and the notebook tests train it for a few iterations.
SMOKE = {
    "name": "MaskRCNN-ResNet50-FPN",
    "model": {"depth": 18, "input_size": 96, "d2_overrides": {"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32}},
    "train": {
        "epochs_iters": 2,
        "batch_size": 2,
        "eval_interval": 2,
        "save_interval": 1,
        "log_interval": 1,
        "warmup_steps": 1,
    },
}
