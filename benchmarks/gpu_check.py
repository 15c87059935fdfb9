"""A ready GPU check: every registered model family trains (AMP), predicts, exports, and every model's
inference latency is timed, in one run of a few minutes.

For each family registered in ``workbench.models.registry`` (its smallest model: the family's smoke
configuration names it, built at full size — no reduced depth, no fewer queries):

1. **train** a few optimizer steps on a small synthetic dataset (``workbench.data.synthetic``, written
   into a temporary folder) with ``amp=True`` on a GPU (AMP is CUDA-only here, so ``amp=False`` on the
   CPU), evaluation on the val split at the end, best weights reloaded — the real ``model.train`` path;
2. **predict** the val images with the trained model (``model.predict``);
3. **export** (``model.export``): a family without export reports ``not available`` (Detectron2 today),
   which is not a failure; an ONNX file is run once with onnxruntime;
4. **latency**: a randomly initialised model with 80 classes (random weights are fine for timing; the
   score threshold is 0 so every model post-processes its full top-100), ``--latency-size`` px square
   input, batch 1, FP32, warm-up then ``--latency-runs`` timed passes (``torch.cuda.synchronize``
   around each on a GPU): ``forward`` = the network with the family's own post-processing on the
   device (comparable with PaddleX's "model inference only" figures); ``infer`` = ``model.infer`` on a
   uint8 image (resize, network, masks pasted and copied to the host, ``Result`` built).

Then, while ``--budget-s`` lasts: the latency of every other model name, and a second, larger model
per family through the train/predict/export stages. Each stage of each model runs in its own
try/except: a failure is recorded (and printed) and the rest still run; the exit code is 1 when any
stage failed. The JSON (``--output``) is rewritten after every stage, so a run stopped by a timeout
still leaves what it measured; the markdown tables (``--markdown``, default: the output with ``.md``)
are printed at the end, ready to paste into docs/benchmarks.md.

    bash benchmarks/gpu_check.sh                          # on a GPU machine: the whole check
    python benchmarks/gpu_check.py --device cpu --tiny    # the CPU dry run (tiny sizes and counts)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# PaddleX's published figures for its instance-segmentation module: Mask AP on COCO2017 val; GPU
# inference time in ms on an NVIDIA Tesla T4, FP32, "normal mode" (Paddle Inference, no TensorRT), model
# inference only (no pre- or post-processing); CPU inference time in ms on an Intel Xeon Gold 5117 @
# 2.00 GHz, 8 threads, FP32 (None where the page prints "nan" or "-"); model storage size in MB.
# Source: PaddlePaddle/PaddleX, docs/module_usage/tutorials/cv_modules/instance_segmentation.en.md, the
# "Model List Details" table, at commit 35198406191db63463b69ed3bb27afe938aea45c (the 3.0-rc documentation:
# its model links point at paddle3.0rc0). MaskRCNN-ResNet50-vd-SSLDv2-FPN is not in that table (None).
# Other releases of the same page publish other timings: the 3.0-beta2 page gives Mask-RT-DETR-S/M/L/X/H
# 33.5007 / 36.8329 / 46.5059 / 75.755 / 132.693 ms and "-" for the R-CNNs; the current site gives
# Mask-RT-DETR-H 180.83, -L 113.20, Cascade-MaskRCNN-ResNet50-FPN 136.79. Mask-RT-DETR-S's 33.5007 is the
# one figure the rc table carries over from beta2 (a single number, not "normal / high-performance").
PADDLEX_T4 = {
    "Cascade-MaskRCNN-ResNet50-FPN": {"mask_ap": 36.3, "gpu_ms": 141.69, "cpu_ms": None, "size_mb": 254.8},
    "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN": {"mask_ap": 39.1, "gpu_ms": 147.62, "cpu_ms": None, "size_mb": 254.7},
    "Mask-RT-DETR-H": {"mask_ap": 50.6, "gpu_ms": 172.36, "cpu_ms": 1615.75, "size_mb": 449.9},
    "Mask-RT-DETR-L": {"mask_ap": 45.7, "gpu_ms": 88.18, "cpu_ms": 1090.84, "size_mb": 113.6},
    "Mask-RT-DETR-M": {"mask_ap": 42.7, "gpu_ms": 78.69, "cpu_ms": None, "size_mb": 66.6},
    "Mask-RT-DETR-S": {"mask_ap": 41.0, "gpu_ms": 33.5007, "cpu_ms": None, "size_mb": 51.8},
    "Mask-RT-DETR-X": {"mask_ap": 47.5, "gpu_ms": 114.16, "cpu_ms": 1240.92, "size_mb": 237.5},
    "MaskRCNN-ResNet50-FPN": {"mask_ap": 35.6, "gpu_ms": 118.30, "cpu_ms": None, "size_mb": 157.5},
    "MaskRCNN-ResNet50-vd-FPN": {"mask_ap": 36.4, "gpu_ms": 118.34, "cpu_ms": None, "size_mb": 157.5},
    "MaskRCNN-ResNet50": {"mask_ap": 32.8, "gpu_ms": 228.83, "cpu_ms": None, "size_mb": 128.7},
    "MaskRCNN-ResNet101-FPN": {"mask_ap": 36.6, "gpu_ms": 148.14, "cpu_ms": None, "size_mb": 225.4},
    "MaskRCNN-ResNet101-vd-FPN": {"mask_ap": 38.1, "gpu_ms": 151.12, "cpu_ms": None, "size_mb": 225.1},
    "MaskRCNN-ResNeXt101-vd-FPN": {"mask_ap": 39.5, "gpu_ms": 237.55, "cpu_ms": None, "size_mb": 370.0},
}
PADDLEX_SOURCE = (
    "PaddlePaddle/PaddleX docs/module_usage/tutorials/cv_modules/instance_segmentation.en.md "
    "@35198406191db63463b69ed3bb27afe938aea45c (T4, FP32, normal mode, model inference only)"
)

# The second, larger model a family trains when the budget allows (else: the family's last name).
SECOND_MODEL = {"detectron2": "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN", "mask_rtdetr": "Mask-RT-DETR-L"}
# create_model options for timing a randomly initialised model: Detectron2's 0.05 test threshold would drop
# every random detection before the mask head runs; with 0 its top-100 get masks, like Mask-RT-DETR's.
LATENCY_OPTIONS = {"detectron2": {"d2_overrides": {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}}}
# With --tiny (the CPU dry run) every model is built with its family's smoke options (the smallest working
# configuration: a ResNet-18 body, 20 queries …) and these: fewer test-time proposals and detections, so
# that a 2-core CPU runs the whole chain in seconds. The full run builds every model at full size.
TINY_OPTIONS = {
    "detectron2": {
        "d2_overrides": {
            "MODEL.RPN.PRE_NMS_TOPK_TEST": 200,
            "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
            "TEST.DETECTIONS_PER_IMAGE": 10,
        }
    }
}
LATENCY_CLASSES = 80

# sizes: (full run, --tiny)
SIZES = {
    "num_train": (16, 4),
    "num_val": (4, 2),
    "image_size": (640, 96),  # synthetic images and the training input size (a multiple of 32)
    "train_steps": (20, 1),  # optimizer steps to train, whatever the family's unit
    "latency_size": (640, 128),
}

FAILED = "failed"


# ---------------------------------------------------------------------------------------------- helpers
def _now() -> float:
    return time.perf_counter()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def model_options(name: str, tiny: bool, latency: bool = False) -> dict:
    """``create_model`` options for ``name``: nothing at full size; with ``tiny`` the family's smoke options
    and ``TINY_OPTIONS``; for latency also ``LATENCY_OPTIONS`` (nested dicts merged, not replaced)."""
    from workbench.models import family_info, family_of

    fam = family_of(name)
    layers = [LATENCY_OPTIONS.get(fam, {})] if latency else []
    if tiny:
        smoke = {k: v for k, v in family_info(name).smoke.get("model", {}).items() if k != "input_size"}
        layers = [smoke, TINY_OPTIONS.get(fam, {})] + layers
    out: dict = {}
    for layer in layers:
        for k, v in layer.items():
            out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _error(e: BaseException) -> dict:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return {"status": FAILED, "error": f"{type(e).__name__}: {e}", "traceback": "".join(tb[-6:])}


class Budget:
    """Seconds left for the optional stages (the required ones always run)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.t0 = _now()

    def elapsed(self) -> float:
        return _now() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, estimate: float) -> bool:
        return self.left() >= estimate


