"""Training a Detectron2 model on a PaddleX-layout dataset, built from Detectron2's parts.

Detectron2's ``SimpleTrainer``/``AMPTrainer`` run the steps; its model builder, optimizer, LR
scheduler, train data loader (from our ``DatasetCatalog`` registration), ``DetectionCheckpointer``
and ``PeriodicCheckpointer``/``IterationTimer``/``LRScheduler`` hooks are used as they are. Ours:

* ``EvalHook``: every ``eval_interval`` iterations and at the end, on the main process: the
  validation loss (the model's training losses on the val split, without augmentation, no
  gradients, BatchNorm statistics frozen) and COCO bbox/segm AP (pycocotools); keeps
  ``best_model/`` by **mask** AP; early stopping after ``early_stop_patience`` evaluations
  without improvement. Its state is in every checkpoint, so a resumed run keeps its best.
* ``ProgressHook``: a ``tqdm.auto`` bar (loss, lr, ETA) and ``metrics.jsonl`` (one JSON object
  per log interval and per evaluation).
* A loss that is NaN/inf (on any process) stops training with ``TrainingDivergedError``; the
  optimizer step of that iteration is not taken and nothing is saved after it, so the last
  periodic checkpoint is the last good one (named in the message and in ``train_result.json``).
* Several processes: Detectron2's ``launch`` (NCCL) on GPUs; on CPU (Detectron2 v0.6's
  ``launch`` requires CUDA) the same ``torch.multiprocessing.spawn`` set-up on the gloo backend.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...data.dataset import Dataset
from ...utils.io import atomic_write_json, atomic_write_text
from ._compat import import_detectron2

import_detectron2()

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks  # noqa: E402
from detectron2.engine.train_loop import HookBase  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

logger = logging.getLogger("workbench.train")


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


@dataclass
class TrainSpec:
    """Everything a training process needs (picklable: it is sent to spawned workers)."""

    model_name: str
    dataset_dir: str
    output: str
    iters: int = 1000
    batch_size: int = 2
    learning_rate: float = 0.01
    input_size: int = 640
    norm: str = "GN"
    depth: int | None = None
    device: str = "cpu"
    amp: bool = False
    num_processes: int = 1
    resume: bool = False
    resume_path: str | None = None
    init_weights: str | None = None
    init_meta: dict | None = None
    ignore_class_mismatch: bool = False
    eval_interval: int = 500
    save_interval: int = 500
    log_interval: int = 10
    warmup_steps: int = 100
    early_stop_patience: int | None = None
    num_workers: int = 0
    seed: int = 0
    progress: bool = True
    max_to_keep: int = 2
    d2_overrides: dict = field(default_factory=dict)


# ------------------------------------------------------------------------ the loop
class _LoopMixin:
    """``TrainerBase.train`` with a stop request (early stopping) and NaN checks on every process."""

    stop_requested = False

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
        super()._write_metrics(loss_dict, data_time, prefix)


class _Loop(_LoopMixin, SimpleTrainer):
    pass


class _AmpLoop(_LoopMixin, AMPTrainer):
    pass


class _Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that stores our metadata (model name, classes…) in every file."""

    def __init__(self, model, save_dir: str, meta: dict, **kw):
        super().__init__(model, save_dir, **kw)
        self.meta = meta

    def save(self, name: str, **kwargs: Any) -> None:
        kwargs.setdefault("workbench", self.meta)
        super().save(name, **kwargs)


