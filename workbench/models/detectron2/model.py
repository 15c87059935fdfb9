"""The Detectron2 family's model object: ``create_model(name, ...)`` -> ``Detectron2Model``.

``Detectron2Model`` has ``.train(...)``, ``.evaluate(...)`` and ``.predict(...)``. The network is
built when first needed, because the number of classes comes from the weights (their metadata)
or, for a model trained from scratch, from the training dataset.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ...data.dataset import Dataset
from ...engine.inputs import expand_inputs as _expand_inputs, is_folder_input as _is_folder_input, \
    load_input as _load
from ...engine.result import Result
from ._compat import import_detectron2
from .data import ClassMap
from .names import DETECTRON2_MODELS
from .weights import WeightsError, read_checkpoint, resolve_weights

logger = logging.getLogger("workbench.detectron2")

import_detectron2()



def resolve_device(device: str | None) -> str:
    """``None`` -> the GPU if there is one; ``gpu``/``gpu:0``/``cuda:0``/``cpu``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = str(device).strip().lower()
    if d.startswith("gpu"):
        d = "cuda" + d[3:]
    if d.startswith("cuda"):
        if "," in d:  # "gpu:0,1": several processes, one per GPU
            d = "cuda"
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for a GPU but torch sees none; use device='cpu'")
    elif d != "cpu":
        raise ValueError(f"unknown device {device!r} (use cpu, gpu, gpu:N)")
    return d


def create_model(name: str, weights: str | os.PathLike | None = None, device: str | None = None, *,
                 norm: str | None = None, depth: int | None = None, input_size: int | None = None,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 d2_overrides: dict[str, Any] | None = None, url_timeout: float = 15.0) -> "Detectron2Model":
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
        weights_path = resolve_weights(weights, timeout=url_timeout)
        meta = read_checkpoint(weights_path).get("workbench")
        if meta and meta.get("model_name") not in (None, name):
            raise WeightsError(f"{weights_path} holds weights of {meta['model_name']}, not {name}")
    m = meta or {}
    classes = None
    if m.get("class_names"):
        classes = ClassMap.from_meta(m)
    elif class_names is not None:
        classes = ClassMap(list(range(1, len(class_names) + 1)), list(class_names))
    elif num_classes is not None:
        classes = ClassMap(list(range(1, num_classes + 1)), [f"class_{i}" for i in range(1, num_classes + 1)])
    return Detectron2Model(
        name, weights=str(weights_path) if weights_path else None, device=resolve_device(device),
        norm=norm or m.get("norm", "GN"), depth=depth or m.get("depth"),
        input_size=int(input_size or m.get("input_size") or 640), classes=classes, meta=meta,
        d2_overrides=dict(d2_overrides or {}))


