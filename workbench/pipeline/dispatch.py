"""``Global.mode`` -> its handler, for every model family (the CLI only parses and calls this).

Defaults, PaddleX-style: evaluate reads ``Evaluate.weight_path``, else the run directory's best
weights (``<output>/best_model/model.pth``, else ``model_final.pth``) and writes
``<output>/evaluate_result.json``, where ``<output>`` is the latest run of the training series
``Global.output`` names (``output``, ``output-2`` …: ``engine.run_dir.latest_run``), as for
predict and export; predict reads ``Predict.model_dir``, else ``<output>/best_model``,
and writes an overlay image and a JSON per input image into ``<output>/predict/`` (a folder's
subfolders too, ``Predict.recursive``, mirrored: ``a/x_res.png`` for ``<input>/a/x.png``) and
``<output>/predict_result.json`` (unreadable images skipped, listed in its ``failed``); export
writes ``<output>/inference/model.onnx`` and ``<output>/export_result.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError, DatasetError
from ..engine.launcher import resolve_device
from ..engine.run_dir import RunDir, latest_run
from ..utils.io import atomic_write_json


def _need(value, key: str, what: str):
    if not value:
        raise ConfigError(f"{key} is required {what} (add -o {key}=...)")
    return value


def run_check_dataset(cfg: dict):
    """Optional LabelMe conversion and re-split, then the check."""
    from ..data.check import check_dataset

    g, cd = cfg["Global"], cfg["CheckDataset"]
    dataset_dir = Path(_need(g["dataset_dir"], "Global.dataset_dir", "to check a dataset"))
    if cd["convert"]["enable"]:
        from ..data.labelme import convert_labelme

        convert_labelme(dataset_dir, None)
    if cd["split"]["enable"]:
        from ..data.split import split_dataset

        tp, vp = cd["split"]["train_percent"], cd["split"]["val_percent"]
        if tp is None or vp is None:
            raise ConfigError(
                "CheckDataset.split.enable=True needs CheckDataset.split.train_percent and "
                "CheckDataset.split.val_percent"
            )
        split_dataset(dataset_dir, tp, vp, seed=cd["split"]["seed"])
    return check_dataset(dataset_dir, g["output"], num_samples=cd["num_samples"])


def _device(device: str | None) -> str | None:
    return None if device is None else resolve_device(device)


TRAIN_KEYS = (
    "epochs_iters",
    "batch_size",
    "learning_rate",
    "input_size",
    "resume",
    "resume_path",
    "eval_interval",
    "save_interval",
    "log_interval",
    "warmup_steps",
    "early_stop_patience",
    "amp",
    "num_workers",
    "num_processes",
)
FAMILY_KEYS = ("depth", "norm")  # passed only when set: they are options of one family


def run_train(cfg: dict) -> dict:
    from ..models import create_model

    g, t = cfg["Global"], cfg["Train"]
    dataset_dir = _need(g.get("dataset_dir"), "Global.dataset_dir", "for training")
    model = create_model(g["model"], weights=t.get("pretrain_weight_path"), device=_device(g.get("device")))
    kwargs = {k: t[k] for k in TRAIN_KEYS if k in t}
    kwargs.update({k: t[k] for k in FAMILY_KEYS if t.get(k) is not None})
    return model.train(
        dataset_dir, output=g.get("output") or "output", device=g.get("device"), seed=g.get("seed", 0), **kwargs
    )


def run_evaluate(cfg: dict) -> dict:
    from ..models import create_model

    g, e = cfg["Global"], cfg["Evaluate"]
    dataset_dir = _need(g.get("dataset_dir"), "Global.dataset_dir", "for evaluation")
    output = latest_run(g.get("output") or "output")  # Global.output of train: its latest run
    weights = e.get("weight_path") or str(RunDir(output).eval_weights())
    model = create_model(g["model"], weights=weights, device=_device(g.get("device")))
    return model.evaluate(dataset_dir, output=str(output), batch_size=e.get("batch_size", 1))


def run_predict(cfg: dict) -> dict:
    from ..models import create_model

    g, p = cfg["Global"], cfg["Predict"]
    _need(p.get("input"), "Predict.input", "(an image, a folder, a list of images, a video, a camera index or a URL)")
    output = latest_run(g.get("output") or "output")  # Global.output of train: its latest run
    model_dir = p.get("model_dir") or str(RunDir(output).best_dir)
    model = create_model(g["model"], weights=model_dir, device=_device(g.get("device")))
    out_dir = output / "predict"
    t0 = time.perf_counter()
    items = []
    preds = model.predict(
        p["input"],
        batch_size=p["batch_size"],
        threshold=p["threshold"],
        mask_threshold=p["mask_threshold"],
        recursive=p.get("recursive", True),
        frame_stride=p.get("frame_stride", 1),
        start_s=p.get("start_s"),
        end_s=p.get("end_s"),
    )
    videos: dict[str, Any] = {}  # output stem -> VideoWriter: a video's frames go into <stem>_res.mp4 (+ .jsonl)
    try:
        for r in preds:  # outputs by r.output_stem: <output>/predict/a/x_res.png for <input>/a/x.png
            if r.page_index is not None:
                if r.output_stem not in videos:
                    from ..engine.video import VideoWriter

                    stem = out_dir / f"{r.output_stem}_res"
                    videos[r.output_stem] = VideoWriter(
                        stem.with_suffix(".mp4"), preds.fps or 25.0, stem.with_suffix(".jsonl")
                    )
                videos[r.output_stem].add(r)
                continue
            img = r.save_to_img(out_dir)
            js = r.save_to_json(out_dir)
            items.append({"input_path": r.input_path, "instances": len(r), "image": str(img), "json": str(js)})
    except BaseException:
        for w in videos.values():
            w.abort()
        raise
    for stem, w in videos.items():
        w.close()
        items.append(
            {
                "input_path": str(p["input"]) if len(videos) == 1 else stem,
                "frames": w.frames,
                "instances": w.instances,
                "video": str(w.path),
                "json": str(w.json_path),
            }
        )
    res = {
        "done_flag": bool(items) or not preds.failed,
        "model_name": g["model"],
        "model_dir": model_dir,
        "input": p["input"],
        "output_dir": str(out_dir),
        "num_images": len(items),
        "results": items,
        "num_failed": len(preds.failed),
        "failed": preds.failed,  # unreadable images, skipped: [{"input": path, "error": what}]
        "wall_time_s": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(output / "predict_result.json", res)
    if preds.failed and not items:
        f = preds.failed[0]
        raise DatasetError(
            f"{p['input']}: none of the {len(preds.failed)} images could be read ({f['input']}: {f['error']}"
            f"{' …' if len(preds.failed) > 1 else ''}); see {output / 'predict_result.json'}"
        )
    return res


def resolve_model_dir(model_dir: str, model_name: str | None = None) -> tuple[str, str]:
    """``(model name, weights)`` for a run directory, its ``best_model`` folder or a weights file
    (what ``workbench pre-label MODEL_DIR`` is given). A run directory (the latest run of its
    series, ``engine.run_dir.latest_run``) gives its best weights, else
    ``model_final.pth`` (``RunDir.eval_weights``, as evaluate); a folder or file the weights
    ``Predict.model_dir`` names (``engine.weights.resolve_weights``). The model name: ``model_name``,
    else ``Global.model`` of the ``config.yaml`` beside the weights or one folder up, else the
    ``model_name`` the checkpoint carries."""
    from ..engine.weights import checkpoint_meta, read_weights_file, resolve_weights

    p = latest_run(model_dir)
    run = RunDir(p)
    if p.is_dir() and (run.best_weights.is_file() or run.final.is_file()):
        weights = run.eval_weights()
    else:
        weights = resolve_weights(p)
    if model_name:
        return model_name, str(weights)
    import yaml

    for cfg_path in (weights.parent / RunDir.CONFIG, weights.parent.parent / RunDir.CONFIG):
        if cfg_path.is_file():
            try:
                name = (yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}).get("Global", {}).get("model")
            except yaml.YAMLError:
                name = None
            if name:
                return str(name), str(weights)
    meta = checkpoint_meta(read_weights_file(weights)) or {}
    if meta.get("model_name"):
        return str(meta["model_name"]), str(weights)
    raise ConfigError(
        f"{model_dir}: cannot tell which model these weights are for (no config.yaml beside them "
        "and no model name in the checkpoint); name it with --model NAME"
    )


def run_export(cfg: dict) -> dict:
    """ONNX of the trained model's inference graph (masks included), for families that have one."""
    from ..engine.errors import NotAvailableError
    from ..engine.model import BaseModel
    from ..models import create_model

    g = cfg["Global"]
    kind = type(create_model(g["model"], device="cpu"))
    if kind.export is BaseModel.export:
        raise NotAvailableError(f"Global.mode=export: {g['model']} ({kind.family} family) has no ONNX export yet")
    output = latest_run(g["output"])
    weights = cfg["Predict"]["model_dir"] or str(RunDir(output).best_dir)
    model = create_model(g["model"], weights=weights, device="cpu")
    path = model.export(output / "inference" / "model.onnx")
    res = {"done_flag": True, "model_name": g["model"], "weights": weights, "onnx": str(path)}
    atomic_write_json(output / "export_result.json", res)
    print(f"exported {g['model']} to {path}")
    return res


MODES: dict[str, Callable[[dict], object]] = {
    "check_dataset": run_check_dataset,
    "train": run_train,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "export": run_export,
}


def run_config(cfg: dict):
    """Run the step ``cfg["Global"]["mode"]`` names."""
    mode = cfg["Global"]["mode"]
    if mode not in MODES:
        raise ConfigError(f"Global.mode must be one of {', '.join(MODES)}, not {mode!r}")
    return MODES[mode](cfg)
