"""The PP-YOLOE_seg family's model object: ``create_model(name, ...)`` -> ``PPYOLOESegModel``.

Same contract as every family (``engine.model.BaseModel``); ``epochs_iters`` counts **epochs**
here (as PaddleX does for this family), and so do ``eval_interval``/``save_interval``.

Weights (``create_model(weights=...)``, found and read by ``engine.weights``):

* a checkpoint written by this workbench (``model_final.pth``, ``best_model/``, a
  ``model_NNNNNNN.pth``): the input size and the classes (names and dataset category ids) are
  stored in it;
* a PaddleDetection/PaddleX ``.pdparams`` (converted on the fly, no Paddle needed) or a ``.pth``
  written by ``convert.py``: the number of classes comes from the weights; 80 classes are taken
  to be COCO's;
* a URL (downloaded into the cache) or ``"coco"``: PaddleX's official COCO ``.pdparams``.

Training (``solver.PPYOLOESegTrainer``) follows PaddleDetection's recipe: SGD momentum 0.9,
L2 5e-4, linear warmup then cosine decay, EMA 0.9998 (its weights are evaluated and saved).
Inference: square resize to ``input_size`` (bicubic), multi-class NMS (``postprocess.py``).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...engine.classes import COCO_CATEGORY_IDS, COCO_NAMES, ClassMap
from ...engine.errors import WeightsError
from ...engine.launcher import resolve_device
from ...engine.model import BaseModel, keep_scores
from ...engine.result import Result
from ...engine.train_args import TrainArgs, TrainJob
from ..mask_rtdetr.facade import _classes
from .names import MODEL_NAMES, TRAIN_DEFAULTS, TRAIN_OPTIONS, UNIT
from .weights import read_weights


def create_model(name: str, weights: str | os.PathLike | None = None, device: str | None = None, *,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 category_ids: list[int] | None = None, input_size: int | None = None,
                 url_timeout: float = 15.0, **overrides) -> PPYOLOESegModel:
    """Build ``PP-YOLOE_seg-S``. ``weights``: see the module docstring (``None``: random init, classes
    from the training dataset). ``input_size``: the square side images are resized to (multiple of
    32; default 640 or the checkpoint's). ``overrides``: architecture options of ``model.variant_config``
    (``num_masks``, ``num_protos``, ``reg_max``)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"not a PP-YOLOE_seg model: {name!r}")
    variant = MODEL_NAMES[name]
    from .model import variant_config

    variant_config(variant, 80, **overrides)  # validate the override names now
    dev = resolve_device(device)
    info = {"state_dict": None, "meta": None, "num_classes": None, "overrides": {}}
    path = None
    if weights is not None:
        from ..registry import resolve_model_weights

        path, pre = resolve_model_weights(name, weights, url_timeout, suffixes=(".pth", ".pt", ".pdparams"))
        info = read_weights(path, variant)
        if info["meta"] and info["meta"].get("model_name") not in (None, name):
            raise WeightsError(f"{path} holds weights of {info['meta']['model_name']}, not {name}")
        if pre is not None or (info["meta"] is None and info["num_classes"] == len(COCO_NAMES)
                               and class_names is None):
            if info["num_classes"] != len(COCO_NAMES):
                raise WeightsError(f"{path}: the COCO weights of {name} should have {len(COCO_NAMES)} classes, "
                                   f"this file has {info['num_classes']}")
            info["meta"] = {**(info["meta"] or {}), "category_ids": list(COCO_CATEGORY_IDS),
                            "class_names": list(COCO_NAMES),
                            **({"pretrained": pre.classes, "source": pre.url} if pre is not None else {})}
    classes = _classes(info["meta"], class_names, category_ids, num_classes, info["num_classes"], path)
    merged = {**info["overrides"], **overrides}
    if info["state_dict"] is not None and overrides:
        raise WeightsError(f"architecture overrides {overrides} cannot be applied to the weights {path}")
    size = int(input_size or (info["meta"] or {}).get("input_size") or 640)
    if size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {size}")
    return PPYOLOESegModel(name, variant=variant, weights=str(path) if path else None, device=dev, classes=classes,
                           overrides=merged, input_size=size, state_dict=info["state_dict"], meta=info["meta"])