class Report:
    """The JSON document and its markdown tables, rewritten (atomically) after every stage."""

    def __init__(self, path: Path, md_path: Path, doc: dict):
        self.path = path
        self.md_path = md_path
        self.doc = doc
        self.t0 = _now()

    def save(self) -> None:
        self.doc["budget"]["elapsed_s"] = round(_now() - self.t0, 1)
        for path, text in (
            (self.path, json.dumps(self.doc, indent=2, default=str) + "\n"),
            (self.md_path, markdown(self.doc)),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def stage(report: Report, entry: dict, key: str, label: str, fn: Callable[[], dict]) -> dict:
    """Run one stage: ``entry[key]`` = its result (``status`` ok / exported / not available / failed)."""
    print(f"[{label}] ...", flush=True)
    t = _now()
    try:
        res = fn()
        res.setdefault("status", "ok")
    except Exception as e:  # noqa: BLE001 - one failure is reported, the other stages still run
        res = _error(e)
    res["stage_s"] = round(_now() - t, 3)
    entry[key] = res
    if res["status"] == FAILED:
        report.doc["failures"].append(f"{label}: {res['error']}")
        print(f"[{label}] FAILED: {res['error']}\n{res.get('traceback', '')}", flush=True)
    else:
        brief = {k: v for k, v in res.items() if k not in ("traceback", "path", "run_dir") and not isinstance(v, dict)}
        print(f"[{label}] {brief}", flush=True)
    report.save()
    return res


# ---------------------------------------------------------------------------------------------- environment
def environment(device: str) -> dict:
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device,
        "device_name": "CPU",
        "gpu_memory_mb": None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(device_name=p.name, gpu_memory_mb=round(p.total_memory / 2**20), capability=f"{p.major}.{p.minor}")
    for mod in ("torchvision", "detectron2", "onnx", "onnxruntime"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - report what is missing, the families that need it fail later
            env[mod] = f"not importable ({type(e).__name__})"
    try:
        env["workbench_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except Exception:  # noqa: BLE001 - not a git checkout
        env["workbench_commit"] = None
    return env


# ---------------------------------------------------------------------------------------------- stages
def make_data(out_dir: Path, sz: dict) -> dict:
    from workbench.data.synthetic import make_shapes_dataset

    n = sz["image_size"]
    dss = make_shapes_dataset(out_dir, num_train=sz["num_train"], num_val=sz["num_val"], size=(n, n), seed=0)
    return {
        "dir": str(out_dir),
        "train_images": len(dss["train"].images),
        "val_images": len(dss["val"].images),
        "instances": sum(len(d.instances) for d in dss.values()),
        "image_size": n,
    }


def train_kwargs(info, sz: dict, device: str) -> dict:
    """``model.train`` arguments for about ``train_steps`` optimizer steps, in the family's unit."""
    bs = int(info.train_defaults.get("batch_size", 2))
    steps = sz["train_steps"]
    if info.unit == "epochs":
        per_epoch = max(1, math.ceil(sz["num_train"] / bs))
        units = max(1, math.ceil(steps / per_epoch))
    else:
        units = steps
    return dict(
        epochs_iters=units,
        batch_size=bs,
        input_size=sz["image_size"],
        eval_interval=units,
        save_interval=units,
        log_interval=1,
        warmup_steps=max(1, steps // 4),
        amp=device.startswith("cuda"),
        progress=False,
        save_training_state=False,
        max_to_keep=1,
        seed=0,
    )


def _read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in recs if r.get("type") == "train"], [r for r in recs if r.get("type") == "eval"]


def do_train(model, info, data_dir: Path, run_dir: Path, sz: dict, device: str) -> dict:
    kw = train_kwargs(info, sz, device)
    _peak_reset(device)
    t = _now()
    res = model.train(data_dir, output=run_dir, **kw)
    seconds = _now() - t
    if res.get("status") not in ("done", "stopped_early"):
        raise RuntimeError(f"training ended with status {res.get('status')!r}: {res.get('error')}")
    train, evals = _read_metrics(run_dir)
    if not train:
        raise RuntimeError(f"training wrote no train record to {run_dir / 'metrics.jsonl'}")
    losses = [r["total_loss"] for r in train]
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"non-finite training loss: {losses}")
    step_times = [r["time"] for r in train if r["iter"] > 1] or [r["time"] for r in train]
    final = res.get("final_metrics") or {}
    return {
        "train_status": res.get("status"),
        "amp": kw["amp"],
        "unit": info.unit,
        "epochs_iters": kw["epochs_iters"],
        "batch_size": kw["batch_size"],
        "input_size": kw["input_size"],
        "iterations": int(res.get("iterations") or train[-1]["iter"]),
        "seconds": round(seconds, 3),
        "s_per_iter": round(statistics.median(step_times), 4),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "segm_AP": _round(final.get("segm_AP", evals[-1].get("segm_AP") if evals else None), 4),
        "peak_gpu_mb": _peak_mb(device),
        "run_dir": str(run_dir),
    }


def do_predict(model, data_dir: Path, device: str) -> dict:
    paths = sorted(str(p) for p in (data_dir / "images").glob("val_*.png"))
    if not paths:
        raise RuntimeError(f"no val images in {data_dir / 'images'}")
    _peak_reset(device)
    times, dets = [], 0
    for p in paths:
        t = _now()
        (r,) = list(model.predict(p, threshold=0.05, progress=False))
        _sync(device)
        times.append(_now() - t)
        dets += len(r.scores)
    steady = times[1:] or times
    return {
        "images": len(paths),
        "detections": int(dets),
        "seconds": round(sum(times), 3),
        "first_image_ms": round(times[0] * 1000, 2),
        "ms_per_image": round(statistics.median(steady) * 1000, 2),
        "peak_gpu_mb": _peak_mb(device),
    }


def _onnx_check(path: Path, size: int) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else (1 if i == 0 else size) for i, d in enumerate(inp.shape)]
    t = _now()
    outs = sess.run(None, {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)})
    ms = (_now() - t) * 1000
    if not all(np.isfinite(np.asarray(o, np.float64)).all() for o in outs if np.asarray(o).dtype.kind == "f"):
        raise RuntimeError("onnxruntime produced non-finite outputs")
    return {"onnxruntime_ms": round(ms, 2), "outputs": [list(np.asarray(o).shape) for o in outs]}