def save_weights(net, path: Path, meta: dict, **extra) -> Path:
    """Write ``{"model": state_dict, "workbench": meta}`` to ``path`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    module = net.module if hasattr(net, "module") else net
    torch.save({"model": module.state_dict(), "workbench": meta, **extra}, tmp)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------ hooks
def _jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class EvalHook(HookBase):
    def __init__(self, period: int, evaluate_fn, save_best_fn, metrics_path: Path, patience: int | None):
        self.period = period
        self.evaluate_fn = evaluate_fn  # () -> flat metrics dict, or None when there is no val split
        self.save_best_fn = save_best_fn
        self.metrics_path = metrics_path
        self.patience = patience
        self.best: float = -1.0
        self.best_iter: int | None = None
        self.best_metrics: dict | None = None
        self.last_metrics: dict | None = None
        self.bad_evals = 0
        self.stopped_early = False

    def after_step(self):
        nxt = self.trainer.iter + 1
        if self.evaluate_fn is None:
            return
        if (self.period > 0 and nxt % self.period == 0) or nxt == self.trainer.max_iter:
            self._evaluate(nxt)

    def _evaluate(self, it: int) -> None:
        stop = False
        if comm.is_main_process():
            t0 = time.perf_counter()
            metrics = self.evaluate_fn()
            metrics["eval_time_s"] = round(time.perf_counter() - t0, 3)
            self.last_metrics = {"iter": it, **metrics}
            ap = metrics.get("segm_AP")
            ap = -1.0 if ap is None else float(ap)
            improved = ap > self.best
            if improved:
                self.best, self.best_iter, self.best_metrics = ap, it, dict(self.last_metrics)
                self.bad_evals = 0
                self.save_best_fn(it, self.last_metrics)
            else:
                self.bad_evals += 1
            _jsonl(self.metrics_path, {"type": "eval", **self.last_metrics, "best_segm_AP": self.best,
                                       "best_iter": self.best_iter})
            self.trainer.storage.put_scalars(**{k: v for k, v in metrics.items()
                                                if isinstance(v, (int, float)) and v is not None},
                                             smoothing_hint=False)
            logger.info("eval at iter %d: val_loss %.4f bbox AP %.4f segm AP %.4f (best %.4f at %s)", it,
                        metrics.get("val_loss") or float("nan"), metrics.get("bbox_AP") or 0.0, ap, self.best,
                        self.best_iter)
            if self.patience is not None and self.bad_evals >= self.patience and it < self.trainer.max_iter:
                stop = True
                logger.info("early stopping at iter %d: segm AP did not improve for %d evaluations", it,
                            self.bad_evals)
        if comm.get_world_size() > 1:
            stop = any(comm.all_gather(stop))
        if stop:
            self.stopped_early = True
            self.trainer.stop_requested = True

    def state_dict(self):
        return {"best": self.best, "best_iter": self.best_iter, "bad_evals": self.bad_evals,
                "best_metrics": json.dumps(self.best_metrics), "last_metrics": json.dumps(self.last_metrics)}

    def load_state_dict(self, state):
        self.best = float(state["best"])
        self.best_iter = state["best_iter"]
        self.bad_evals = int(state["bad_evals"])
        self.best_metrics = json.loads(state.get("best_metrics") or "null")
        self.last_metrics = json.loads(state.get("last_metrics") or "null")


class ProgressHook(HookBase):
    """tqdm bar and the training records of ``metrics.jsonl`` (main process only)."""

    def __init__(self, metrics_path: Path, log_interval: int, desc: str, enabled: bool = True):
        self.metrics_path = metrics_path
        self.log_interval = max(1, log_interval)
        self.desc = desc
        self.enabled = enabled
        self.bar = None
        self._t0 = time.perf_counter()

    def before_train(self):
        from tqdm.auto import tqdm

        self._t0 = time.perf_counter()
        self.bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter, desc=self.desc,
                        unit="it", disable=not self.enabled, dynamic_ncols=True, leave=True)

    def after_step(self):
        it = self.trainer.iter + 1
        storage = self.trainer.storage
        if self.bar is not None:
            self.bar.update(1)
        if it % self.log_interval == 0 or it == self.trainer.max_iter or it == self.trainer.start_iter + 1:
            hist = storage.histories()
            rec: dict = {"type": "train", "iter": it}
            for k in sorted(hist):
                if k == "lr" or k == "data_time" or k == "time" or "loss" in k:
                    if k in ("val_loss",) or k.startswith("val_"):
                        continue
                    rec[k] = float(hist[k].median(self.log_interval) if k != "lr" else hist[k].latest())
            rec["elapsed_s"] = round(time.perf_counter() - self._t0, 3)
            _jsonl(self.metrics_path, rec)
            if self.bar is not None and "total_loss" in rec:
                self.bar.set_postfix(loss=f"{rec['total_loss']:.3f}", lr=f"{rec.get('lr', 0):.2e}")
            logger.info("iter %d/%d %s", it, self.trainer.max_iter,
                        " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k not in ("type", "iter")))

    def after_train(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _file_logging(path: Path | None):
    """INFO logs of Detectron2, fvcore and workbench into ``train.log`` (main process)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    names = ("detectron2", "fvcore", "workbench")
    saved = []
    for n in names:
        lg = logging.getLogger(n)
        saved.append((lg, lg.level))
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


