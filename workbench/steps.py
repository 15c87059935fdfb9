"""The step pipeline: config-driven modes (``Global.mode``) and the demo run over all steps."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .utils.io import atomic_write_json


def run_check_dataset(cfg: dict):
    """``Global.mode=check_dataset``: optional LabelMe conversion and re-split, then the check."""
    from .data.check import check_dataset

    g, cd = cfg["Global"], cfg["CheckDataset"]
    if not g["dataset_dir"]:
        raise ValueError("Global.dataset_dir is not set (add -o Global.dataset_dir=DIR)")
    dataset_dir = Path(g["dataset_dir"])
    if cd["convert"]["enable"]:
        from .data.labelme import convert_labelme

        convert_labelme(dataset_dir, None)
    if cd["split"]["enable"]:
        from .data.split import split_dataset

        tp, vp = cd["split"]["train_percent"], cd["split"]["val_percent"]
        if tp is None or vp is None:
            raise ValueError("CheckDataset.split.enable=True needs CheckDataset.split.train_percent and "
                             "CheckDataset.split.val_percent")
        split_dataset(dataset_dir, tp, vp, seed=cd["split"]["seed"])
    return check_dataset(dataset_dir, g["output"], num_samples=cd["num_samples"])


def run_config(cfg: dict):
    mode = cfg["Global"]["mode"]
    if mode == "check_dataset":
        return run_check_dataset(cfg)
    if mode == "export":
        return run_export(cfg)
    try:
        from .engine.pipeline import run_config as run_model_mode
    except ImportError as e:
        raise NotImplementedError(f"Global.mode={mode} is not available in this build ({e})") from e
    return run_model_mode(cfg)


def run_export(cfg: dict) -> dict:
    """``Global.mode=export``: ONNX of the trained model's inference graph (masks included) into
    ``<output>/inference/model.onnx``. Built for the Mask-RT-DETR family."""
    from .models import create_model, family_of

    g = cfg["Global"]
    if family_of(g["model"]) != "mask_rtdetr":
        raise NotImplementedError(f"Global.mode=export: ONNX export is built for the Mask-RT-DETR models; "
                                  f"{g['model']} ({family_of(g['model'])} family) has none yet")
    output = Path(g["output"])
    weights = cfg["Predict"]["model_dir"] or str(output / "best_model")
    model = create_model(g["model"], weights=weights, device="cpu")
    path = model.export_onnx(output / "inference" / "model.onnx")
    res = {"done_flag": True, "model_name": g["model"], "weights": weights, "onnx": str(path)}
    atomic_write_json(output / "export_result.json", res)
    print(f"exported {g['model']} to {path}")
    return res


def run_demo(output: str | Path = "runs/demo", data: str | Path | None = None,
             model: str = "MaskRCNN-ResNet50-FPN", iters: int = 10, input_size: int = 320,
             device: str = "cpu") -> dict:
    """The whole step pipeline in Python on the bundled real LabelMe demo data:
    convert -> split -> check -> train (briefly) -> evaluate -> predict.

    The demo data is copied first; nothing in ``data/`` is modified. Each step writes its own
    folder under ``output`` and ``pipeline_result.json`` sums them up.
    """
    from .data.check import check_dataset
    from .data.labelme import convert_labelme
    from .data.split import split_dataset

    output = Path(output)
    data = Path(data) if data else Path(__file__).resolve().parents[1] / "data" / "demo_labelme"
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: demo data folder not found")
    summary: dict = {"output": str(output), "source": str(data), "model": model, "steps": {}}
    t0 = time.time()
    work = output / "labelme"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(data, work)
    dataset_dir = output / "dataset"
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)

    print("== 1/6 convert LabelMe -> COCO", flush=True)
    convert_labelme(work, dataset_dir)
    summary["steps"]["convert"] = {"dataset_dir": str(dataset_dir)}

    print("== 2/6 split train/val 80/20 (seed 0)", flush=True)
    parts = split_dataset(dataset_dir, 80, 20, seed=0)
    summary["steps"]["split"] = {k: len(v.images) for k, v in parts.items()}

    print("== 3/6 check", flush=True)
    r = check_dataset(dataset_dir, output / "check")
    summary["steps"]["check"] = {"check_pass": r.check_pass,
                                 "result": str(output / "check" / "check_dataset_result.json")}
    if not r.check_pass:
        raise ValueError("the demo dataset failed its check; see " + str(output / "check"))

    if iters > 0:
        from .models import create_model

        print(f"== 4/6 train {model} for {iters} iterations at {input_size} px", flush=True)
        m = create_model(model, device=device)
        m.train(dataset_dir, epochs_iters=iters, batch_size=2, output=output / "train",
                     input_size=input_size, eval_interval=iters, save_interval=iters)
        summary["steps"]["train"] = {"result": str(output / "train" / "train_result.json")}

        print("== 5/6 evaluate", flush=True)
        ev = m.evaluate(dataset_dir, output=output / "evaluate")
        summary["steps"]["evaluate"] = {"result": str(output / "evaluate" / "evaluate_result.json"),
                                        "segm_AP": ev["metrics"]["segm"]["AP"], "bbox_AP": ev["metrics"]["bbox"]["AP"]}

        print("== 6/6 predict on the val images", flush=True)
        val = parts["val"]
        pred_dir = output / "predict"
        n = 0
        for res in m.predict([val.image_path(im) for im in val.images], threshold=0.3):
            res.save_to_img(pred_dir)
            res.save_to_json(pred_dir)
            n += 1
        summary["steps"]["predict"] = {"output": str(pred_dir), "images": n}
    summary["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(output / "pipeline_result.json", summary)
    print(f"demo pipeline done in {summary['seconds']} s; summary in {output / 'pipeline_result.json'}")
    return summary