def do_export(model, out_dir: Path) -> dict:
    from workbench.engine.errors import NotAvailableError

    t = _now()
    try:
        path = Path(model.export(out_dir / f"{model.name}.onnx"))
    except NotAvailableError as e:
        return {"status": "not available", "reason": str(e), "seconds": round(_now() - t, 3)}
    res = {"status": "exported", "seconds": round(_now() - t, 3), "path": str(path)}
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    res["size_mb"] = round(sum(p.stat().st_size for p in files) / 2**20, 2)
    if path.suffix == ".onnx" and path.is_file():
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            res["onnxruntime"] = "not installed"
        else:
            res.update(_onnx_check(path, model.input_size))
    return res


# ------------------------------------------------------------------ latency (random weights)
def _forward_detectron2(model, size: int, device: str) -> Callable[[torch.Tensor], object]:
    net = model.build().eval()
    bgr = model.cfg.INPUT.FORMAT == "BGR"

    def run(x):
        img = x[0] * 255.0
        if bgr:
            img = img.flip(0)
        return net([{"image": img, "height": size, "width": size}])

    return run


def _forward_mask_rtdetr(model, size: int, device: str) -> Callable[[torch.Tensor], object]:
    from workbench.models.mask_rtdetr.postprocess import PostProcess

    net = model.build().eval()
    post = PostProcess(num_top_queries=100)
    return lambda x: post(net(x), [(size, size)] * x.shape[0])