def solver_settings(cfg, spec: TrainSpec) -> None:
    n = int(spec.iters)
    cfg.SOLVER.IMS_PER_BATCH = int(spec.batch_size) * int(spec.num_processes)
    cfg.SOLVER.BASE_LR = float(spec.learning_rate)
    cfg.SOLVER.MAX_ITER = n
    cfg.SOLVER.STEPS = tuple(sorted({s for s in (int(0.75 * n), int(0.9 * n)) if 0 < s < n}))
    cfg.SOLVER.WARMUP_ITERS = int(min(max(0, spec.warmup_steps), max(0, n - 1)))
    cfg.SOLVER.CHECKPOINT_PERIOD = int(spec.save_interval)
    cfg.SOLVER.AMP.ENABLED = bool(spec.amp)
    cfg.TEST.EVAL_PERIOD = int(spec.eval_interval)
    cfg.DATALOADER.NUM_WORKERS = int(spec.num_workers)
    cfg.SEED = int(spec.seed)
    cfg.OUTPUT_DIR = str(spec.output)


def compute_val_loss(net, cfg, dicts: list[dict]) -> dict[str, float]:
    """Mean training losses on ``dicts`` (no augmentation, no gradients, BN statistics frozen)."""
    import detectron2.data.transforms as T
    from detectron2.data import DatasetMapper

    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST,
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


def predict_split(net, cfg, ds: Dataset, classes, model_name: str, batch_size: int = 1) -> list:
    """One ``Result`` per image of ``ds`` (in order), every detection kept (threshold 0)."""
    from .predictor import NetPredictor

    pred = NetPredictor(net, cfg, classes.category_ids, classes.names, model_name)
    out = []
    items = list(ds.iter_images())
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        imgs = [ds.load_image(im) for im, _ in chunk]
        out.extend(pred(imgs, [str(ds.image_path(im)) for im, _ in chunk], threshold=0.0, keep_image=False))
    return out


def evaluate_net(net, cfg, ds: Dataset, classes, model_name: str, batch_size: int = 1) -> dict:
    """COCO bbox/segm metrics of ``net`` on ``ds`` (``workbench.evaluation.coco_metrics``)."""
    from ...evaluation import coco_metrics

    results = predict_split(net, cfg, ds, classes, model_name, batch_size)
    dets = [d for im, r in zip(ds.images, results) for d in r.to_coco(im.id)]
    return coco_metrics(ds, dets)


