"""Evaluation speed: the workbench's default COCO evaluation vs pycocotools, same input, one run.

Generates a shapes dataset (default 600 images, crowd regions and empty images included) and noisy
predictions, checks that both backends give the same numbers, then times bbox+segm evaluation
(COCO index build, matching, accumulation, summary) with each backend, median of --runs runs.

    python benchmarks/eval_speed.py [--images 600] [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from workbench.data.synthetic import add_crowd_and_empty, make_shapes_dataset, noisy_predictions
from workbench.evaluation.metrics import STAT_NAMES, coco_metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        gt = make_shapes_dataset(tmp, args.images, 0, (args.size, args.size), seed=0,
                                 classes=("circle", "square", "triangle"), max_instances=6)["train"]
    gt = add_crowd_and_empty(gt, seed=0)
    dets = noisy_predictions(gt, seed=0)
    print(f"{len(gt.images)} images, {len(gt.instances)} GT instances "
          f"({sum(a.iscrowd for a in gt.instances)} crowd), {len(dets)} detections")
    times = {}
    results = {}
    for backend in ("pycocotools", "fast"):
        ts = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            results[backend] = coco_metrics(gt, dets, backend=backend)
            ts.append(time.perf_counter() - t0)
        times[backend] = statistics.median(ts)
    worst = max(abs(results["fast"][t][k] - results["pycocotools"][t][k]) for t in ("bbox", "segm") for k in STAT_NAMES)
    print(f"max |difference| over the 12 stats x 2 IoU types: {worst:.2e}")
    print(f"{'backend':<14}{'median s':>10}")
    for b, t in times.items():
        print(f"{b:<14}{t:>10.3f}")
    print(f"speed-up of the default (faster-coco-eval) over pycocotools: {times['pycocotools'] / times['fast']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