class PPYOLOESegModel(BaseModel):
    family = "ppyoloe_seg"
    unit = UNIT
    default_train_args = TRAIN_DEFAULTS
    train_options = TRAIN_OPTIONS
    trainer = "workbench.models.ppyoloe_seg.solver:PPYOLOESegTrainer"

    def __init__(self, name: str, *, variant: str, weights: str | None, device: str, classes: ClassMap | None,
                 overrides: dict, input_size: int, state_dict: dict | None = None, meta: dict | None = None):
        super().__init__(name, weights=weights, device=device, classes=classes, input_size=input_size, meta=meta)
        self.variant = variant
        self.overrides = dict(overrides)
        self._state_dict = state_dict

    def repr_fields(self) -> dict:
        return {"overrides": self.overrides}

    @classmethod
    def from_net(cls, name: str, net: torch.nn.Module, classes: ClassMap, input_size: int) -> PPYOLOESegModel:
        """A model object over a network being trained (for evaluation during training)."""
        m = cls(name, variant=net.config.get("variant", "S"), weights=None, device=str(next(net.parameters()).device),
                classes=classes, overrides={}, input_size=input_size)
        m._net = net
        return m

    # ------------------------------------------------------------------ network
    def build(self, num_classes: int | None = None) -> torch.nn.Module:
        if self._net is not None:
            return self._net
        from .model import build_ppyoloe_seg

        if self.classes is None:
            self.classes = ClassMap.default(int(num_classes or 80))
        net = build_ppyoloe_seg(self.variant, len(self.classes), **self.overrides)
        if self._state_dict is not None:
            net.load_state_dict(self._state_dict, strict=True)
            self._state_dict = None
        self._net = net.to(self.device).eval()
        return self._net

    def meta_dict(self) -> dict:
        return {"model_name": self.name, "family": self.family, "variant": self.variant,
                "input_size": self.input_size, "overrides": dict(self.overrides), **self.classes.to_meta()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights with their metadata (variant, input size, classes)."""
        from .engine import save_checkpoint

        return save_checkpoint(path, self.net, extra={"workbench": self.meta_dict()})

    def export(self, path: str | os.PathLike, image_size: int | None = None, opset: int = 17) -> Path:
        """ONNX graph without NMS: images [1, 3, S, S] in [0, 1] -> boxes [1, L, 4] (xyxy input
        pixels), scores [1, L, C], mask coefficients [1, L, 32], prototypes [1, 32, S/4, S/4]
        (``postprocess.decode`` turns them into detections)."""
        from .export import export_onnx

        net = copy.deepcopy(self.net).cpu().eval()
        return export_onnx(net, path, image_size=int(image_size or self.input_size), opset=opset)

    export_onnx = export

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, images: Sequence[np.ndarray], paths: Sequence[str | None], threshold: float = 0.5,
              mask_threshold: float = 0.5, keep_image: bool = True) -> list[Result]:
        from ..mask_rtdetr.data import to_model_input
        from .postprocess import ProtoSoftMasks, decode

        net = self.build()
        dev = next(net.parameters()).device
        was_training = net.training
        net.eval()
        try:
            out = net(torch.stack([to_model_input(im, self.input_size) for im in images]).to(dev))
        finally:
            net.train(was_training)
        cids = np.asarray(self.classes.category_ids, np.int64)
        results = []
        for im, path, d in zip(images, paths, decode(out, [im.shape[:2] for im in images])):
            keep = torch.nonzero(keep_scores(d["scores"], threshold)).flatten()
            lab = d["labels"][keep].cpu().numpy()
            results.append(Result(
                input_path=path, image_size=im.shape[:2], boxes=d["boxes"][keep].cpu().numpy(),
                scores=d["scores"][keep].cpu().numpy(),
                class_ids=cids[lab] if len(lab) else np.zeros(0, np.int64),
                class_names=[self.classes.names[j] for j in lab],
                mask_probs=ProtoSoftMasks(im.shape[:2], d["mask_logits"][keep], d["boxes_input"][keep],
                                          d["input_size"]),
                mask_threshold=mask_threshold, threshold=threshold, image=im if keep_image else None,
                model_name=self.name))
        return results

    # ------------------------------------------------------------------ training
    def train_job(self, dataset_dir: str, output: str, device: str, args: TrainArgs) -> TrainJob:
        if args.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {args.input_size}")
        init = None
        if self.weights is not None:
            init = ({k: v.detach().cpu() for k, v in self._net.state_dict().items()} if self._net is not None
                    else self._state_dict)
        meta = self.meta if (self.meta and self.meta.get("class_names")) else None
        if init is not None and meta is None and self.classes is not None:
            meta = {"unnamed_classes": self.classes.to_meta()}
        return TrainJob(model_name=self.name, family=self.family, dataset_dir=dataset_dir, output=output,
                        device=device, args=args, model_config={"variant": self.variant,
                                                                "overrides": dict(self.overrides)},
                        init_weights=self.weights, init_state=init, init_meta=meta)