# ------------------------------------------------------------------------ one process
def train_main(spec: TrainSpec) -> dict | None:
    """Train in this process (one of ``num_processes``); the main process returns the result dict."""
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer
    from detectron2.utils.env import seed_all_rng

    from ...evaluation import flat_metrics
    from .config import build_cfg
    from .data import ClassMap, mask_format_for, register, to_detectron2_dicts

    rank = comm.get_rank()
    main = comm.is_main_process()
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    result_path = out / "train_result.json"
    t_start = time.perf_counter()
    with _file_logging(out / "train.log" if main else None):
        train_ds = Dataset.load_paddlex(spec.dataset_dir, "train")
        val_ds = None
        if (Path(spec.dataset_dir) / "annotations" / "instance_val.json").is_file():
            val_ds = Dataset.load_paddlex(spec.dataset_dir, "val")
        classes = ClassMap.from_dataset(train_ds)
        if not len(classes):
            raise ValueError(f"{train_ds.source}: the dataset has no categories")
        if val_ds is not None:
            ClassMap.from_dataset(val_ds).check_same(classes, f"val split {val_ds.source}",
                                                     f"train split {train_ds.source}")
        if spec.init_meta and not spec.ignore_class_mismatch:
            ClassMap.from_meta(spec.init_meta).check_same(classes, f"weights {spec.init_weights}",
                                                          f"dataset {spec.dataset_dir}")
        train_name = register(train_ds, classes)

        cfg = build_cfg(spec.model_name, num_classes=len(classes), norm=spec.norm, depth=spec.depth,
                        input_size=spec.input_size, device=spec.device, d2_overrides=spec.d2_overrides)
        solver_settings(cfg, spec)
        cfg.DATASETS.TRAIN = (train_name,)
        cfg.INPUT.MASK_FORMAT = mask_format_for(train_ds)
        cfg.WORKBENCH.CLASS_NAMES = list(classes.names)
        cfg.WORKBENCH.CATEGORY_IDS = list(classes.category_ids)
        if spec.device.startswith("cuda") and comm.get_world_size() > 1:
            cfg.MODEL.DEVICE = f"cuda:{comm.get_local_rank()}"
        meta = {"model_name": spec.model_name, "norm": spec.norm, "depth": int(cfg.MODEL.RESNETS.DEPTH),
                "input_size": int(spec.input_size), "mask_format": cfg.INPUT.MASK_FORMAT, **classes.to_meta()}
        if main:
            atomic_write_text(out / "config.yaml", cfg.dump())
            if not spec.resume and metrics_path.exists():
                metrics_path.unlink()
        seed_all_rng(spec.seed + rank)

        net = build_model(cfg)
        model = net
        if comm.get_world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel

            dev_ids = [comm.get_local_rank()] if spec.device.startswith("cuda") else None
            model = DistributedDataParallel(net, device_ids=dev_ids, broadcast_buffers=False)
        optimizer = build_optimizer(cfg, net)
        scheduler = build_lr_scheduler(cfg, optimizer)
        loader = build_detection_train_loader(cfg)
        loop = (_AmpLoop if spec.amp else _Loop)(model, loader, optimizer)
        ckpt = _Checkpointer(net, str(out), meta, trainer=loop)

        best_dir = out / "best_model"
        val_dicts = to_detectron2_dicts(val_ds, classes) if val_ds is not None else None

        def evaluate_fn() -> dict:
            m = compute_val_loss(net, cfg, val_dicts)
            full = evaluate_net(net, cfg, val_ds, classes, spec.model_name)
            m.update(flat_metrics(full))
            m["per_class_segm_AP"] = {n: v["AP"] for n, v in full["segm"]["per_class"].items()}
            return m

        def save_best(it: int, metrics: dict) -> None:
            save_weights(net, best_dir / "model.pth", meta, iteration=it)
            atomic_write_text(best_dir / "config.yaml", cfg.dump())
            atomic_write_json(best_dir / "best_metrics.json", metrics)

        eval_hook = EvalHook(spec.eval_interval, evaluate_fn if val_ds is not None else None, save_best,
                             metrics_path, spec.early_stop_patience)
        hook_list = [hooks.IterationTimer(), hooks.LRScheduler(optimizer, scheduler), eval_hook,
                     hooks.PeriodicCheckpointer(ckpt, spec.save_interval, max_to_keep=spec.max_to_keep)]
        if main:
            hook_list.append(ProgressHook(metrics_path, spec.log_interval, spec.model_name, spec.progress))
        loop.register_hooks(hook_list)

        start_iter = 0
        if spec.resume:
            path = spec.resume_path or (ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None)
            if not path:
                raise FileNotFoundError(f"resume=True but {out} holds no checkpoint (no last_checkpoint file)")
            ckpt.load(path)  # model, optimizer (trainer state), scheduler and hook states
            start_iter = loop.iter + 1
            logger.info("resuming from %s at iteration %d of %d", path, start_iter, spec.iters)
        elif spec.init_weights:
            ckpt.load(spec.init_weights, checkpointables=[])

        def write_result(status: str, error: str | None = None, last_iter: int | None = None) -> dict:
            final = out / "model_final.pth"
            res = {
                "done_flag": status in ("done", "stopped_early"), "status": status, "error": error,
                "model_name": spec.model_name, "iterations": last_iter, "max_iter": spec.iters,
                "best_iter": eval_hook.best_iter, "best_metrics": eval_hook.best_metrics,
                "final_metrics": eval_hook.last_metrics,
                "classes": [{"id": i, "name": n} for i, n in zip(classes.category_ids, classes.names)],
                "paths": {"output": str(out), "model_final": str(final) if final.exists() else None,
                          "best_model": str(best_dir) if (best_dir / "model.pth").exists() else None,
                          "last_checkpoint": ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None,
                          "config": str(out / "config.yaml"), "log": str(out / "train.log"),
                          "metrics": str(metrics_path)},
                "wall_time_s": round(time.perf_counter() - t_start, 2),
                "train_args": {k: v for k, v in asdict(spec).items() if k != "init_meta"},
            }
            atomic_write_json(result_path, res)
            return res

        if main:
            write_result("running", last_iter=start_iter)
        try:
            loop.train(start_iter, spec.iters)
        except FloatingPointError as e:
            last = ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None
            msg = (f"training stopped, it diverged (NaN/inf): {str(e).rstrip('.')}. Nothing was saved after it; the last good checkpoint is "
                   f"{last or 'none (no checkpoint was written yet)'}. Try a lower learning rate, norm='GN', "
                   "or gradient clipping.")
            logger.error(msg)
            if main:
                write_result("failed", msg, last_iter=loop.iter)
            raise TrainingDivergedError(msg) from None
        except BaseException as e:
            if main:
                write_result("failed", f"{type(e).__name__}: {e}", last_iter=loop.iter)
            raise
        done_iter = loop.iter  # number of finished iterations
        if main:
            if not (out / "model_final.pth").exists() or eval_hook.stopped_early:
                ckpt.save("model_final", iteration=done_iter - 1)
            if not (best_dir / "model.pth").exists():  # no val split: the final weights are the best we know
                save_best(done_iter, {"iter": done_iter})
            res = write_result("stopped_early" if eval_hook.stopped_early else "done", last_iter=done_iter)
        comm.synchronize()
        return res if main else None


# ------------------------------------------------------------------------ several processes
def _cpu_worker(local_rank: int, world_size: int, dist_url: str, spec: TrainSpec) -> None:
    import torch.distributed as dist

    from ._compat import import_detectron2 as _imp

    _imp()
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=local_rank)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    comm.synchronize()
    try:
        train_main(spec)
    finally:
        dist.destroy_process_group()


def launch_training(spec: TrainSpec) -> dict:
    """Run ``train_main`` in ``spec.num_processes`` processes and return ``train_result.json``."""
    n = int(spec.num_processes)
    if n <= 1:
        return train_main(spec)
    if spec.device.startswith("cuda"):
        from detectron2.engine import launch

        if torch.cuda.device_count() < n:
            raise ValueError(f"num_processes={n} but only {torch.cuda.device_count()} GPUs are visible")
        launch(train_main, n, dist_url="auto", args=(spec,))
    else:
        import torch.multiprocessing as mp
        from detectron2.engine.launch import _find_free_port

        url = f"tcp://127.0.0.1:{_find_free_port()}"
        mp.spawn(_cpu_worker, nprocs=n, args=(n, url, spec), daemon=False)
    return json.loads((Path(spec.output) / "train_result.json").read_text())