FORWARD = {"detectron2": _forward_detectron2, "mask_rtdetr": _forward_mask_rtdetr}


def _time(fn: Callable[[], object], warmup: int, runs: int, device: str) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        _sync(device)
        t = _now()
        fn()
        _sync(device)
        times.append(_now() - t)
    return times


def do_latency(name: str, sz: dict, runs: int, infer_runs: int, device: str) -> dict:
    from workbench.models import create_model, family_of

    fam = family_of(name)
    size = sz["latency_size"]
    _free(device)
    _peak_reset(device)
    t = _now()
    model = create_model(
        name,
        device=device,
        num_classes=LATENCY_CLASSES,
        input_size=size,
        **model_options(name, sz["tiny"], latency=True),
    )
    model.build()
    build_s = _now() - t
    res = {
        "family": fam,
        "size": size,
        "batch": 1,
        "dtype": "float32",
        "weights": "random",
        "runs": runs,
        "warmup": sz["latency_warmup"],
        "build_s": round(build_s, 3),
    }
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        if fam in FORWARD:
            fwd = FORWARD[fam](model, size, device)
            ft = _time(lambda: fwd(x), sz["latency_warmup"], runs, device)
            res.update(forward_ms=round(statistics.median(ft) * 1000, 2), forward_min_ms=round(min(ft) * 1000, 2))
        else:
            res.update(forward_ms=None, forward_note=f"no forward runner for the {fam} family: infer_ms only")
        img = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
        warm = 0 if sz["tiny"] and fam in FORWARD else 1  # tiny: the forward's warm-up serves
        it = _time(lambda: model.infer([img], [None], threshold=0.0, keep_image=False), warm, infer_runs, device)
        res["infer_ms"] = round(statistics.median(it) * 1000, 2)
        res["infer_runs"] = infer_runs
    res["peak_gpu_mb"] = _peak_mb(device)
    res["paddlex_t4_gpu_ms"] = PADDLEX_T4.get(name, {}).get("gpu_ms")
    return res  # the model is freed by the next stage's _free


