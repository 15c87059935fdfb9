"""Training a Detectron2 model: Detectron2's own loop and hooks behind ``engine.BaseTrainer``.

Detectron2's ``SimpleTrainer``/``AMPTrainer`` run the steps with its model builder, optimizer,
LR scheduler, train data loader (from our ``DatasetCatalog`` registration; its ``DatasetMapper``
reads images with the project's reader, ``ImageMapper``), ``DetectionCheckpointer``
and the ``IterationTimer``/``LRScheduler`` hooks. ``_EngineHook`` hands every finished iteration to
the shared trainer (metrics record, progress bar, evaluation, best model, early stopping,
checkpoints) and carries its state in every checkpoint, so a resumed run keeps its best. What is
Detectron2's own here: the loss that is NaN/inf on any process stops the run before its optimizer
step, the validation loss (training losses on the val split, no augmentation, no gradients, BN
statistics frozen), and the process group set-up Detectron2's ``comm`` expects.

Weights are read the way Detectron2 reads them (``read_state_dict``: its model-zoo and Caffe2
``.pkl`` formats, Caffe2 names converted) and loaded by the shared ``engine.weights.load_matching``
(``load_weights``), which re-initialises the class-specific layers (``class_specific``) when
fine-tuning to other classes and reports every tensor it did not load.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

from ...engine import rng
from ...engine.trainer import BaseTrainer
from ...engine.weights import LoadReport, load_matching
from ._compat import import_detectron2

import_detectron2()

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetMapper  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks  # noqa: E402
from detectron2.engine.train_loop import HookBase  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

logger = logging.getLogger("workbench.detectron2")

# Entries of older Detectron2 checkpoints (the model zoo's among them) that are no parameters of
# today's Detectron2: non-persistent buffers, set from the config.
IGNORED = {
    "pixel_mean": "input normalisation, a non-persistent buffer set from the config (MODEL.PIXEL_MEAN)",
    "pixel_std": "input normalisation, a non-persistent buffer set from the config (MODEL.PIXEL_STD)",
    "anchor_generator.cell_anchors": "anchors, a non-persistent buffer computed from the config",
}


def class_specific(cfg) -> tuple[str, ...]:
    """Name prefixes of the tensors whose rows are the classes: the box classifier(s), the box
    regressor(s) unless class-agnostic, the mask predictor unless class-agnostic."""
    r = cfg.MODEL.ROI_BOX_HEAD
    heads = ["roi_heads.box_predictor."]
    if cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads":
        heads = [f"roi_heads.box_predictor.{i}." for i in range(len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS))]
    out = [h + "cls_score." for h in heads]
    if not r.CLS_AGNOSTIC_BBOX_REG:
        out += [h + "bbox_pred." for h in heads]
    if cfg.MODEL.MASK_ON and not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
        out.append("roi_heads.mask_head.predictor.")
    return tuple(out)


def read_state_dict(net, path: str | Path) -> dict:
    """The state dict in ``path`` as Detectron2 reads it: ``.pth``, its model-zoo ``.pkl``, or a
    Caffe2/Detectron1 ``.pkl`` (names converted by Detectron2's matching heuristics)."""
    from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

    ck = DetectionCheckpointer(net, "")
    data = ck._load_file(str(path))
    sd = data["model"]
    if data.get("matching_heuristics"):
        ck._convert_ndarray_to_tensor(sd)
        sd = align_and_update_state_dicts(net.state_dict(), sd, c2_conversion=data.get("__author__") == "Caffe2")
    return dict(sd)


def load_weights(net, path: str | Path, cfg, *, same_classes: bool, log: logging.Logger | None = None) -> LoadReport:
    """Load ``path`` into ``net`` (``engine.weights.load_matching``): everything that matches, the
    class-specific layers re-initialised unless ``same_classes``; the report is logged."""
    return load_matching(net, read_state_dict(net, path), class_specific(cfg), same_classes=same_classes,
                         ignore=IGNORED, source=str(path), log=log or logger)


def read_image(file_name: str, image_format: str | None):
    """An image file for a Detectron2 model: the project's one reader (``data.dataset.read_image_rgb``:
    EXIF-oriented RGB uint8, 16-bit/float images scaled by their own range) in ``cfg.INPUT.FORMAT``
    (``BGR`` by Detectron2's default; ``RGB``; any other PIL mode, or ``YUV-BT.601``, converted the way
    Detectron2's own ``read_image`` converts)."""
    import numpy as np
    from detectron2.data.detection_utils import convert_PIL_to_numpy
    from PIL import Image

    from ...data.dataset import read_image_rgb

    rgb = read_image_rgb(file_name)
    if image_format in (None, "RGB"):
        return rgb
    if image_format == "BGR":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    return convert_PIL_to_numpy(Image.fromarray(rgb), image_format)


class ImageMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` (augmentations, annotations, instance masks) reading each
    image with ``read_image`` instead of Detectron2's reader (which clips 16-bit images to white)."""

    def __call__(self, dataset_dict: dict) -> dict:
        import numpy as np
        from detectron2.data import detection_utils as utils
        from detectron2.data import transforms as T

        if "sem_seg_file_name" in dataset_dict:  # pragma: no cover - not an instance-segmentation input
            raise ValueError(f"{dataset_dict['file_name']}: semantic segmentation inputs are not supported")
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict


class _LoopMixin:
    """``TrainerBase.train`` with a stop request (early stopping) and NaN checks on every process."""

    stop_requested = False
    last_losses: dict = {}

    def train(self, start_iter: int, max_iter: int):
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self.stop_requested:
                        break
                self.iter += 1
            finally:
                self.after_train()

    def _write_metrics(self, loss_dict, data_time: float, prefix: str = "") -> None:
        values = {k: float(v.detach().cpu().item()) for k, v in loss_dict.items()}
        finite = all(math.isfinite(v) for v in values.values())
        if comm.get_world_size() > 1:
            finite = all(comm.all_gather(finite))
        if not finite:
            raise FloatingPointError(f"loss became NaN or infinite at iteration {self.iter + 1} "
                                     f"(losses on this process: {values})")
        self.last_losses = {"total_loss": sum(values.values()), **values}
        super()._write_metrics(loss_dict, data_time, prefix)


class _Loop(_LoopMixin, SimpleTrainer):
    pass


class _AmpLoop(_LoopMixin, AMPTrainer):
    pass


class Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that stores our metadata (model name, classes…) in every file."""

    def __init__(self, model, save_dir: str, meta: dict, **kw):
        super().__init__(model, save_dir, **kw)
        self.meta = meta

    def save(self, name: str, **kwargs: Any) -> None:
        kwargs.setdefault("workbench", self.meta)
        super().save(name, **kwargs)


class _EngineHook(HookBase):
    """Detectron2 hook -> ``BaseTrainer.log_step``/``end_of_unit``; its state is the run's state."""

    def __init__(self, engine: Detectron2Trainer):
        self.engine = engine

    lr = 0.0

    def before_step(self):
        self.lr = float(self.trainer.optimizer.param_groups[0]["lr"])  # the step's (the scheduler steps after it)

    def after_step(self):
        e = self.engine
        e.log_step(self.trainer.last_losses, lr=self.lr)
        if e.end_of_unit(self.trainer.iter + 1):
            self.trainer.stop_requested = True

    def state_dict(self):
        return {"train_state": self.engine.state.to_json()}

    def load_state_dict(self, state):
        self.engine.state.load_json(state["train_state"])


def compute_val_loss(net, cfg, dicts: list[dict]) -> dict[str, float]:
    """Mean training losses on ``dicts`` (no augmentation, no gradients, BatchNorm statistics frozen)."""
    import detectron2.data.transforms as T

    mapper = ImageMapper(is_train=True, augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST,
                                                                                cfg.INPUT.MAX_SIZE_TEST)],
                           image_format=cfg.INPUT.FORMAT, use_instance_mask=True,
                           instance_mask_format=cfg.INPUT.MASK_FORMAT, recompute_boxes=False)
    was_training = net.training
    net.train()
    for m in net.modules():  # keep running statistics untouched
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    sums: dict[str, float] = {}
    n = 0
    try:
        with torch.no_grad():
            for d in dicts:
                if not d.get("annotations"):
                    continue
                losses = net([mapper(copy.deepcopy(d))])
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
    finally:
        net.train(was_training)
    if not n:
        return {}
    out = {f"val_{k}": v / n for k, v in sums.items()}
    out["val_loss"] = sum(v for v in sums.values()) / n
    return out


def _build_optimizer(cfg, net, name: str):
    """Detectron2's SGD (``build_optimizer``), or AdamW over the same parameter groups (no weight
    decay on norm layers) with the same gradient clipping; AdamW converges in far fewer steps when
    training from scratch on a few images (the demo recipe)."""
    import torch
    from detectron2.solver import build_optimizer
    from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

    if name.upper() == "SGD":
        return build_optimizer(cfg, net)
    if name.lower() != "adamw":
        raise ValueError(f"optimizer must be 'SGD' or 'AdamW', got {name!r}")
    params = get_default_optimizer_params(net, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=0.0)
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )


class Detectron2Trainer(BaseTrainer):
    unit = "iterations"
    loggers = ("detectron2", "fvcore", "workbench")

    @staticmethod
    def worker_init(rank: int, world: int) -> None:
        """Detectron2's ``comm`` wants its local process group: the ranks on this machine
        (``LOCAL_WORLD_SIZE`` of them under torchrun; every rank when the workbench spawned them)."""
        import os

        import torch.distributed as dist

        import_detectron2()
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        for first in range(0, world, per_machine):  # every rank creates every group (a collective call)
            ranks = list(range(first, min(first + per_machine, world)))
            group = dist.new_group(ranks)
            if rank in ranks:
                comm._LOCAL_PROCESS_GROUP = group
        comm.synchronize()

    @property
    def max_iterations(self) -> int:
        return int(self.args.epochs_iters)

    def build(self) -> None:
        from detectron2.modeling import build_model
        from detectron2.solver import build_lr_scheduler
        from detectron2.utils.env import seed_all_rng

        from .config import build_cfg
        from .data import build_train_loader, mask_format_for, register, to_detectron2_dicts

        a, o = self.args, self.args.options
        cfg = build_cfg(self.job.model_name, num_classes=len(self.classes), norm=o["norm"], depth=o["depth"],
                        input_size=a.input_size, device=self.job.device, d2_overrides=o.get("d2_overrides") or {})
        n = int(a.epochs_iters)
        cfg.SOLVER.IMS_PER_BATCH = int(a.batch_size) * self.world
        cfg.SOLVER.BASE_LR = float(a.learning_rate)
        cfg.SOLVER.MAX_ITER = n
        cfg.SOLVER.STEPS = tuple(sorted({s for s in (int(0.75 * n), int(0.9 * n)) if 0 < s < n}))
        cfg.SOLVER.WARMUP_ITERS = int(min(max(0, a.warmup_steps), max(0, n - 1)))
        cfg.SOLVER.CHECKPOINT_PERIOD = int(a.save_interval)
        cfg.SOLVER.AMP.ENABLED = bool(a.amp)
        cfg.TEST.EVAL_PERIOD = int(a.eval_interval)
        cfg.DATALOADER.NUM_WORKERS = int(a.num_workers)
        cfg.SEED = int(a.seed)
        cfg.OUTPUT_DIR = str(self.run.root)
        cfg.DATASETS.TRAIN = (register(self.train_ds, self.classes),)
        cfg.INPUT.MASK_FORMAT = mask_format_for(self.train_ds)
        cfg.WORKBENCH.CLASS_NAMES = list(self.classes.names)
        cfg.WORKBENCH.CATEGORY_IDS = list(self.classes.category_ids)
        if self.job.device.startswith("cuda") and self.world > 1:
            cfg.MODEL.DEVICE = f"cuda:{comm.get_local_rank()}"
        self.cfg = cfg
        self.job.model_config["depth"] = int(cfg.MODEL.RESNETS.DEPTH)
        self.job.model_config["mask_format"] = cfg.INPUT.MASK_FORMAT
        seed_all_rng(a.seed + self.rank)

        self.net = net = build_model(cfg)
        model = net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [comm.get_local_rank()] if self.job.device.startswith("cuda") else None
            model = DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
        self.optimizer = _build_optimizer(cfg, net, o.get("optimizer") or "SGD")
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        loader, self.train_batches = build_train_loader(cfg, ImageMapper(cfg, True), self.rank, self.world)
        self.d2_loop = (_AmpLoop if a.amp else _Loop)(model, loader, self.optimizer)
        # the scheduler steps before _EngineHook checkpoints, so a checkpoint holds the schedule of the next step
        self.d2_loop.register_hooks([hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler),
                                     _EngineHook(self)])
        self.val_dicts = to_detectron2_dicts(self.val_ds, self.classes) if self.val_ds is not None else None

    def _checkpointer(self, training_state: bool) -> Checkpointer:
        extra = {"trainer": self.d2_loop} if training_state else {}
        return Checkpointer(self.net, str(self.run.root), self.meta(), **extra)

    def loop(self) -> None:
        if self.train_batches is not None:  # a resumed run continues the batch stream where it stopped
            self.train_batches.start = self.state.done
        elif self.state.done:
            logger.warning("DATALOADER.SAMPLER_TRAIN=%s: the resumed run restarts its data order (it is exact "
                           "with the TrainingSampler only)", self.cfg.DATALOADER.SAMPLER_TRAIN)
        self.d2_loop.train(self.state.done, self.max_iterations)

    def load_initial_weights(self) -> LoadReport:
        return load_weights(self.net, self.job.init_weights, self.cfg, same_classes=self.same_init_classes())

    def save_checkpoint(self, path: Path, training_state: bool) -> None:
        ck = self._checkpointer(training_state)
        ck.save_dir = str(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"model": self.net.state_dict(), "workbench": self.meta(), "iteration": self.state.done,
                "train_state": self.state.to_json()}
        if training_state:
            data.update({k: v.state_dict() for k, v in ck.checkpointables.items() if k != "model"})
            data["rng"] = rng.capture()
        from ...engine.weights import save_weights_file

        save_weights_file(path, data)

    def resume_from(self, path: Path) -> None:
        ck = self._checkpointer(True)
        data = ck._load_file(str(path))
        if "trainer" not in data:
            raise ValueError(f"{path} is not a training-state checkpoint (no optimizer state); it was saved "
                             "with save_training_state=False")
        ck.load(str(path))  # model, optimizer, scheduler and the hooks' state (the run's TrainState)
        if "train_state" in data:
            self.state.load_json(data["train_state"])
        self.resume_rng = data.get("rng")

    def inference_model(self):
        from .model import Detectron2Model

        return Detectron2Model.from_net(self.job.model_name, self.net, self.cfg, self.classes,
                                        self.args.options.get("d2_overrides"))

    def val_losses(self) -> dict:
        return compute_val_loss(self.net, self.cfg, self.val_dicts) if self.val_dicts else {}

    def config_text(self) -> str:
        return self.cfg.dump()
