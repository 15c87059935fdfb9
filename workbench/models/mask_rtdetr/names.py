"""PaddleX names of the Mask-RT-DETR family, what its schedule counts and its training defaults
(PaddleDetection's recipe: AdamW at 1e-4, warmup 2000 steps, EMA; epochs, not iterations)."""

from __future__ import annotations

from ...engine.weights import PretrainedWeights

MODEL_NAMES = {f"Mask-RT-DETR-{v}": v for v in ("S", "M", "L", "X", "H")}
UNIT = "epochs"
TRAIN_DEFAULTS = {
    "epochs_iters": 20,
    "batch_size": 4,
    "learning_rate": 1e-4,
    "eval_interval": 1,
    "save_interval": 1,
    "log_interval": 10,
    "warmup_steps": 2000,
}
# The family's own training arguments and their defaults.
TRAIN_OPTIONS = {
    "multi_scale": True,
    "augment": True,
    "weight_decay": 1e-4,
    "clip_max_norm": 0.1,
    "ema_decay": 0.9999,
    "ema_warmup": 2000,
    "num_sample_points": None,
}
# PaddleDetection's BatchRandomResize sizes for 640 px training (scaled for other input sizes).
MULTI_SCALE_640 = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)
# Weights that hold the class-specific layers (re-initialised when fine-tuning on other classes);
# one score head is shared by the encoder and decoder in this port.
CLASS_SPECIFIC = ("transformer.score_head.", "transformer.denoising_class_embed.")
# The smallest working configuration of the family (20 queries, one decoder layer, no denoising):
# the cross-family contract test and the notebook tests train it for one epoch.
SMOKE = {
    "name": "Mask-RT-DETR-S",
    "model": {
        "num_queries": 20,
        "num_decoder_layers": 1,
        "num_denoising": 0,
        "num_sample_points": 256,
        "input_size": 96,
    },
    "train": {
        "epochs_iters": 2,
        "batch_size": 4,
        "eval_interval": 2,
        "save_interval": 1,
        "log_interval": 1,
        "warmup_steps": 2,
        "multi_scale": False,
    },
}

# Official COCO weights (``create_model(name, weights="coco")``): PaddleX's "trained model"
# ``.pdparams`` of each name, the checkpoint PaddleX's own configs fine-tune from
# (``Train.pretrain_weight_path`` in paddlex/configs/modules/instance_segmentation/Mask-RT-DETR-*.yaml)
# and list in its model table. A ``.pdparams`` is a plain state dict, converted on the fly
# (``convert.py``). PaddleDetection publishes only L
# (https://paddledet.bj.bcebos.com/models/mask_rtdetr_hgnetv2_l_6x_coco.pdparams); PaddleX's
# inference tarballs (``*_infer.tar``) hold a static graph, not these weights. PaddleX publishes
# no checksum and no exact file size (its "model size" column is rounded), so a download is
# checked against its Content-Length and recorded (size, sha256) for later cache hits.
_PADDLEX = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/"
_PADDLEX_SOURCE = "PaddleX official pretrained model (PaddleX model list, instance segmentation)"
_MASK_AP = {"S": 41.0, "M": 42.7, "L": 45.7, "X": 47.5, "H": 50.6}
COCO_WEIGHTS: dict[str, PretrainedWeights] = {
    name: PretrainedWeights(
        f"{_PADDLEX}{name}_pretrained.pdparams", _PADDLEX_SOURCE, note=f"COCO mask AP {_MASK_AP[v]} (PaddleX)"
    )
    for name, v in MODEL_NAMES.items()
}
