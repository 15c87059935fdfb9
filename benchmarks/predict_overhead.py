"""Overhead of the workbench over raw Detectron2, measured in one run on the same weights and images.

1. Prediction: ``model.predict`` (our pre/post-processing: soft masks kept, ``Result`` built)
   vs Detectron2's ``DefaultPredictor`` — median of ``--runs`` runs each, interleaved, one image
   per call, same score threshold (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``) so both paste the same
   number of masks.
2. Training: seconds per iteration of ``model.train`` vs Detectron2's ``DefaultTrainer`` on the
   same config and data, from the difference of two run lengths (``--iters`` and ``--iters`` +
   ``--extra``) so set-up and final saving cancel out; hooks (progress, metrics, checkpoints) count.

No pretrained weights exist here: the weights are a freshly initialised network saved to disk
(inference cost does not depend on the values, except through the number of detections, which
the equal threshold keeps equal). Prints a JSON summary; ``--json PATH`` writes it too.

    python benchmarks/predict_overhead.py --input-size 320 --runs 10
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="MaskRCNN-ResNet50-FPN")
    ap.add_argument("--input-size", type=int, default=320)
    ap.add_argument("--image-size", type=int, default=320)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--train-size", type=int, default=160, help="input size for the training comparison")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--extra", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from workbench.data.dataset import Dataset
    from workbench.data.synthetic import make_shapes_dataset
    from workbench.models import create_model
    from workbench.models.detectron2._compat import import_detectron2

    import_detectron2()
    from detectron2.engine import DefaultPredictor, DefaultTrainer
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    from workbench.engine.classes import ClassMap
    from workbench.models.detectron2.data import register

    class RawTrainer(DefaultTrainer):
        # Detectron2's default writers include TensorBoard (not installed here); keep the other two
        def build_writers(self):
            return [CommonMetricPrinter(self.max_iter), JSONWriter(str(Path(self.cfg.OUTPUT_DIR) / "metrics.json"))]

    tmp = Path(tempfile.mkdtemp(prefix="wb_bench_"))
    make_shapes_dataset(tmp / "ds", num_train=8, num_val=2, size=(args.image_size, args.image_size), seed=0)
    ds = Dataset.load_paddlex(tmp / "ds", "train")
    images = [ds.load_image(im) for im in ds.images]

    # ------------------------------------------------------------------ prediction
    m0 = create_model(args.model, device="cpu", input_size=args.input_size, class_names=ds.category_names)
    weights = m0.save(tmp / "weights.pth")
    model = create_model(args.model, weights=weights, device="cpu")
    cfg = model.cfg.clone()
    cfg.MODEL.WEIGHTS = str(weights)
    raw = DefaultPredictor(cfg)
    thr = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)

    def ours(img):
        return next(model.predict(img, threshold=thr))

    def theirs(img):
        return raw(img[:, :, ::-1])  # DefaultPredictor takes BGR (cv2) images

    for img in images[:2]:  # warm-up
        ours(img), theirs(img)
    t_ours, t_raw, n_ours, n_raw = [], [], [], []
    for i in range(args.runs):
        img = images[i % len(images)]
        t = time.perf_counter()
        r = ours(img)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        o = theirs(img)
        t_raw.append(time.perf_counter() - t)
        n_ours.append(len(r))
        n_raw.append(len(o["instances"]))
    pred = {"ours_median_s": statistics.median(t_ours), "detectron2_median_s": statistics.median(t_raw),
            "ratio": statistics.median(t_ours) / statistics.median(t_raw), "runs": args.runs,
            "detections_ours": statistics.median(n_ours), "detections_detectron2": statistics.median(n_raw),
            "input_size": args.input_size, "image_size": args.image_size}
    print("predict:", json.dumps(pred), flush=True)

    # ------------------------------------------------------------------ training
    def ours_train(n: int) -> float:
        m = create_model(args.model, device="cpu", input_size=args.train_size)
        noval = tmp / "ds_noval"
        if not noval.exists():
            import shutil

            shutil.copytree(tmp / "ds", noval)
            (noval / "annotations" / "instance_val.json").unlink()
        t = time.perf_counter()
        m.train(noval, epochs_iters=n, batch_size=2, output=str(tmp / f"ours_{n}"), save_interval=10_000,
                progress=False, warmup_steps=0)
        return time.perf_counter() - t

    def raw_train(n: int) -> float:
        m = create_model(args.model, device="cpu", input_size=args.train_size, class_names=ds.category_names)
        c = m.cfg.clone()
        c.DATASETS.TRAIN = (register(ds, ClassMap.from_dataset(ds)),)
        c.SOLVER.IMS_PER_BATCH = 2
        c.SOLVER.MAX_ITER = n
        c.SOLVER.STEPS = ()
        c.SOLVER.WARMUP_ITERS = 0
        c.SOLVER.CHECKPOINT_PERIOD = 10_000
        c.OUTPUT_DIR = str(tmp / f"raw_{n}")
        Path(c.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        tr = RawTrainer(c)
        tr.resume_or_load(resume=False)
        tr.train()
        return time.perf_counter() - t

    a, b = args.iters, args.iters + args.extra
    ours_short, raw_short = ours_train(a), raw_train(a)
    ours_long, raw_long = ours_train(b), raw_train(b)
    per_ours = (ours_long - ours_short) / args.extra
    per_raw = (raw_long - raw_short) / args.extra
    train = {"ours_s_per_iter": per_ours, "detectron2_s_per_iter": per_raw, "ratio": per_ours / per_raw,
             "input_size": args.train_size, "batch_size": 2, "iterations_compared": args.extra}

    out = {"model": args.model, "machine": f"{platform.processor() or platform.machine()}, "
                                           f"{torch.get_num_threads()} torch threads, CPU",
           "predict": pred, "train": train}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
