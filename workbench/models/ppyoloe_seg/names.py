"""PaddleX name of the PP-YOLOE_seg family, what its schedule counts and its training defaults
(PaddleDetection ``configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml`` and its ``_base_`` files:
80 epochs, SGD momentum 0.9 at 0.001, L2 5e-4, linear warmup 5 epochs from 0, cosine decay over
96 epochs, EMA 0.9998; 8 images per GPU at 640 x 640)."""

from __future__ import annotations

from ...engine.weights import PretrainedWeights

MODEL_NAMES = {"PP-YOLOE_seg-S": "S"}
UNIT = "epochs"
TRAIN_DEFAULTS = {
    "epochs_iters": 80,
    "batch_size": 8,
    "learning_rate": 0.001,
    "eval_interval": 5,
    "save_interval": 5,
    "log_interval": 50,
    "warmup_steps": 0,  # on top of: warmup_epochs (below)
}
# The family's own training arguments and their defaults.
TRAIN_OPTIONS = {
    "warmup_epochs": 5.0,  # linear warmup from 0 (LinearWarmup start_factor 0, epochs 5)
    "cosine_epochs_ratio": 1.2,  # CosineDecay max_epochs 96 for an 80-epoch run
    "momentum": 0.9,
    "weight_decay": 5e-4,  # L2 on all but the BatchNorm scales and shifts (L2Decay(0.0) in Paddle)
    "ema_decay": 0.9998,
    "augment": True,  # RandomFlip + RandomDistort (photometric); see data.py for what is left
    "multi_scale": False,  # the seg reader trains at one size; True: sizes 0.75x .. 1.25x of input_size
    "clip_max_norm": 0.0,  # Paddle's PP-YOLOE recipe clips nothing
}
# Weights that hold the class-specific layers (re-initialised when fine-tuning on other classes).
CLASS_SPECIFIC = ("yolo_head.pred_cls.",)
# The smallest working configuration (the cross-family contract test trains it for 2 epochs).
SMOKE = {
    "name": "PP-YOLOE_seg-S",
    "model": {"input_size": 96},
    "train": {
        "epochs_iters": 2,
        "batch_size": 4,
        "learning_rate": 0.001,
        "eval_interval": 2,
        "save_interval": 1,
        "log_interval": 1,
        "warmup_steps": 1,
        "warmup_epochs": 0.0,
    },
}

# Not registered as ``weights="coco"`` yet: the URL below follows PaddleX's pattern for its other
# instance-segmentation models but was not checked from this machine (no download); until it is,
# pass PaddleDetection's file as a local path or URL (``weights=".../ppyoloe_seg_s_80e_coco.pdparams"``).
NO_COCO_WEIGHTS = ("weights='coco' is not wired for it yet; PaddleDetection's "
                   "https://paddledet.bj.bcebos.com/models/ppyoloe_seg_s_80e_coco.pdparams can be passed as weights=, "
                   "converted on the fly")
# Candidate official COCO weights: PaddleX's "trained model" .pdparams of the name (the pattern of its other
# instance-segmentation models) — PaddleDetection's own file is
# https://paddledet.bj.bcebos.com/models/ppyoloe_seg_s_80e_coco.pdparams (same architecture, same keys).
_PADDLEX = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/"
COCO_WEIGHTS: dict[str, PretrainedWeights] = {
    "PP-YOLOE_seg-S": PretrainedWeights(
        f"{_PADDLEX}PP-YOLOE_seg-S_pretrained.pdparams",
        "PaddleX official pretrained model (PaddleX model list, instance segmentation)",
        note="COCO mask AP 32.5 (PaddleX), box AP 42.3 (PaddleDetection)",
    )
}
