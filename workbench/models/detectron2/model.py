"""The Detectron2 family's model object: ``create_model(name, ...)`` -> ``Detectron2Model``.

The network is built when first needed, because the number of classes comes from the weights
(their metadata) or, for a model trained from scratch, from the training dataset. Everything but
building, inference (``predictor.NetPredictor``) and saving comes from ``engine.model.BaseModel``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...engine.classes import ClassMap
from ...engine.errors import WeightsError
from ...engine.launcher import resolve_device
from ...engine.model import BaseModel
from ...engine.train_args import TrainArgs, TrainJob
from ...engine.weights import checkpoint_meta, read_weights_file, resolve_weights, save_weights_file
from ._compat import import_detectron2
from .names import DETECTRON2_MODELS, TRAIN_DEFAULTS, TRAIN_OPTIONS, UNIT

logger = logging.getLogger("workbench.detectron2")

import_detectron2()  # Detectron2 with its compatibility patches, before any of its modules is imported


def create_model(name: str, weights: str | os.PathLike | None = None, device: str | None = None, *,
                 norm: str | None = None, depth: int | None = None, input_size: int | None = None,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 d2_overrides: dict[str, Any] | None = None, url_timeout: float = 15.0) -> Detectron2Model:
    """Build a Detectron2-family model by PaddleX name.

    weights: a local ``.pth``/``.pkl`` (or a folder holding ``model.pth``) or a URL (fetched with
    ``url_timeout``); checkpoints written by this workbench carry the model's classes, norm, depth
    and input size, which are used unless overridden here. ``norm`` (GN default, BN, SyncBN,
    FrozenBN — see ``config.py`` for the from-scratch choices), ``depth`` (ResNet depth override),
    ``input_size`` (short side, default 640), ``num_classes``/``class_names`` (for a model with no
    trained weights yet), ``d2_overrides`` (Detectron2 config keys, e.g.
    ``{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128}``).
    """
    if name not in DETECTRON2_MODELS:
        from ..registry import check_name

        check_name(name)
        raise ValueError(f"{name} is not a Detectron2-family model")
    meta: dict | None = None
    weights_path = None
    if weights is not None:
        weights_path = resolve_weights(weights, timeout=url_timeout, suffixes=(".pth", ".pt", ".pkl"))
        meta = checkpoint_meta(read_weights_file(weights_path))
        if meta and meta.get("model_name") not in (None, name):
            raise WeightsError(f"{weights_path} holds weights of {meta['model_name']}, not {name}")
    m = meta or {}
    classes = None
    if m.get("class_names"):
        classes = ClassMap.from_meta(m)
    elif class_names is not None:
        classes = ClassMap.from_names(list(class_names))
    elif num_classes is not None:
        classes = ClassMap.from_names([f"class_{i}" for i in range(1, int(num_classes) + 1)])
    return Detectron2Model(
        name, weights=str(weights_path) if weights_path else None, device=resolve_device(device),
        norm=norm or m.get("norm", "GN"), depth=depth or m.get("depth"),
        input_size=int(input_size or m.get("input_size") or 640), classes=classes, meta=meta,
        d2_overrides=dict(d2_overrides or {}))


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
    def from_net(cls, name: str, net, cfg, classes: ClassMap) -> Detectron2Model:
        """A model object over a network being trained (for evaluation during training)."""
        m = cls(name, weights=None, device=str(cfg.MODEL.DEVICE), norm=cfg.WORKBENCH.NORM, depth=cfg.WORKBENCH.DEPTH,
                input_size=int(cfg.WORKBENCH.INPUT_SIZE), classes=classes, meta=None, d2_overrides={})
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
        from .trainer import Checkpointer

        cfg = build_cfg(self.name, num_classes=len(self.classes), norm=self.norm, depth=self.depth,
                        input_size=self.input_size, device=self.device, d2_overrides=self.d2_overrides)
        cfg.WORKBENCH.CLASS_NAMES = list(self.classes.names)
        cfg.WORKBENCH.CATEGORY_IDS = list(self.classes.category_ids)
        net = build_model(cfg)
        net.eval()
        if self.weights:
            Checkpointer(net, "", self._meta()).load(self.weights, checkpointables=[])
        self._cfg, self._net = cfg, net
        return net

    def _meta(self) -> dict:
        return {"model_name": self.name, "family": self.family, "norm": self.norm, "depth": self.depth,
                "input_size": self.input_size, **(self.classes.to_meta() if self.classes else {})}

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

    # ------------------------------------------------------------------ training
    def train_job(self, dataset_dir: str, output: str, device: str, args: TrainArgs) -> TrainJob:
        o = args.options
        o["norm"] = o.get("norm") or self.norm
        o["depth"] = o.get("depth") or self.depth
        o["d2_overrides"] = {**self.d2_overrides, **(o.get("d2_overrides") or {})}
        return TrainJob(model_name=self.name, family=self.family, dataset_dir=dataset_dir, output=output,
                        device=device, args=args, model_config={"norm": o["norm"], "depth": o["depth"]},
                        init_weights=self.weights, init_state=None, init_meta=self.meta)
