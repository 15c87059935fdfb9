"""The Mask-RT-DETR family's model object: ``create_model(name, ...)`` -> ``MaskRTDETRModel``.

Same contract as every family (``engine.model.BaseModel``); ``epochs_iters`` counts **epochs**
here (as PaddleX does for this family), and so do ``eval_interval``/``save_interval``.

Weights (``create_model(weights=...)``, found and read by ``engine.weights``):

* a checkpoint written by this workbench (``model_final.pth``, ``best_model/``, a
  ``model_NNNNNNN.pth``): the variant, the small-config overrides, the input size and the classes
  (names and dataset category ids) are stored in it;
* a PaddleDetection/PaddleX ``.pdparams`` (converted on the fly, no Paddle needed) or a ``.pth``
  written by ``convert.py``: the number of classes comes from the weights; the class names are
  unknown unless given (``class_names=``); 80 classes are taken to be COCO's (names and ids);
* a URL: downloaded into the cache; an unreachable URL raises ``WeightsError``;
* ``"coco"``: PaddleX's official COCO ``.pdparams`` of the name (``names.COCO_WEIGHTS``),
  downloaded once into the cache and converted on the fly; the model then predicts COCO's 80
  classes by name (``person``, ``dog`` …) with no dataset, and fine-tunes to any classes.

Training (``solver.MaskRTDETRTrainer``) follows PaddleDetection's recipe: AdamW (weight decay
1e-4), backbone lr multipliers, linear warmup, global-norm clipping 0.1, EMA (0.9999, warmup
2000 updates) — the EMA weights are the ones evaluated and saved as ``model_final.pth`` /
``best_model/model.pth``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...engine.classes import COCO_CATEGORY_IDS, COCO_NAMES, ClassMap
from ...engine.errors import ClassMismatchError, TrainingDivergedError, WeightsError  # noqa: F401 - re-exported
from ...engine.launcher import resolve_device
from ...engine.model import BaseModel
from ...engine.result import Result
from ...engine.train_args import TrainArgs, TrainJob
from .names import MODEL_NAMES, TRAIN_DEFAULTS, TRAIN_OPTIONS, UNIT
from .weights import read_weights


def _check_overrides_fit(variant: str, n: int, merged: dict, overrides: dict, state_dict: dict, path) -> None:
    """Architecture overrides that change parameter shapes must match the weights."""
    from .model import build_mask_rtdetr

    with torch.device("meta"):
        ref = build_mask_rtdetr(variant, n, **merged).state_dict()
    bad = [k for k in ref if k not in state_dict or tuple(state_dict[k].shape) != tuple(ref[k].shape)]
    extra = [k for k in state_dict if k not in ref]
    if bad or extra:
        raise WeightsError(f"the overrides {overrides} do not fit the weights {path} ({len(bad)} missing/mis-shaped "
                           f"and {len(extra)} unexpected entries, e.g. {(bad + extra)[:3]})")


def _classes(meta: dict | None, class_names, category_ids, num_classes, n_weights, path) -> ClassMap | None:
    classes = ClassMap.from_meta(meta) if meta and meta.get("class_names") else None
    if class_names is not None:
        ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        if len(ids) != len(class_names):
            raise ValueError("category_ids and class_names differ in length")
        classes = ClassMap(ids, list(class_names))
    if n_weights is not None:
        if num_classes is not None and int(num_classes) != n_weights:
            raise ValueError(f"num_classes={num_classes} but the weights {path} have {n_weights} classes")
        if classes is not None and len(classes) != n_weights:
            raise ValueError(f"{len(classes)} class names given but the weights {path} have {n_weights} classes")
        return classes or ClassMap.default(n_weights)
    if classes is None and num_classes is not None:
        return ClassMap.default(int(num_classes))
    return classes


def create_model(name: str, weights: str | os.PathLike | None = None, device: str | None = None, *,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 category_ids: list[int] | None = None, input_size: int | None = None,
                 url_timeout: float = 15.0, **overrides) -> MaskRTDETRModel:
    """Build ``Mask-RT-DETR-{S,M,L,X,H}``.

    ``weights``: see the module docstring (``None``: random init, classes from the training
    dataset). ``num_classes``/``class_names``/``category_ids``: the classes of a model without
    stored class metadata (default for a randomly initialised model: 80, COCO's). ``input_size``:
    square side the images are resized to (default 640, or the trained model's). ``overrides``: model
    config keys for small configurations (``num_queries``, ``num_decoder_layers``,
    ``num_denoising``, ``freeze_norm``, ``num_sample_points`` …, see ``model.COMMON``/``VARIANTS``);
    they are stored in the checkpoints this model writes, so a trained small model reloads as it was.
    """
    if name not in MODEL_NAMES:
        from ..registry import _NAME_TO_FAMILY, check_name

        if name not in _NAME_TO_FAMILY:
            check_name(name)  # raises UnknownModelError listing the valid names
        raise ValueError(f"{name} is not a Mask-RT-DETR model (valid: {', '.join(MODEL_NAMES)})")
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
        if pre is not None:  # the official COCO weights: COCO's classes by name
            if info["num_classes"] != len(COCO_NAMES):
                raise WeightsError(f"{path}: the COCO weights of {name} should have {len(COCO_NAMES)} classes, "
                                   f"this file has {info['num_classes']}")
            info["meta"] = {**(info["meta"] or {}), "pretrained": pre.classes, "source": pre.url,
                            "category_ids": list(COCO_CATEGORY_IDS), "class_names": list(COCO_NAMES)}
    classes = _classes(info["meta"], class_names, category_ids, num_classes, info["num_classes"], path)
    merged = {**info["overrides"], **overrides}
    if info["state_dict"] is not None and overrides:
        _check_overrides_fit(variant, info["num_classes"], merged, overrides, info["state_dict"], path)
    size = int(input_size or (info["meta"] or {}).get("input_size") or 640)
    if size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {size}")
    return MaskRTDETRModel(name, variant=variant, weights=str(path) if path else None, device=dev, classes=classes,
                           overrides=merged, input_size=size, state_dict=info["state_dict"], meta=info["meta"])


class MaskRTDETRModel(BaseModel):
    family = "mask_rtdetr"
    unit = UNIT
    default_train_args = TRAIN_DEFAULTS
    train_options = TRAIN_OPTIONS

    def __init__(self, name: str, *, variant: str, weights: str | None, device: str, classes: ClassMap | None,
                 overrides: dict, input_size: int, state_dict: dict | None = None, meta: dict | None = None):
        super().__init__(name, weights=weights, device=device, classes=classes, input_size=input_size, meta=meta)
        self.variant = variant
        self.overrides = dict(overrides)
        self._state_dict = state_dict

    trainer = "workbench.models.mask_rtdetr.solver:MaskRTDETRTrainer"

    def repr_fields(self) -> dict:
        return {"overrides": self.overrides}

    @classmethod
    def from_net(cls, name: str, net: torch.nn.Module, classes: ClassMap, input_size: int) -> MaskRTDETRModel:
        """A model object over a network being trained (for evaluation during training)."""
        m = cls(name, variant=net.config.get("variant", "S"), weights=None, device=str(next(net.parameters()).device),
                classes=classes, overrides={}, input_size=input_size)
        m._net = net
        return m

    # ------------------------------------------------------------------ network
    def build(self, num_classes: int | None = None) -> torch.nn.Module:
        if self._net is not None:
            return self._net
        from .model import build_mask_rtdetr

        if self.classes is None:
            self.classes = ClassMap.default(int(num_classes or 80))
        net = build_mask_rtdetr(self.variant, len(self.classes), **self.overrides)
        if self._state_dict is not None:
            net.load_state_dict(self._state_dict, strict=True)
            self._state_dict = None
        self._net = net.to(self.device).eval()
        return self._net

    def meta_dict(self) -> dict:
        return {"model_name": self.name, "family": self.family, "variant": self.variant,
                "input_size": self.input_size, "overrides": dict(self.overrides), **self.classes.to_meta()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights with their metadata (variant, overrides, input size, classes)."""
        from .engine import save_checkpoint

        return save_checkpoint(path, self.net, extra={"workbench": self.meta_dict()})

    def export(self, path: str | os.PathLike, image_size: int | None = None, num_top_queries: int = 100,
               opset: int = 17) -> Path:
        """ONNX graph: images [1, 3, S, S] in [0, 1] -> scores, labels (0-based), boxes, mask logits."""
        from .export import export_onnx

        net = copy.deepcopy(self.net).cpu().eval()
        return export_onnx(net, path, image_size=int(image_size or self.input_size),
                           num_top_queries=num_top_queries, opset=opset)

    export_onnx = export

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, images: Sequence[np.ndarray], paths: Sequence[str | None], threshold: float = 0.5,
              mask_threshold: float = 0.5, keep_image: bool = True, num_top_queries: int = 100) -> list[Result]:
        from .data import to_model_input
        from .postprocess import UpsampledSoftMasks, decode

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
        for im, path, d in zip(images, paths, decode(out, [im.shape[:2] for im in images], threshold,
                                                      num_top_queries, dense=False)):
            lab = d["labels"].cpu().numpy()
            results.append(Result(
                input_path=path, image_size=im.shape[:2], boxes=d["boxes"].cpu().numpy(),
                scores=d["scores"].cpu().numpy(), class_ids=cids[lab] if len(lab) else np.zeros(0, np.int64),
                class_names=[self.classes.names[j] for j in lab],
                mask_probs=UpsampledSoftMasks(im.shape[:2], d["mask_logits"]),  # resized per instance when needed
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
            meta = {"unnamed_classes": self.classes.to_meta()}  # classes not known by name: fine-tune freely
        return TrainJob(model_name=self.name, family=self.family, dataset_dir=dataset_dir, output=output,
                        device=device, args=args, model_config={"variant": self.variant,
                                                                "overrides": dict(self.overrides)},
                        init_weights=self.weights, init_state=init, init_meta=meta)
