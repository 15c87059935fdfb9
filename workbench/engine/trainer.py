"""``BaseTrainer``: the training run every model family shares (template method).

``train()`` reads the dataset and its classes, lets the family build its network, optimizer and
loader (``build``), resumes or loads initial weights, then runs the family's ``loop``, which calls
back ``log_step`` after every optimizer step and ``end_of_unit`` after every iteration/epoch. The
base class owns everything else: the run directory and its files, the progress bar, the
``metrics.jsonl`` records, evaluation on the val split with the best checkpoint chosen by mask AP,
early stopping, divergence handling and ``train_result.json`` — with its heartbeat, so a killed run
is seen as killed — and exact resume: a resumed run cuts ``metrics.jsonl`` and the checkpoints back
to the one it resumes from, is a no-op on a finished run, and restores every random generator
(``engine.rng``) saved in the checkpoint, so that with the family's resumable data order it ends
with the weights of the uninterrupted run. A family implements:

* ``unit``: ``"iterations"`` or ``"epochs"``; ``loggers``: logger names copied into ``train.log``;
* ``build()``, ``loop()``, ``max_iterations``;
* ``load_initial_weights()`` (with ``engine.weights.load_matching``, returning its ``LoadReport``,
  which goes to ``train.log`` and ``train_result.json["init_weights"]``),
  ``save_checkpoint(path, training_state)`` (a training-state checkpoint also holds
  ``engine.rng.capture()``), ``resume_from(path)`` (which sets ``self.resume_rng`` from it);
* ``inference_model()``: a ``BaseModel`` over the weights to evaluate (e.g. the EMA copy);
* optionally ``val_losses()`` and ``config_text()``.

(About 400 lines on purpose: the template and every piece of bookkeeping it calls read together,
top to bottom; the family hooks are listed in one place.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import rng
from .classes import ClassMap
from .errors import DatasetError, TrainingDivergedError
from .launcher import dist_info
from .run_dir import RunDir, TrainResult, jsonable, process_alive
from .train_args import TrainJob
from .weights import LoadReport

logger = logging.getLogger("workbench.train")


@dataclass
class TrainState:
    """Progress of a run; stored in every training-state checkpoint so a resumed run continues it."""

    epoch: int = 0  # finished epochs (Mask-RT-DETR) / epochs seen so far (iteration families)
    iter: int = 0  # optimizer steps done
    done: int = 0  # finished units (iterations or epochs)
    best: float = -1.0  # best val segm AP so far
    best_at: int | None = None
    best_metrics: dict | None = None
    last_metrics: dict | None = None
    bad_evals: int = 0
    init_weights: dict | None = None  # LoadReport.to_dict() of the initial weights (None: from scratch)
    wall_time_s: float = 0.0  # seconds of training before this checkpoint (all processes that ran it)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def load_json(self, text: str) -> None:
        for k, v in json.loads(text).items():
            if hasattr(self, k):
                setattr(self, k, v)


class BaseTrainer(ABC):
    unit = "iterations"
    loggers: tuple[str, ...] = ("workbench",)

    def __init__(self, job: TrainJob):
        self.job = job
        self.args = job.args
        self.run = RunDir(job.output)
        self.rank, self.world = dist_info()
        self.main = self.rank == 0
        self.state = TrainState()
        self.stopped_early = False
        self.bar = None
        self._window: list[dict] = []
        self._t_start = self._t_loop = time.perf_counter()
        self._t_last = self._t_start
        self._wall_before = 0.0  # wall time of the runs this one resumes
        self.resume_rng: dict | None = None  # set by resume_from: restored just before the first step

    # ------------------------------------------------------------------ the template
    @classmethod
    def run_job(cls, job: TrainJob) -> dict | None:
        """Entry point of a training process (what the launcher calls)."""
        return cls(job).train()

    def train(self) -> dict | None:
        if self.main:  # rank 0 alone writes the run directory
            self.run.make()
        with self.run.logging_to_file(self.loggers, enabled=self.main):
            if self.main:
                self._mark_previous_run()
                from ..utils.io import remove_stale_temp_files

                for p in remove_stale_temp_files(self.run.root) + remove_stale_temp_files(self.run.best_dir):
                    logger.info("removed %s, left by an interrupted write", p.name)
            if self.args.resume:
                finished = self._finished_run() if self.main else None
                if self.agree(finished is not None):
                    return finished
            try:
                self._prepare()
            except KeyboardInterrupt:  # a Stop during start-up: this run's status, not the previous run's
                if self.main:
                    self.write_result("stopped", "stopped by the user before the first step")
                raise
            self._open_bar()
            if self.resume_rng is not None:
                rng.restore(self.resume_rng)
            try:
                self.loop()
            except FloatingPointError as e:
                self._close_bar()
                last = self.run.last_checkpoint()
                msg = (
                    f"training stopped, it diverged (NaN/inf): {str(e).rstrip('.')}. Nothing was saved after "
                    f"it; the last good checkpoint is {last or 'none (no checkpoint was written yet)'}. Try a "
                    "lower learning rate or more warmup steps."
                )
                logger.error(msg)
                if self.main:
                    self.write_result("failed", msg)
                raise TrainingDivergedError(msg) from None
            except KeyboardInterrupt:
                self._close_bar()
                if self.main:
                    self.write_result("stopped", "stopped by the user")
                raise
            except BaseException as e:
                self._close_bar()
                if self.main:
                    self.write_result("failed", f"{type(e).__name__}: {e}")
                raise
            self._close_bar()
            return self.finish()

    # ------------------------------------------------------------------ data
    def load_data(self) -> None:
        from ..data.dataset import Dataset

        ddir = Path(self.job.dataset_dir)
        self.train_ds = Dataset.load_paddlex(ddir, "train")
        self.val_ds = (
            Dataset.load_paddlex(ddir, "val") if (ddir / "annotations" / "instance_val.json").is_file() else None
        )
        self.classes = ClassMap.from_dataset(self.train_ds)
        if not len(self.classes):
            raise DatasetError(f"{self.train_ds.source}: the dataset has no categories")
        if not len(self.train_ds.images):
            raise DatasetError(f"{self.train_ds.source}: the train split has no images")
        if self.val_ds is not None:
            ClassMap.from_dataset(self.val_ds).check_same(
                self.classes, f"the val split {self.val_ds.source}", f"the train split {self.train_ds.source}"
            )
        meta = self.job.init_meta or {}
        # weights trained here on other classes are a mistake unless said so; pretrained weights
        # ("coco") are a starting point for any classes
        pretrained = bool(meta.get("pretrained"))
        if meta.get("class_names") and not (self.args.ignore_class_mismatch or self.args.resume or pretrained):
            ClassMap.from_meta(meta).check_same(
                self.classes, f"the weights {self.job.init_weights}", f"the dataset {self.job.dataset_dir}"
            )

    def init_classes(self) -> ClassMap | None:
        """The classes of the initial weights (by name, or the unnamed count), ``None`` if unknown."""
        meta = self.job.init_meta or {}
        m = meta if meta.get("class_names") else meta.get("unnamed_classes")
        return ClassMap.from_meta(m) if m else None

    def same_init_classes(self) -> bool:
        """Whether the initial weights predict the dataset's classes (else the class-specific layers
        are re-initialised)."""
        c = self.init_classes()
        return c is not None and c.same(self.classes)

    def _prepare(self) -> None:
        """Data, network, start weights, the run's config and its first ``"running"`` record."""
        self.load_data()
        self.build()
        self._load_start_weights()
        if self.main:
            self.run.write_config(self.config_text())
            if not self.args.resume:
                self.run.reset_metrics()
            self.write_result("running")
        logger.info(
            "training %s on %s: %d train images, %d val images, %d classes, %d %s, batch %d x %d "
            "process(es), device %s",
            self.job.model_name,
            self.job.dataset_dir,
            len(self.train_ds.images),
            len(self.val_ds.images) if self.val_ds else 0,
            len(self.classes),
            self.args.epochs_iters,
            self.unit,
            self.args.batch_size,
            self.world,
            self.job.device,
        )

    def _load_start_weights(self) -> None:
        """The checkpoint to resume from (and the cut-back of the run's files to it), or the initial weights."""
        if self.args.resume:
            path = self._resume_path()
            self.resume_from(path)
            if self.main:
                self._cut_back_to(path)
            self._wall_before = float(self.state.wall_time_s or 0.0)
            logger.info("resuming from %s after %d of %d %s", path, self.state.done, self.args.epochs_iters, self.unit)
        elif self.job.init_state is not None or self.job.init_weights:
            report = self.load_initial_weights()
            self.state.init_weights = report.to_dict() if report is not None else None

    def _mark_previous_run(self) -> None:
        """A previous run in this folder that says ``"running"`` but whose process is gone was killed:
        say so in its ``train_result.json`` (status ``"killed"``) and in the log."""
        killed = self.run.mark_if_killed()
        if killed is not None:
            logger.warning(
                "the previous run in %s was killed after %d iterations (pid %s, last heartbeat %s); marked 'killed'",
                self.run.root,
                killed.get("iterations", 0),
                killed.get("pid"),
                killed.get("updated_at"),
            )
            return
        try:
            raw = json.loads(self.run.train_result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if (
            raw.get("status") == "running"
            and process_alive(raw.get("pid"), raw.get("host"))
            and raw.get("pid") != os.getpid()
        ):
            logger.warning(
                "%s says another training process (pid %s on %s) is writing this run; two runs in one "
                "folder overwrite each other's files",
                self.run.train_result,
                raw.get("pid"),
                raw.get("host"),
            )

    def _finished_run(self) -> dict | None:
        """With resume: the run's ``train_result.json`` if it already finished this schedule (then
        resuming changes nothing), else ``None``."""
        try:
            d = self.run.read_result()
        except (OSError, ValueError):
            return None
        if d.get("status") == "stopped_early" or (
            d.get("status") == "done" and int(d.get("epochs_iters") or 0) >= int(self.args.epochs_iters)
        ):
            logger.info(
                "resume: %s already finished (%s after %s of %s %s); nothing to do",
                self.run.root,
                d["status"],
                d.get("epochs_iters"),
                d.get("max_epochs_iters"),
                d.get("unit"),
            )
            return d
        return None

    def _cut_back_to(self, path: Path) -> None:
        """After resuming from ``path``: ``metrics.jsonl`` without the records logged after it, no
        checkpoints of later steps, at most ``max_to_keep`` checkpoints."""
        dropped = self.run.truncate_metrics(self.state.iter, self.state.done)
        gone = self.run.drop_checkpoints_after(self.state.done)
        pruned = self.run.prune_checkpoints(self.args.max_to_keep, keep=path)
        if dropped or gone or pruned:
            logger.info(
                "resume: dropped %d metrics records logged after the checkpoint, %d later and %d surplus checkpoints",
                dropped,
                len(gone),
                len(pruned),
            )

    def _wall_now(self) -> float:
        return round(self._wall_before + time.perf_counter() - self._t_start, 2)

    def _resume_path(self) -> Path:
        if self.args.resume_path:
            p = Path(self.args.resume_path)
            if not p.is_file():
                raise FileNotFoundError(f"resume_path {p} does not exist")
            return p
        p = self.run.last_checkpoint()
        if p is None:
            raise FileNotFoundError(
                f"resume=True but {self.run.root} holds no training-state checkpoint (no {RunDir.LAST_POINTER} file)"
            )
        return p

    # ------------------------------------------------------------------ family hooks
    @property
    @abstractmethod
    def max_iterations(self) -> int:
        """Optimizer steps of the whole schedule (known after ``build``)."""

    @abstractmethod
    def build(self) -> None:
        """Network, optimizer, scheduler and data loader of the family."""

    @abstractmethod
    def loop(self) -> None:
        """Run the schedule from ``self.state``; call ``log_step`` per step, stop when ``end_of_unit`` says so."""

    @abstractmethod
    def load_initial_weights(self) -> LoadReport:
        """Load ``job.init_weights``/``init_state`` with ``engine.weights.load_matching`` (the
        class-specific layers re-initialised unless ``same_init_classes()``); return its report."""

    @abstractmethod
    def save_checkpoint(self, path: Path, training_state: bool) -> None:
        """Write weights (+ optimizer state when ``training_state``) and ``self.state`` to ``path``."""

    @abstractmethod
    def resume_from(self, path: Path) -> None:
        """Restore network, optimizer and ``self.state`` from a training-state checkpoint."""

    @abstractmethod
    def inference_model(self):
        """A ``BaseModel`` over the weights to evaluate now (e.g. the EMA copy)."""

    def val_losses(self) -> dict:
        return {}

    def config_text(self) -> str:
        import yaml

        return yaml.safe_dump(
            jsonable(
                {
                    "Global": {
                        "model": self.job.model_name,
                        "dataset_dir": self.job.dataset_dir,
                        "output": self.job.output,
                        "device": self.job.device,
                    },
                    "Train": self.args.to_dict(),
                    "Model": self.job.model_config,
                    "classes": self.classes.to_list(),
                }
            ),
            sort_keys=False,
        )

    def meta(self) -> dict:
        """What every weights file of this run carries (model name, family, classes, input size …)."""
        return {
            "model_name": self.job.model_name,
            "family": self.job.family,
            **self.job.model_config,
            "input_size": int(self.args.input_size),
            **self.classes.to_meta(),
        }

    # ------------------------------------------------------------------ called by the loop
    def log_step(self, losses: dict[str, float], lr: float) -> None:
        """After each optimizer step: progress bar, and every ``log_interval`` a metrics record."""
        self.state.iter += 1
        it = self.state.iter
        if self.bar is not None:
            self.bar.update(1)
        if not self.main:
            return
        self._window.append(losses)
        if it % max(1, self.args.log_interval) and it != 1 and it != self.max_iterations:
            return
        now = time.perf_counter()
        rec: dict = {"type": "train", "iter": it, "max_iter": self.max_iterations, "epoch": self._epoch_now()}
        for k in self._window[-1]:
            vals = [w[k] for w in self._window if k in w]
            rec[k] = float(np.median(vals))
        rec["lr"] = float(lr)
        rec["time"] = round((now - self._t_last) / max(1, len(self._window)), 4)
        rec["elapsed_s"] = round(now - self._t_loop, 3)
        self._t_last = now
        self._window.clear()
        self.run.append_metrics(rec)
        self.write_result("running")  # the heartbeat
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{rec.get('total_loss', float('nan')):.3f}", lr=f"{rec['lr']:.2e}")
        logger.info(
            "iter %d/%d %s",
            it,
            self.max_iterations,
            " ".join(
                f"{k}={v:.4g}"
                for k, v in rec.items()
                if k not in ("type", "iter", "max_iter") and isinstance(v, (int, float))
            ),
        )

    def end_of_unit(self, done: int) -> bool:
        """After each finished iteration/epoch ``done`` (1-based): evaluate and checkpoint when due.
        Returns whether to stop (early stopping), the same on every process."""
        self.state.done = done
        last = done >= self.args.epochs_iters
        stop = False
        if self.val_ds is not None and (done % max(1, self.args.eval_interval) == 0 or last):
            stop = self.evaluate_now(done)
        if self.main and self.args.save_interval and (done % self.args.save_interval == 0 or last or stop):
            path = self.run.checkpoint(done)
            self.state.wall_time_s = self._wall_now()
            self.save_checkpoint(path, training_state=self.args.save_training_state)
            self.run.mark_last(path, self.args.max_to_keep)
            self.write_result("running")
        if stop:
            self.stopped_early = True
        return stop

    def evaluate_now(self, done: int) -> bool:
        """Val metrics (main process), best checkpoint by segm AP, early stopping."""
        stop = False
        if self.main:
            from ..evaluation import coco_metrics, flat_metrics, predict_split, to_coco_detections

            t0 = time.perf_counter()
            m = self.val_losses()
            results = predict_split(self.inference_model(), self.val_ds, progress=False)
            full = coco_metrics(self.val_ds, to_coco_detections(self.val_ds, results))
            m.update(flat_metrics(full))
            m["per_class_segm_AP"] = {n: v["AP"] for n, v in full["segm"]["per_class"].items()}
            m["eval_time_s"] = round(time.perf_counter() - t0, 3)
            s = self.state
            s.last_metrics = {"iter": s.iter, "epoch": self._epoch_now(in_step=False), "epochs_iters": done, **m}
            ap = m.get("segm_AP")
            ap = -1.0 if ap is None or not math.isfinite(ap) else float(ap)
            if ap > s.best:
                s.best, s.best_at, s.best_metrics, s.bad_evals = ap, done, dict(s.last_metrics), 0
                self.save_best()
            else:
                s.bad_evals += 1
            self.run.append_metrics(
                {"type": "eval", **s.last_metrics, "best_segm_AP": s.best, "best_epochs_iters": s.best_at}
            )
            logger.info(
                "eval after %s %d: bbox AP %.4f segm AP %.4f (best %.4f at %s) in %.1fs",
                self.unit[:-1],
                done,
                m.get("bbox_AP") or 0.0,
                ap,
                s.best,
                s.best_at,
                m["eval_time_s"],
            )
            patience = self.args.early_stop_patience
            if patience is not None and s.bad_evals >= patience and done < self.args.epochs_iters:
                stop = True
                logger.info(
                    "early stopping after %s %d: segm AP did not improve for %d evaluations",
                    self.unit[:-1],
                    done,
                    s.bad_evals,
                )
        return self.agree(stop)

    def agree(self, flag: bool) -> bool:
        """``flag`` of the main process, on every process."""
        if self.world <= 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device="cuda" if self.job.device.startswith("cuda") else "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())

    def save_best(self) -> None:
        self.save_checkpoint(self.run.best_weights, training_state=False)
        self.run.write_config(self.config_text(), best=True)
        self.run.write_best_metrics(self.state.last_metrics or {"epochs_iters": self.state.done})
        self.run.mark_latest()  # the newest run with a best model: what evaluate/predict default to

    # ------------------------------------------------------------------ end
    def finish(self) -> dict | None:
        res = None
        if self.main:
            self.save_checkpoint(self.run.final, training_state=False)
            if not self.run.best_weights.exists():  # no val split: the final weights are the best we know
                self.save_best()
            res = self.write_result("stopped_early" if self.stopped_early else "done")
            logger.info("training finished: %s after %d %s", res["status"], res["epochs_iters"], self.unit)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return res

    def write_result(self, status: str, error: str | None = None) -> dict:
        s = self.state
        classes = getattr(self, "classes", None)
        try:
            max_iter = self.max_iterations
        except AttributeError:  # before build(): the schedule is not known yet
            max_iter = None
        return self.run.write_result(
            TrainResult(
                status=status,
                model_name=self.job.model_name,
                family=self.job.family,
                unit=self.unit,
                epochs_iters=s.done,
                max_epochs_iters=int(self.args.epochs_iters),
                iterations=s.iter,
                max_iterations=max_iter,
                best_epochs_iters=s.best_at,
                best_metrics=s.best_metrics,
                final_metrics=s.last_metrics,
                classes=classes.to_list() if classes else [],
                paths=self.run.paths(),
                wall_time_s=self._wall_now(),
                train_args=jsonable(self.args.to_dict()),
                init_weights=s.init_weights,
                error=error,
            )
        )

    # ------------------------------------------------------------------ helpers
    def _epoch_now(self, in_step: bool = True) -> float:
        """The epoch a train record belongs to (1-based), or the epochs finished at an evaluation."""
        if self.unit == "epochs":
            return self.state.epoch + 1 if in_step else self.state.done
        n = max(1, len(self.train_ds.images))
        return round(self.state.iter * self.args.batch_size * self.world / n, 2)

    def _open_bar(self) -> None:
        from tqdm.auto import tqdm

        self._t_loop = self._t_last = time.perf_counter()
        self.bar = tqdm(
            total=self.max_iterations,
            initial=self.state.iter,
            desc=self.job.model_name,
            unit="it",
            disable=not (self.main and self.args.progress),
            dynamic_ncols=True,
            leave=True,
        )

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
