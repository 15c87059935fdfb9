"""The Detectron2 family's model object: ``create_model(name, ...)`` -> ``Detectron2Model``.

The network is built when first needed, because the number of classes comes from the weights
(their metadata, or their tensors) or, for a model trained from scratch, from the training
dataset. Everything but building, inference (``predictor.NetPredictor``) and saving comes from
``engine.model.BaseModel``.

``weights="coco"`` (or the zoo file itself, by URL or under its own file name) is Detectron2's
model-zoo checkpoint of the name (``names.COCO_WEIGHTS``): the model is then built as the zoo
built it (``norm="FrozenBN"``, the zoo config's depth and ``STRIDE_IN_1X1``, 80 classes) with
COCO's class names and category ids, and its default input size is the zoo's test size (800).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...engine.classes import COCO_CATEGORY_IDS, COCO_NAMES, ClassMap
from ...engine.errors import WeightsError
from ...engine.launcher import resolve_device
from ...engine.model import BaseModel
from ...engine.train_args import TrainArgs, TrainJob
from ...engine.weights import checkpoint_meta, read_weights_file, save_weights_file
from ._compat import import_detectron2
from .names import COCO_INPUT_SIZE, DETECTRON2_MODELS, TRAIN_DEFAULTS, TRAIN_OPTIONS, UNIT

logger = logging.getLogger("workbench.detectron2")

import_detectron2()  # Detectron2 with its compatibility patches, before any of its modules is imported

_RES4 = re.compile(r"^backbone\.(?:bottom_up\.)?res4\.(\d+)\.")
_DEPTH_BY_RES4 = {2: 18, 6: 50, 23: 101, 36: 152}  # blocks in res4 (6 with BasicBlocks: 34)


def infer_architecture(state_dict: dict) -> dict:
    """What a checkpoint without workbench metadata tells by its tensors: ``num_classes`` (from the
    box classifier), ``norm`` (running statistics: FrozenBN or BN; none: GN) and ``depth``."""
    out: dict = {}
    for k in ("roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.0.cls_score.bias"):
        if k in state_dict:
            out["num_classes"] = int(state_dict[k].shape[0]) - 1
            break
    body = [k for k in state_dict if k.startswith(("backbone.bottom_up.", "backbone.res", "backbone.stem."))]
    if any(k.endswith("norm.running_mean") for k in body):
        out["norm"] = "BN" if any(k.endswith("norm.num_batches_tracked") for k in body) else "FrozenBN"
    elif any(".norm." in k for k in body):
        out["norm"] = "GN"
    blocks = {int(m.group(1)) for k in state_dict if (m := _RES4.match(k))}
    if blocks:
        n = max(blocks) + 1
        bottleneck = any(_RES4.match(k) and ".conv3." in k for k in state_dict)
        depth = 34 if (n == 6 and not bottleneck) else _DEPTH_BY_RES4.get(n)
        if depth:
            out["depth"] = depth
    return out


def create_model(name: str, weights: str | os.PathLike | None = None, device: str | None = None, *,
                 norm: str | None = None, depth: int | None = None, input_size: int | None = None,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 d2_overrides: dict[str, Any] | None = None, url_timeout: float = 15.0) -> Detectron2Model:
    """Build a Detectron2-family model by PaddleX name.

    weights: a local ``.pth``/``.pkl`` (or a folder holding ``model.pth``), a URL (fetched with
    ``url_timeout``), or ``"coco"``: Detectron2's model-zoo COCO weights of ``name`` (see the module
    docstring; a ``WeightsError`` for names that have none); checkpoints written by this workbench
    carry the model's classes, norm, depth and input size, which are used unless overridden here;
    for other checkpoints the number of classes (80: COCO's), the norm and the depth are read from
    the tensors. ``norm`` (GN default, FrozenBN with "coco", BN, SyncBN — see ``config.py`` for the
    from-scratch choices), ``depth`` (ResNet depth override), ``input_size`` (short side, default
    640; 800 with "coco"), ``num_classes``/``class_names`` (for a model with no
    trained weights yet), ``d2_overrides`` (Detectron2 config keys, e.g.
    ``{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128}``).
    """
    if name not in DETECTRON2_MODELS:
        from ..registry import check_name

        check_name(name)
        raise ValueError(f"{name} is not a Detectron2-family model")
    meta: dict | None = None  # the checkpoint's workbench metadata (or what "coco" stands for)
    weights_path = None
    m: dict = {}  # what the weights say about the model: classes, norm, depth, input size
    if weights is not None:
        from ..registry import resolve_model_weights

        weights_path, pre = resolve_model_weights(name, weights, url_timeout, suffixes=(".pth", ".pt", ".pkl"))
        if pre is not None:  # the zoo's COCO checkpoint: built as the zoo built it
            meta = {"pretrained": pre.classes, "source": pre.url, "category_ids": list(COCO_CATEGORY_IDS),
                    "class_names": list(COCO_NAMES)}
            m = {**meta, "norm": "FrozenBN", "input_size": COCO_INPUT_SIZE}
        else:
            ck = read_weights_file(weights_path)
            meta = checkpoint_meta(ck)
            if meta and meta.get("model_name") not in (None, name):
                raise WeightsError(f"{weights_path} holds weights of {meta['model_name']}, not {name}")
            m = dict(meta) if meta else infer_architecture(ck["model"])
    classes = None
    if m.get("class_names"):
        classes = ClassMap.from_meta(m)
    elif class_names is not None:
        classes = ClassMap.from_names(list(class_names))
    elif num_classes is not None:
        classes = ClassMap.from_names([f"class_{i}" for i in range(1, int(num_classes) + 1)])
    elif m.get("num_classes"):  # a checkpoint without names: 80 classes are taken to be COCO's
        classes = ClassMap.default(int(m["num_classes"]))
    return Detectron2Model(
        name, weights=str(weights_path) if weights_path else None, device=resolve_device(device),
        norm=norm or m.get("norm", "GN"), depth=depth or m.get("depth"),
        input_size=int(input_size or m.get("input_size") or 640), classes=classes, meta=meta,
        d2_overrides={**(m.get("d2_overrides") or {}), **(d2_overrides or {})})


class Detectron2Model(BaseModel):
    family = "detectron2"
    unit = UNIT
    default_train_args = TRAIN_DEFAULTS
    train_options = TRAIN_OPTIONS

    def __init__(self, name: str, *, weights: str | None, device: str, norm: str, depth: int | None,
                 input_size: int, classes: ClassMap | None, meta: dict | None, d2_overrides: dict):
        super().__init__(name, weights=weights, device=device, classes=classes, input_size=input_size, meta=meta)
        self.norm = norm
        self.depth = depth
        self.d2_overrides = d2_overrides
        self._cfg = None
        self._predictor = None

    trainer = "workbench.models.detectron2.trainer:Detectron2Trainer"

    def repr_fields(self) -> dict:
        return {"norm": self.norm, "depth": self.depth}

    @classmethod
    def from_net(cls, name: str, net, cfg, classes: ClassMap, d2_overrides: dict | None = None) -> Detectron2Model:
        """A model object over a network being trained (for evaluation during training)."""
        m = cls(name, weights=None, device=str(cfg.MODEL.DEVICE), norm=cfg.WORKBENCH.NORM, depth=cfg.WORKBENCH.DEPTH,
                input_size=int(cfg.WORKBENCH.INPUT_SIZE), classes=classes, meta=None,
                d2_overrides=dict(d2_overrides or {}))
        m._net, m._cfg = net, cfg
        return m

    # ------------------------------------------------------------------ network
    @property
    def cfg(self):
        self.build()
        return self._cfg

    def build(self, num_classes: int | None = None):
        """Build the network now (``num_classes`` when the model has no classes yet)."""
        if self._net is not None:
            return self._net
        if self.classes is None:
            if num_classes is None:
                raise WeightsError(f"{self.name} has no trained weights and no classes: pass weights=..., "
                                   "num_classes=... or class_names=... to create_model, or train it first")
            self.classes = ClassMap.from_names([f"class_{i}" for i in range(1, num_classes + 1)])
        from detectron2.modeling import build_model

        from .config import build_cfg
        from .trainer import load_weights

        cfg = build_cfg(self.name, num_classes=len(self.classes), norm=self.norm, depth=self.depth,
                        input_size=self.input_size, device=self.device, d2_overrides=self.d2_overrides)
        cfg.WORKBENCH.CLASS_NAMES = list(self.classes.names)
        cfg.WORKBENCH.CATEGORY_IDS = list(self.classes.category_ids)
        net = build_model(cfg)
        net.eval()
        if self.weights:
            report = load_weights(net, self.weights, cfg, same_classes=True)
            if self.meta and self.meta.get("model_name") and (report.skipped or report.missing):
                bad = list(report.skipped.items())[:3] or [(k, "missing from the checkpoint") for k in report.missing[:3]]
                raise WeightsError(f"{self.weights} does not fit the {self.name} its metadata describes "
                                   f"({len(report.skipped)} tensors of another shape, {len(report.missing)} missing; "
                                   + "; ".join(f"{k}: {why}" for k, why in bad) + ")")
        self._cfg, self._net = cfg, net
        return net

    def _meta(self) -> dict:
        return {"model_name": self.name, "family": self.family, "norm": self.norm, "depth": self.depth,
                "input_size": self.input_size, "d2_overrides": dict(self.d2_overrides),
                **(self.classes.to_meta() if self.classes else {})}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights with their metadata (classes, norm, depth, input size) to ``path``."""
        meta = self._meta()
        meta["depth"] = int(self.cfg.MODEL.RESNETS.DEPTH)
        module = self.net.module if hasattr(self.net, "module") else self.net
        return save_weights_file(path, {"model": module.state_dict(), "workbench": meta})

    def reload_kwargs(self) -> dict:
        return {"d2_overrides": self.d2_overrides}

    # ------------------------------------------------------------------ inference
    def infer(self, images: Sequence[np.ndarray], paths: Sequence[str | None], threshold: float = 0.5,
              mask_threshold: float = 0.5, keep_image: bool = True) -> list:
        from .predictor import NetPredictor

        net = self.build()
        if self._predictor is None or self._predictor.net is not net:
            self._predictor = NetPredictor(net, self._cfg, self.classes.category_ids, self.classes.names, self.name)
        return self._predictor(list(images), list(paths), threshold=threshold, mask_threshold=mask_threshold,
                               keep_image=keep_image)

    # ------------------------------------------------------------------ export
    def export(self, path: str | os.PathLike, sample_size: Sequence[int] | None = None, opset: int = 17) -> Path:
        """ONNX graph (``export.py``): image [3, H, W] RGB 0..255 resized to the test size (H, W
        dynamic), optional score_threshold -> boxes, scores, classes (0-based), 28x28 mask probs.
        ``sample_size``: the (H, W) traced (default: the test size, 4:3). The classes, category ids
        and test size travel in the graph's metadata (``export.predict_onnx`` reads them)."""
        import copy

        from .export import export_onnx

        net = self.build()
        net = copy.deepcopy(net.module if hasattr(net, "module") else net).cpu().eval()
        meta = {"model_name": self.name, "family": self.family,
                "class_names": list(self.classes.names), "category_ids": [int(c) for c in self.classes.category_ids]}
        return export_onnx(net, self.cfg, path, sample_size=sample_size, opset=opset, metadata=meta)

    # ------------------------------------------------------------------ training
    def train_job(self, dataset_dir: str, output: str, device: str, args: TrainArgs) -> TrainJob:
        o = args.options
        o["norm"] = o.get("norm") or self.norm
        o["depth"] = o.get("depth") or self.depth
        o["d2_overrides"] = {**self.d2_overrides, **(o.get("d2_overrides") or {})}
        meta = self.meta
        if self.weights and not (meta and meta.get("class_names")) and self.classes is not None:
            meta = {"unnamed_classes": self.classes.to_meta()}  # classes not known by name: fine-tune freely
        return TrainJob(model_name=self.name, family=self.family, dataset_dir=dataset_dir, output=output,
                        device=device, args=args,
                        model_config={"norm": o["norm"], "depth": o["depth"], "d2_overrides": o["d2_overrides"]},
                        init_weights=self.weights, init_state=None, init_meta=meta)
