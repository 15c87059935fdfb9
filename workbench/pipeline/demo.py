"""The demo chain: the six steps on the bundled demo data, planned once, run two ways.

``demo_plan(output, ...)`` gives, per step of ``DEMO_CHAIN`` (convert → check → split → train →
evaluate → predict), the parameters of that step's notebook, chained through ``output``. ``run_demo``
executes the plan either as the step notebooks (``notebooks=True``: executed copies in
``output/notebooks``, as ``make demo`` does) or as the same steps in plain Python calls, each fed
the very parameters its notebook would get. The demo data is copied first; ``data/`` is never
changed. ``pipeline_result.json`` sums the run up.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "data" / "demo_labelme"


# ------------------------------------------------------------------------ the steps in Python
def _convert(p: dict) -> dict:
    from ..data.labelme import convert_labelme

    convert_labelme(p["labelme_dir"], p["dataset_dir"])
    return {"dataset_dir": p["dataset_dir"]}


def _check(p: dict) -> dict:
    from ..data.check import check_dataset

    r = check_dataset(p["dataset_dir"], p["output_dir"])
    if not r.check_pass:
        raise ValueError(f"the demo dataset failed its check; see {p['output_dir']}")
    return {"check_pass": r.check_pass, "result": str(Path(p["output_dir"]) / "check_dataset_result.json")}


def _split(p: dict) -> dict:
    from ..data.split import split_dataset

    val = p.get("val_percent", 20)
    parts = split_dataset(p["dataset_dir"], 100 - val, val, seed=p.get("seed", 0))
    return {k: len(v.images) for k, v in parts.items()}


def _train(p: dict) -> dict:
    from ..models import create_model

    m = create_model(p["model_name"], weights=p.get("weights"), device=p.get("device"), **p.get("model_options", {}))
    kw = {k: p[k] for k in ("epochs_iters", "batch_size", "learning_rate", "input_size") if p.get(k) is not None}
    res = m.train(p["dataset_dir"], output=p["output_dir"], **kw, **p.get("train_options", {}))
    return {"result": str(Path(res["paths"]["output"]) / "train_result.json"), "status": res["status"]}


def _evaluate(p: dict) -> dict:
    from ..models import create_model

    m = create_model(p["model_name"], weights=p["model_dir"], device=p.get("device"))
    ev = m.evaluate(p["dataset_dir"], output=p["output_dir"], split=p.get("split", "val"))
    return {
        "result": str(Path(p["output_dir"]) / "evaluate_result.json"),
        "segm_AP": ev["metrics"]["segm"]["AP"],
        "bbox_AP": ev["metrics"]["bbox"]["AP"],
    }


def _predict(p: dict) -> dict:
    from ..models import create_model

    m = create_model(p["model_name"], weights=p["model_dir"], device=p.get("device"))
    n = 0
    for r in m.predict(p["inputs"], threshold=p.get("threshold", 0.5), mask_threshold=p.get("mask_threshold", 0.5)):
        r.save_to_img(p["output_dir"])
        r.save_to_json(p["output_dir"])
        n += 1
    return {"output": p["output_dir"], "images": n}


@dataclass(frozen=True)
class DemoStep:
    key: str
    notebook: str
    title: str
    run: Callable[[dict], dict]


DEMO_CHAIN = (
    DemoStep("convert", "01_convert_labelme", "convert LabelMe -> COCO", _convert),
    DemoStep("check", "02_check_data", "check the dataset", _check),
    DemoStep("split", "03_split", "split train/val 80/20 (seed 0)", _split),
    DemoStep("train", "04_train", "train", _train),
    DemoStep("evaluate", "05_evaluate", "evaluate on the val split", _evaluate),
    DemoStep("predict", "06_predict", "predict", _predict),
)


# The demo's training recipe (see the README's "The demo" section): chosen so that, on a 2-core CPU,
# training from scratch reaches a visible result on the 8 demo images in a few minutes.
DEMO_RECIPE: dict = {
    "model": "MaskRCNN-ResNet50-FPN",
    "epochs_iters": 650,
    "gpu_epochs_iters": 3000,
    "batch_size": 1,
    "learning_rate": 1e-3,
    "input_size": 320,
    "model_options": {
        "depth": 18,
        "d2_overrides": {
            "MODEL.FPN.OUT_CHANNELS": 128,
            "MODEL.ROI_MASK_HEAD.CONV_DIM": 128,
            "MODEL.ROI_MASK_HEAD.NUM_CONV": 2,
            "MODEL.ROI_BOX_HEAD.FC_DIM": 512,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN": 500,
            "MODEL.RPN.POST_NMS_TOPK_TEST": 300,
            "MODEL.ANCHOR_GENERATOR.SIZES": [[16], [32], [64], [128], [256]],
            "TEST.DETECTIONS_PER_IMAGE": 100,
            "INPUT.RANDOM_FLIP": "none",
            "SOLVER.LR_SCHEDULER_NAME": "WarmupCosineLR",
        },
    },
    "train_options": {"optimizer": "AdamW", "warmup_steps": 50, "log_interval": 20},
}


def demo_plan(
    output: str | Path,
    model: str = "MaskRCNN-ResNet50-FPN",
    epochs_iters: int = 2,
    batch_size: int = 2,
    input_size: int = 320,
    model_options: dict | None = None,
    train_options: dict | None = None,
    learning_rate: float | None = None,
    **extra: dict,
) -> dict[str, dict]:
    """Per step key, the parameters of its notebook, chained through ``output``."""
    out = Path(output).resolve()
    dataset_dir, train_dir = str(out / "dataset"), out / "train"
    plan = {
        "convert": {"labelme_dir": str(out / "labelme"), "dataset_dir": dataset_dir},
        "check": {"dataset_dir": dataset_dir, "output_dir": str(out / "check")},
        "split": {"dataset_dir": dataset_dir},
        "train": {
            "dataset_dir": dataset_dir,
            "model_name": model,
            "output_dir": str(train_dir),
            "epochs_iters": epochs_iters,
            "batch_size": batch_size,
            "input_size": input_size,
            "learning_rate": learning_rate,
            "model_options": dict(model_options or {}),
            "train_options": {
                "eval_interval": max(1, epochs_iters),
                "save_interval": max(1, epochs_iters),
                "log_interval": 1,
                **(train_options or {}),
            },
        },
        "evaluate": {
            "dataset_dir": dataset_dir,
            "model_dir": str(train_dir),  # the latest run of train/, train-2/ …: its best_model/
            "model_name": model,
            "output_dir": str(out / "evaluate"),
        },
        "predict": {
            "model_dir": str(train_dir),
            "model_name": model,
            "inputs": str(Path(dataset_dir) / "images"),
            "output_dir": str(out / "predict"),
        },
    }
    by_notebook = {s.notebook: s.key for s in DEMO_CHAIN}
    for name, p in extra.items():
        key = by_notebook.get(name, name)
        if key in plan:
            plan[key].update(p)
    return plan


def demo_recipe(device: str | None = None) -> dict:
    """The demo's training recipe: ``DEMO_RECIPE``, with the longer ``gpu_epochs_iters`` schedule when
    ``device`` (default: the one training would pick) is a GPU."""
    recipe = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEMO_RECIPE.items()}
    gpu_iters = recipe.pop("gpu_epochs_iters")
    if device is None:
        from ..engine.launcher import resolve_device

        device = resolve_device(None)
    if str(device).startswith(("cuda", "gpu")):
        recipe["epochs_iters"] = gpu_iters
        recipe["train_options"].update(eval_interval=gpu_iters // 4, save_interval=gpu_iters // 2)
    return recipe


def run_demo(
    output: str | Path = "runs/demo",
    data: str | Path | None = None,
    model: str | None = None,
    epochs_iters: int | None = None,
    batch_size: int | None = None,
    input_size: int | None = None,
    notebooks: bool = False,
    steps: list[str] | None = None,
    model_options: dict | None = None,
    train_options: dict | None = None,
    notebook_dir: str | Path | None = None,
    verbose: bool = True,
    learning_rate: float | None = None,
    **extra: dict,
) -> dict:
    """Run the demo chain on a copy of ``data`` (default: the bundled demo LabelMe folder).

    Without ``model``, the model trains with the demo recipe (``demo_recipe()``, see ``DEMO_RECIPE``);
    any argument given replaces the recipe's value. With another ``model`` the recipe does not apply
    (its options are the Detectron2 family's): that model trains with its family's defaults and the
    sizes given here (``epochs_iters`` 10, ``batch_size`` 2, ``input_size`` 320 when not given).
    ``epochs_iters=0`` runs the data steps only. ``steps``: step keys or notebook names to run
    (default: all). Returns the summary also written to ``output/pipeline_result.json``; with
    ``notebooks=True`` it lists the executed notebooks.
    """
    recipe = (
        demo_recipe()
        if model is None or model == DEMO_RECIPE["model"]
        else {
            "model": model,
            "epochs_iters": 10,
            "batch_size": 2,
            "input_size": 320,
            "learning_rate": None,
            "model_options": {},
            "train_options": {},
        }
    )
    given = {
        "epochs_iters": epochs_iters,
        "batch_size": batch_size,
        "input_size": input_size,
        "learning_rate": learning_rate,
    }
    recipe.update({k: v for k, v in given.items() if v is not None})
    recipe["model_options"] = {**recipe["model_options"], **(model_options or {})}
    recipe["train_options"] = {**recipe["train_options"], **(train_options or {})}
    model, epochs_iters = recipe["model"], recipe["epochs_iters"]
    out = Path(output)
    src = Path(data) if data else DEMO_DATA
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: demo data folder not found")
    plan = demo_plan(
        out,
        model,
        epochs_iters,
        recipe["batch_size"],
        recipe["input_size"],
        recipe["model_options"],
        recipe["train_options"],
        learning_rate=recipe["learning_rate"],
        **extra,
    )
    work = Path(plan["convert"]["labelme_dir"])
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    if not notebooks and Path(plan["convert"]["dataset_dir"]).exists():
        shutil.rmtree(plan["convert"]["dataset_dir"])
    chain = [s for s in DEMO_CHAIN if not steps or s.key in steps or s.notebook in steps]
    if epochs_iters <= 0:
        chain = [s for s in chain if s.key in ("convert", "check", "split")]
    summary: dict = {"output": str(out), "source": str(src), "model": model, "recipe": recipe, "steps": {}}
    t0 = time.time()
    for i, step in enumerate(chain, 1):
        if verbose:
            print(f"== {i}/{len(chain)} {step.title}" + (f" ({step.notebook})" if notebooks else ""), flush=True)
        t = time.time()
        if notebooks:
            from ..notebooks import NOTEBOOK_DIR, run_notebook

            nb = Path(notebook_dir or NOTEBOOK_DIR) / f"{step.notebook}.ipynb"
            summary["steps"][step.key] = {"notebook": str(run_notebook(nb, plan[step.key], out / "notebooks"))}
        else:
            summary["steps"][step.key] = step.run(plan[step.key])
        summary["steps"][step.key]["seconds"] = round(time.time() - t, 1)
    summary["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(out / "pipeline_result.json", summary)
    if verbose:
        print(f"demo pipeline done in {summary['seconds']} s; summary in {out / 'pipeline_result.json'}")
    return summary
