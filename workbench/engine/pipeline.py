"""Run one step (``Global.mode``: train, evaluate or predict) from a loaded config dict.

``run_config(cfg)`` takes what ``workbench.config.load_config`` returns and calls the model
facade of ``Global.model`` (any registered family). Defaults, PaddleX-style:

* evaluate: weights ``Evaluate.weight_path``, else ``<output>/best_model/model.pth`` when it
  exists, else ``<output>/model_final.pth``; writes ``<output>/evaluate_result.json``;
* predict: weights from ``Predict.model_dir``, else ``<output>/best_model``; writes an overlay
  image and a JSON per input image into ``<output>/predict/`` and ``<output>/predict_result.json``.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..utils.io import atomic_write_json


def _num_processes(device: str, requested: int) -> int:
    d = str(device).lower()
    if requested > 1:
        return requested
    if d.startswith(("gpu:", "cuda:")) and "," in d:
        return len([x for x in d.split(":", 1)[1].split(",") if x.strip()])
    return 1


def default_eval_weights(output: Path) -> Path:
    best = output / "best_model" / "model.pth"
    if best.is_file():
        return best
    final = output / "model_final.pth"
    if final.is_file():
        return final
    raise FileNotFoundError(f"no weights to evaluate: neither {best} nor {final} exists "
                            "(train first, or set Evaluate.weight_path)")


def run_config(cfg: dict) -> dict:
    from ..models import create_model

    g = cfg["Global"]
    mode = g["mode"]
    name = g["model"]
    output = Path(g.get("output") or "output")
    device = g.get("device")
    if mode == "train":
        t = cfg["Train"]
        if not g.get("dataset_dir"):
            raise ValueError("Global.dataset_dir is required for training")
        model = create_model(name, weights=t.get("pretrain_weight_path"), device=_device(device))
        return model.train(
            g["dataset_dir"], epochs_iters=t["epochs_iters"], batch_size=t["batch_size"], output=str(output),
            learning_rate=t["learning_rate"], input_size=t["input_size"], resume=t["resume"],
            resume_path=t.get("resume_path"), eval_interval=t["eval_interval"], save_interval=t["save_interval"],
            log_interval=t["log_interval"], warmup_steps=t["warmup_steps"],
            early_stop_patience=t.get("early_stop_patience"), amp=t["amp"], num_workers=t["num_workers"],
            num_processes=_num_processes(device, t["num_processes"]), depth=t.get("depth"), norm=t.get("norm"),
            seed=g.get("seed", 0))
    if mode == "evaluate":
        e = cfg["Evaluate"]
        if not g.get("dataset_dir"):
            raise ValueError("Global.dataset_dir is required for evaluation")
        weights = e.get("weight_path") or str(default_eval_weights(output))
        model = create_model(name, weights=weights, device=_device(device))
        return model.evaluate(g["dataset_dir"], output=str(output), batch_size=e.get("batch_size", 1))
    if mode == "predict":
        p = cfg["Predict"]
        if not p.get("input"):
            raise ValueError("Predict.input is required (an image, a folder or a list of images)")
        model_dir = p.get("model_dir") or str(output / "best_model")
        model = create_model(name, weights=model_dir, device=_device(device))
        out_dir = output / "predict"
        t0 = time.perf_counter()
        items = []
        for r in model.predict(p["input"], batch_size=p["batch_size"], threshold=p["threshold"],
                               mask_threshold=p["mask_threshold"]):
            img = r.save_to_img(out_dir)
            js = r.save_to_json(out_dir)
            items.append({"input_path": r.input_path, "instances": len(r), "image": str(img), "json": str(js)})
        res = {"done_flag": True, "model_name": name, "model_dir": model_dir, "input": p["input"],
               "output_dir": str(out_dir), "num_images": len(items), "results": items,
               "wall_time_s": round(time.perf_counter() - t0, 2)}
        atomic_write_json(output / "predict_result.json", res)
        return res
    raise ValueError(f"run_config handles Global.mode train, evaluate and predict, not {mode!r}")


def _device(device: str | None) -> str | None:
    if device is None:
        return None
    d = str(device).lower()
    if "," in d:  # gpu:0,1 -> one process per listed GPU
        return d.split(":", 1)[0]
    return d