class Detectron2Model:
    family = "detectron2"

    def __init__(self, name: str, *, weights: str | None, device: str, norm: str, depth: int | None,
                 input_size: int, classes: ClassMap | None, meta: dict | None, d2_overrides: dict):
        self.name = name
        self.weights = weights
        self.device = device
        self.norm = norm
        self.depth = depth
        self.input_size = input_size
        self.classes = classes
        self.meta = meta
        self.d2_overrides = d2_overrides
        self._net = None
        self._cfg = None

    def __repr__(self) -> str:
        cls = self.classes.names if self.classes else None
        return (f"Detectron2Model({self.name!r}, weights={self.weights!r}, device={self.device!r}, norm={self.norm}, "
                f"depth={self.depth}, input_size={self.input_size}, classes={cls})")

    # ------------------------------------------------------------------ network
    @property
    def cfg(self):
        self.build()
        return self._cfg

    @property
    def net(self):
        """The ``torch.nn.Module`` (Detectron2 ``GeneralizedRCNN``)."""
        self.build()
        return self._net

    def build(self, num_classes: int | None = None):
        """Build the network now (``num_classes`` when the model has no classes yet)."""
        if self._net is not None:
            return self._net
        if self.classes is None:
            if num_classes is None:
                raise ValueError(f"{self.name} has no trained weights and no classes: pass weights=..., "
                                 "num_classes=... or class_names=... to create_model, or train it first")
            self.classes = ClassMap(list(range(1, num_classes + 1)),
                                    [f"class_{i}" for i in range(1, num_classes + 1)])
        from detectron2.modeling import build_model

        from .config import build_cfg
        from .trainer import _Checkpointer

        cfg = build_cfg(self.name, num_classes=len(self.classes), norm=self.norm, depth=self.depth,
                        input_size=self.input_size, device=self.device, d2_overrides=self.d2_overrides)
        cfg.WORKBENCH.CLASS_NAMES = list(self.classes.names)
        cfg.WORKBENCH.CATEGORY_IDS = list(self.classes.category_ids)
        net = build_model(cfg)
        net.eval()
        if self.weights:
            _Checkpointer(net, "", self._meta()).load(self.weights, checkpointables=[])
        self._cfg, self._net = cfg, net
        return net

    def _meta(self) -> dict:
        return {"model_name": self.name, "norm": self.norm, "depth": self.depth, "input_size": self.input_size,
                **(self.classes.to_meta() if self.classes else {})}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights with their metadata (classes, norm, depth, input size) to ``path``."""
        from .trainer import save_weights

        meta = self._meta()
        meta["depth"] = int(self.cfg.MODEL.RESNETS.DEPTH)
        return save_weights(self.net, Path(path), meta)

    # ------------------------------------------------------------------ predict
    def predict(self, inputs: Any, batch_size: int = 1, threshold: float = 0.5, mask_threshold: float = 0.5,
                progress: bool | None = None) -> Iterator[Result]:
        """Yield one ``Result`` per image. ``inputs``: an image path, a folder, a list of those,
        an RGB ``numpy`` array (H, W, 3 uint8), a PIL image or a list mixing them. Detections
        under ``threshold`` are dropped; masks keep their soft probabilities (``Result.filter``)."""
        from .predictor import NetPredictor

        items = list(_expand_inputs(inputs))
        pred = NetPredictor(self.net, self.cfg, self.classes.category_ids, self.classes.names, self.name)
        show = progress if progress is not None else (len(items) > 1 and _is_folder_input(inputs))
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"predict {self.name}", unit="img", disable=not show)
        try:
            for i in range(0, len(items), max(1, int(batch_size))):
                chunk = items[i:i + batch_size]
                images, paths = zip(*[_load(x) for x in chunk])
                for r in pred(list(images), list(paths), threshold=threshold, mask_threshold=mask_threshold):
                    bar.update(1)
                    yield r
        finally:
            bar.close()

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, dataset_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                 split: str = "val", batch_size: int = 1) -> dict:
        """COCO bbox and segm AP (AP, AP50, AP75, APs/m/l, AR…, per class) on a split of a
        PaddleX-layout dataset; written to ``<output>/evaluate_result.json`` when ``output`` is given."""
        from ...evaluation import evaluate
        from .trainer import predict_split

        t0 = time.perf_counter()
        ds = Dataset.load_paddlex(dataset_dir, split)
        if self.classes is None:
            raise ValueError(f"{self.name} has no trained weights; evaluate needs weights=... in create_model")
        ClassMap.from_dataset(ds).check_same(self.classes, f"dataset {ds.source}", f"model weights {self.weights}")
        results = predict_split(self.net, self.cfg, ds, self.classes, self.name, batch_size=batch_size)
        dets = [d for im, r in zip(ds.images, results) for d in r.to_coco(im.id)]
        info = {"model_name": self.name, "weights": self.weights, "dataset_dir": str(dataset_dir), "split": split}
        report = evaluate(dets, ds, output_dir=output, info=info)  # evaluate_result.json + report.md/html
        return {**report.to_dict(), "wall_time_s": round(time.perf_counter() - t0, 2)}

    # ------------------------------------------------------------------ train
    def train(self, dataset_dir: str | os.PathLike, epochs_iters: int = 1000, batch_size: int = 2,
              output: str | os.PathLike = "output", learning_rate: float = 0.01, input_size: int | None = None,
              resume: bool = False, eval_interval: int = 500, amp: bool = False, device: str | None = None,
              num_processes: int = 1, depth: int | None = None, norm: str | None = None,
              warmup_steps: int = 100, log_interval: int = 10, save_interval: int = 500,
              early_stop_patience: int | None = None, num_workers: int = 0, seed: int = 0,
              resume_path: str | None = None, ignore_class_mismatch: bool = False, progress: bool = True,
              d2_overrides: dict | None = None) -> dict:
        """Train on the PaddleX COCO layout in ``dataset_dir`` (train split; val split for evaluation).

        ``epochs_iters`` counts *iterations* (of ``batch_size`` images per process) for this family.
        Writes into ``output``: ``train_result.json``, ``train.log``, ``config.yaml``,
        ``metrics.jsonl`` (train losses, and per evaluation the val loss and AP),
        ``model_XXXXXXX.pth`` periodic checkpoints, ``model_final.pth``, ``best_model/`` (best val
        mask AP). ``resume=True`` continues the run in ``output`` (or ``resume_path``) to the same
        schedule. ``num_processes`` > 1: data-parallel training (GPUs with NCCL, CPU with gloo).
        The initial weights are this model's ``weights`` (none: from scratch). Returns the contents
        of ``train_result.json``; afterwards this object holds the best weights.
        """
        from .trainer import TrainSpec, launch_training

        if int(save_interval) < 1 or int(epochs_iters) < 1:
            raise ValueError("epochs_iters and save_interval must be at least 1")
        dev = resolve_device(device) if device is not None else self.device
        if amp and not dev.startswith("cuda"):
            raise ValueError("amp=True needs a GPU device (automatic mixed precision is a CUDA feature here)")
        spec = TrainSpec(
            model_name=self.name, dataset_dir=str(dataset_dir), output=str(output), iters=int(epochs_iters),
            batch_size=int(batch_size), learning_rate=float(learning_rate),
            input_size=int(input_size or self.input_size), norm=norm or self.norm, depth=depth or self.depth,
            device=dev, amp=bool(amp), num_processes=int(num_processes), resume=bool(resume),
            resume_path=resume_path, init_weights=self.weights, init_meta=self.meta,
            ignore_class_mismatch=ignore_class_mismatch, eval_interval=int(eval_interval),
            save_interval=int(save_interval), log_interval=int(log_interval), warmup_steps=int(warmup_steps),
            early_stop_patience=early_stop_patience, num_workers=int(num_workers), seed=int(seed),
            progress=progress, d2_overrides={**self.d2_overrides, **(d2_overrides or {})})
        res = launch_training(spec)
        best = res["paths"].get("best_model") or res["paths"].get("model_final")
        if best:
            trained = create_model(self.name, weights=best, device=self.device, d2_overrides=self.d2_overrides)
            self.__dict__.update(trained.__dict__)
        return res