# ---------------------------------------------------------------------------------------------- the run
def family_plan(names: list[str]) -> dict[str, dict]:
    """Per family with a selected name: its main (smallest) model and the second one."""
    from workbench.models import families, family_info

    plan = {}
    for fam, fam_names in families().items():
        chosen = [n for n in fam_names if n in names]
        if not chosen:
            continue
        smoke = family_info(chosen[0]).smoke.get("name")
        main = smoke if smoke in chosen else chosen[0]
        rest = [n for n in chosen if n != main]
        second = SECOND_MODEL.get(fam) if SECOND_MODEL.get(fam) in rest else (rest[-1] if rest else None)
        plan[fam] = {"main": main, "second": second}
    return plan


def pipeline(report: Report, fam: str, name: str, data_dir: Path, work: Path, sz: dict, device: str) -> dict:
    """train -> predict -> export for one model; returns its entry."""
    from workbench.models import create_model, family_info

    entry: dict = {"model": name}
    label = f"{fam} {name}"
    holder: dict = {}

    def train():
        info = family_info(name)
        holder["model"] = create_model(
            name, device=device, input_size=sz["image_size"], **model_options(name, sz["tiny"])
        )
        return do_train(holder["model"], info, data_dir, work / f"run_{name}", sz, device)

    stage(report, entry, "train", f"{label} train", train)
    if "model" in holder and entry["train"]["status"] != FAILED:
        stage(report, entry, "predict", f"{label} predict", lambda: do_predict(holder["model"], data_dir, device))
        stage(report, entry, "export", f"{label} export", lambda: do_export(holder["model"], work / "export"))
    else:
        for key in ("predict", "export"):
            entry[key] = {"status": FAILED, "error": "not run: training failed"}
            report.doc["failures"].append(f"{label} {key}: not run (training failed)")
    holder.clear()
    _free(device)
    report.save()
    return entry


