"""Training PP-YOLOE_seg behind ``engine.BaseTrainer``: the epoch loop, EMA and the optimizer.

What is the family's own: PaddleDetection's recipe (``engine.build_optimizer``: SGD momentum with
L2 decay off BatchNorm; ``engine.build_scheduler``: linear warmup then cosine; ``engine.ModelEMA``
whose weights are evaluated and saved as the inference weights), the augmentation of ``data.py``
and the classification convs re-initialised when fine-tuning to other classes. Everything else
(run directory, metrics, best model, early stopping, resume bookkeeping, ``train_result.json``)
is the shared trainer's."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from ...engine import rng
from ...engine.trainer import BaseTrainer
from ...engine.weights import LoadReport, load_matching
from .names import CLASS_SPECIFIC

logger = logging.getLogger("workbench.ppyoloe_seg")


class PPYOLOESegTrainer(BaseTrainer):
    unit = "epochs"
    loggers = ("workbench",)

    @property
    def max_iterations(self) -> int:
        return int(self.args.epochs_iters) * self.steps_per_epoch

    def _device(self) -> torch.device:
        d = self.job.device
        if d.startswith("cuda"):
            dev = torch.device(f"cuda:{self.rank}" if self.world > 1 else (d if ":" in d else "cuda"))
            torch.cuda.set_device(dev)
            return dev
        return torch.device("cpu")

    def build(self) -> None:
        from .data import make_loader, train_sizes
        from .engine import ModelEMA, build_optimizer, build_scheduler, wrap_ddp
        from .loss import build_criterion
        from .model import build_ppyoloe_seg

        a, o = self.args, self.args.options
        seed = a.seed + self.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        self.device = self._device()
        self.net = build_ppyoloe_seg(self.job.model_config["variant"], len(self.classes),
                                     **self.job.model_config["overrides"])
        self.net.to(self.device)
        self.criterion = build_criterion(len(self.classes), reg_max=int(self.net.config["reg_max"]))
        self.sizes = train_sizes(a.input_size, o["multi_scale"])
        self.loader = make_loader(self.train_ds, batch_size=a.batch_size, sizes=self.sizes, augment=o["augment"],
                                  shuffle=True, num_workers=a.num_workers, distributed=self.world > 1)
        self.steps_per_epoch = len(self.loader)
        self.optimizer = build_optimizer(self.net, lr=a.learning_rate, momentum=o["momentum"],
                                         weight_decay=o["weight_decay"])
        self.warmup = int(a.warmup_steps) + int(round(float(o["warmup_epochs"]) * self.steps_per_epoch))
        self.scheduler = build_scheduler(self.optimizer, self.max_iterations, warmup_steps=self.warmup,
                                         cosine_ratio=float(o["cosine_epochs_ratio"]))
        self.ema = ModelEMA(self.net, decay=o["ema_decay"])
        self.model = wrap_ddp(self.net, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if a.amp else None

    def meta(self) -> dict:
        return {
            "model_name": self.job.model_name,
            "family": self.job.family,
            "variant": self.job.model_config["variant"],
            "input_size": int(self.args.input_size),
            "overrides": dict(self.job.model_config["overrides"]),
            **self.classes.to_meta(),
        }

    def loop(self) -> None:
        from .engine import train_one_epoch

        a = self.args
        for epoch in range(self.state.done + 1, a.epochs_iters + 1):
            if self.world > 1 and hasattr(self.loader.sampler, "set_epoch"):
                self.loader.sampler.set_epoch(epoch)
            stats = train_one_epoch(
                self.model, self.criterion, self.loader, self.optimizer, self.device, scheduler=self.scheduler,
                ema=self.ema, clip_max_norm=float(a.options["clip_max_norm"]), amp=a.amp, scaler=self.scaler,
                on_step=lambda _step, losses: self.log_step(self._named(losses), self._lr()),
            )
            self.state.epoch = epoch
            logger.info("epoch %d/%d done: mean loss %.4f", epoch, a.epochs_iters, stats.get("loss", float("nan")))
            if self.end_of_unit(epoch):
                break

    @staticmethod
    def _named(losses: dict) -> dict:
        return {("total_loss" if k == "loss" else k): v for k, v in losses.items()}

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def load_initial_weights(self) -> LoadReport:
        """Initial weights (``engine.weights.load_matching``); the classification convs
        (``names.CLASS_SPECIFIC``) re-initialised when the classes differ. The EMA copy starts from
        the loaded network."""
        report = load_matching(self.net, self.job.init_state, CLASS_SPECIFIC, same_classes=self.same_init_classes(),
                               source=self.job.init_weights or "", log=logger)
        self.ema.module.load_state_dict(self.net.state_dict())
        return report

    def save_checkpoint(self, path: Path, training_state: bool) -> None:
        from .engine import save_checkpoint

        extra = {"workbench": self.meta(), "train_state": self.state.to_json()}
        if training_state:
            save_checkpoint(path, self.net, ema=self.ema, optimizer=self.optimizer, scheduler=self.scheduler,
                            epoch=self.state.done,
                            extra={**extra, "rng": rng.capture(),
                                   **({"scaler": self.scaler.state_dict()} if self.scaler else {})})
        else:  # inference weights: the EMA model
            save_checkpoint(path, self.ema.module, epoch=self.state.done, extra=extra)

    def resume_from(self, path: Path) -> None:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if "optimizer" not in ck or "ema" not in ck:
            raise ValueError(f"{path} is not a training-state checkpoint (no optimizer/EMA state); it was saved "
                             "with save_training_state=False")
        self.net.load_state_dict(ck["model"], strict=True)
        self.ema.load_state_dict(ck["ema"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.state.load_json(ck["extra"]["train_state"])
        self.resume_rng = ck["extra"].get("rng")
        if self.scaler is not None and "scaler" in ck["extra"]:
            self.scaler.load_state_dict(ck["extra"]["scaler"])

    def inference_model(self):
        from .facade import PPYOLOESegModel

        return PPYOLOESegModel.from_net(self.job.model_name, self.ema.module, self.classes, self.args.input_size)

    def config_text(self) -> str:
        import yaml

        from ...engine.run_dir import jsonable

        cfg = {
            "Global": {"model": self.job.model_name, "dataset_dir": self.job.dataset_dir, "output": self.job.output,
                       "device": self.job.device, "num_processes": self.world, "seed": self.args.seed},
            "Train": {k: v for k, v in self.args.to_dict().items() if k not in ("device", "seed", "options")},
            "Options": self.args.options,
            "Model": dict(self.net.config),
            "Schedule": {"warmup_steps": self.warmup, "steps_per_epoch": self.steps_per_epoch},
            "Data": {"train_sizes": self.sizes, "eval_size": self.args.input_size, "classes": self.classes.to_list()},
        }
        return yaml.safe_dump(jsonable(cfg), sort_keys=False)


__all__ = ["PPYOLOESegTrainer"]
