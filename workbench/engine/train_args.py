"""The training arguments of every model family, and what a training process is given.

``TrainArgs`` holds the arguments every family understands; ``options`` the family's own (a
Detectron2 ``depth`` or ``d2_overrides``, a Mask-RT-DETR ``ema_decay`` …, declared by the family's
``train_options``). Each family states its defaults (``BaseModel.default_train_args``), which the
training panel and the notebooks read instead of hard-coding numbers; ``epochs_iters``,
``eval_interval`` and ``save_interval`` count the family's ``unit`` (iterations or epochs);
``log_interval`` and ``warmup_steps`` always count optimizer steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownArgumentError


@dataclass
class TrainArgs:
    epochs_iters: int = 1000
    batch_size: int = 2
    learning_rate: float = 0.01
    input_size: int | None = None
    resume: bool = False
    resume_path: str | None = None
    eval_interval: int = 500
    save_interval: int = 500
    log_interval: int = 10
    warmup_steps: int = 100
    early_stop_patience: int | None = None
    amp: bool = False
    device: str | None = None
    num_processes: int = 1
    num_workers: int = 0
    seed: int = 0
    ignore_class_mismatch: bool = False
    progress: bool = True
    max_to_keep: int = 2
    save_training_state: bool = True
    options: dict = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)} - {"options"}

    @classmethod
    def build(cls, defaults: dict, options: dict, kwargs: dict) -> TrainArgs:
        """Family ``defaults`` updated by ``kwargs``; keys not of ``TrainArgs`` must be ``options``."""
        common = {k: v for k, v in {**defaults, **kwargs}.items() if k in cls.field_names()}
        extra = {k: v for k, v in kwargs.items() if k not in cls.field_names()}
        unknown = sorted(set(extra) - set(options))
        if unknown:
            allowed = sorted(cls.field_names() | set(options))
            raise UnknownArgumentError(
                f"unknown training argument(s) {', '.join(unknown)}; known: {', '.join(allowed)}"
            )
        merged = {**options, **extra}
        args = cls(**common, options=merged)
        args.validate()
        return args

    def validate(self) -> None:
        for name in ("epochs_iters", "batch_size", "save_interval", "eval_interval", "log_interval"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if float(self.learning_rate) <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.early_stop_patience is not None and int(self.early_stop_patience) < 1:
            raise ValueError(f"early_stop_patience must be at least 1 (or None), got {self.early_stop_patience}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainJob:
    """Everything a training process needs (picklable: it is sent to spawned workers)."""

    model_name: str
    family: str
    dataset_dir: str
    output: str
    device: str
    args: TrainArgs
    model_config: dict = field(default_factory=dict)  # the family's architecture settings
    init_weights: str | None = None  # where the initial weights came from
    init_state: Any = None  # their state dict (None: from scratch)
    init_meta: dict | None = None  # their workbench metadata (classes …)