def run(args: argparse.Namespace) -> dict:
    from workbench.models import available_models

    tiny = 1 if args.tiny else 0
    sz = {k: v[tiny] for k, v in SIZES.items()}
    sz["tiny"] = bool(args.tiny)
    sz["latency_warmup"] = 3 if args.device.startswith("cuda") and not args.tiny else 1
    for key in ("latency_size", "image_size", "train_steps"):
        if getattr(args, key):
            sz[key] = getattr(args, key)
    gpu = args.device.startswith("cuda")
    runs = args.latency_runs or (1 if args.tiny else (20 if gpu else 2))
    infer_runs = max(1, runs // 2) if gpu else 1
    names = args.models or available_models()
    budget = Budget(args.budget_s)
    torch.manual_seed(0)
    doc = {
        "what": "benchmarks/gpu_check.py",
        "env": environment(args.device),
        "args": {k: v for k, v in vars(args).items() if k != "output"},
        "sizes": sz,
        "latency_runs": runs,
        "paddlex_source": PADDLEX_SOURCE,
        "budget": {"seconds": args.budget_s},
        "data": {},
        "families": {},
        "latency": {},
        "skipped": [],
        "failures": [],
    }
    report = Report(args.output, args.markdown or args.output.with_suffix(".md"), doc)
    env = doc["env"]
    print(
        f"device {env['device_name']} ({args.device}), torch {env['torch']}, CUDA {env['cuda']}, "
        f"cuDNN {env['cudnn']}, detectron2 {env['detectron2']}, python {env['python']}",
        flush=True,
    )
    plan = family_plan(names)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        stage(report, doc, "data", "data", lambda: make_data(data_dir, sz))
        # required: each family's smallest model through every stage
        for fam, p in plan.items():
            entry = pipeline(report, fam, p["main"], data_dir, work, sz, args.device)
            doc["families"][fam] = entry
            stage(
                report,
                doc["latency"],
                p["main"],
                f"latency {p['main']}",
                lambda n=p["main"]: do_latency(n, sz, runs, infer_runs, args.device),
            )
            entry["latency"] = doc["latency"][p["main"]]
            report.save()
        # optional, while the budget lasts: the latency of every other name, then a second model per family
        for name in [n for n in names if n not in doc["latency"]]:
            done = [v["stage_s"] for v in doc["latency"].values()]
            estimate = 2 * max(done) if done else 0
            if not budget.allows(estimate):
                doc["skipped"].append(f"latency {name} (budget: {budget.left():.0f} s left, ~{estimate:.0f} s needed)")
                continue
            stage(
                report,
                doc["latency"],
                name,
                f"latency {name}",
                lambda n=name: do_latency(n, sz, runs, infer_runs, args.device),
            )
        for fam, p in plan.items():
            if not p["second"] or args.no_second:
                continue
            main = doc["families"][fam]
            estimate = 2.5 * sum(main.get(k, {}).get("stage_s", 0) for k in ("train", "predict", "export"))
            if not budget.allows(estimate):
                doc["skipped"].append(
                    f"{fam} {p['second']} train/predict/export (budget: {budget.left():.0f} s left, "
                    f"~{estimate:.0f} s needed)"
                )
                continue
            main["larger"] = pipeline(report, fam, p["second"], data_dir, work, sz, args.device)
        doc["ok"] = not doc["failures"]
        report.save()
    return doc


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(x, nd: int = 1) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def markdown(doc: dict) -> str:
    env = doc["env"]
    gpu = str(env["device"]).startswith("cuda")
    head = (
        f"Machine: {env['device_name']}"
        + (f" ({env['gpu_memory_mb']} MiB)" if gpu else f", {env['cpu_count']} cores")
        + f"; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, detectron2 {env['detectron2']}, "
        f"python {env['python']}; {env['date']}; workbench {env.get('workbench_commit')}"
        + (
            "; **--tiny: smoke configurations** (e.g. a ResNet-18 body, 20 queries), not the full models"
            if doc["args"].get("tiny")
            else ""
        )
        + "."
    )
    lines = [head, ""]
    lines += [
        "| family | model | AMP | train steps | s/step | train peak MiB | predict ms/img | export | export s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, main in doc["families"].items():
        for e in [main] + ([main["larger"]] if "larger" in main else []):
            tr, pr, ex = e.get("train", {}), e.get("predict", {}), e.get("export", {})
            if tr.get("status") == FAILED:
                lines.append(f"| {fam} | {e['model']} | | failed: {tr.get('error', '')[:60]} | | | | | |")
                continue
            pred = _fmt(pr.get("ms_per_image")) if pr.get("status") != FAILED else "failed"
            exp = ex.get("status", "")
            lines.append(
                f"| {fam} | {e['model']} | {'yes' if tr.get('amp') else 'no'} | {tr.get('iterations', '')} | "
                f"{_fmt(tr.get('s_per_iter'), 3)} | {_fmt(tr.get('peak_gpu_mb'), 0)} | {pred} | {exp} | "
                f"{_fmt(ex.get('seconds'))} |"
            )
    lines += [
        "",
        f"Latency: batch 1, {doc['sizes']['latency_size']} px, FP32, random weights (80 classes, score threshold 0: "
        f"{'at most 100 (Detectron2 smoke: 10)' if doc['args'].get('tiny') else 'the top-100'} detections "
        "post-processed), median of "
        f"{doc['latency_runs']} runs after warm-up; forward = network + the family's post-processing on the device, "
        "infer() = model.infer on a uint8 image (pre-processing, masks to the host, Result). PaddleX: Tesla T4, "
        "FP32, model inference only (source in benchmarks/gpu_check.py).",
        "",
        "| model | forward ms | infer() ms | peak MiB | PaddleX T4 GPU ms | PaddleX Mask AP |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in doc["latency"].items():
        px = PADDLEX_T4.get(name, {})
        if r.get("status") == FAILED:
            lines.append(
                f"| {name} | failed: {r.get('error', '')[:60]} | | | {_fmt(px.get('gpu_ms'), 2)} | "
                f"{_fmt(px.get('mask_ap'))} |"
            )
            continue
        lines.append(
            f"| {name} | {_fmt(r.get('forward_ms'))} | {_fmt(r.get('infer_ms'))} | {_fmt(r.get('peak_gpu_mb'), 0)} | "
            f"{_fmt(px.get('gpu_ms'), 2)} | {_fmt(px.get('mask_ap'))} |"
        )
    for s in doc["skipped"]:
        lines.append(f"\nskipped: {s}")
    lines.append(
        f"\nwall time {doc['budget'].get('elapsed_s')} s (budget {doc['budget']['seconds']} s); "
        f"{len(doc['failures'])} failed stage(s)"
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    from workbench.models import available_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and counts (the CPU dry run)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="seconds for the whole run; past it the optional stages (other models' latency, a second "
        "model per family) are skipped; each family's smallest model always runs",
    )
    ap.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        choices=available_models(),
        help="a subset of the model names (default: all)",
    )
    ap.add_argument(
        "--latency-runs", type=int, default=0, help="timed passes per model (default: 20 GPU, 2 CPU, 1 tiny)"
    )
    ap.add_argument("--latency-size", type=int, default=0, help="latency input side (default: 640; 128 with --tiny)")
    ap.add_argument("--train-steps", type=int, default=0, help="optimizer steps to train (default: 20; 1 with --tiny)")
    ap.add_argument(
        "--image-size",
        type=int,
        default=0,
        help="synthetic image side and training input size, a multiple of 32 (default: 640; 96 with --tiny)",
    )
    ap.add_argument("--no-second", action="store_true", help="train only the smallest model of each family")
    ap.add_argument("--output", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    ap.add_argument("--markdown", type=Path, default=None, help="the markdown tables (default: OUTPUT with .md)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU (torch.cuda.is_available() is False)")
    if args.latency_size % 32 or args.image_size % 32:
        ap.error("--latency-size and --image-size must be multiples of 32")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t = _now()
    doc = run(args)
    md = markdown(doc)
    md_path = args.markdown or args.output.with_suffix(".md")
    print("\n" + md)
    print(f"JSON: {args.output}   markdown: {md_path}   ({_now() - t:.1f} s)")
    if doc["failures"]:
        print("FAILED stages:\n  " + "\n  ".join(doc["failures"]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
