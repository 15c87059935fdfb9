"""Evaluation end to end: ``workbench evaluate`` vs faster-coco-eval alone vs pycocotools alone.

The same input for all three: a generated PaddleX-layout dataset on disk (shapes, crowd regions and
empty images, the val split) and a COCO results JSON of noisy mask predictions (no ``bbox``: what
``predict`` writes is evaluated as a results file). Timed from the files to the numbers, in one
process, runs interleaved (ours, faster-coco-eval, pycocotools, ours, ...), median of --runs:

- ours: ``workbench.evaluation.evaluate(results.json, dataset_dir, output_dir)`` -- the call behind
  ``workbench evaluate RESULTS.json DATASET_DIR --output DIR``: bbox + segm COCO metrics, the
  error analysis and the report it writes by default (``evaluate_result.json``, ``report.md``,
  ``report.html``, worst-image PNGs);
- faster-coco-eval alone: ``COCO(annotation file)``, ``loadRes(results file)``, ``COCOeval_faster``
  evaluate/accumulate/summarize for bbox and segm;
- pycocotools alone: the same with ``pycocotools``.

Each library is imported before timing (a warm-up run of each is not counted), so the times are
those of a call in a running process. Printed: the median of the runs and, less sensitive to other
load on the machine, the best run; the ratios are medians of the per-run ratios (each run times
the three back to back, so a load spike from other processes mostly hits all three alike).
``--profile`` prints a cProfile of one call of ours instead.

    python benchmarks/evaluate_e2e.py [--images 100 500 2000] [--runs 5] [--profile]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from workbench.data.dataset import Dataset
from workbench.data.synthetic import add_crowd_and_empty, make_shapes_dataset, noisy_predictions
from workbench.evaluation import evaluate

ANN = "annotations/instance_val.json"


def make_case(root: Path, n: int, size: int = 128) -> tuple[Path, Path]:
    """A PaddleX dataset dir with an ``n``-image val split and a results JSON for it."""
    ds_dir = root / f"ds{n}"
    make_shapes_dataset(ds_dir, 0, n, (size, size), seed=0, classes=("circle", "square", "triangle"),
                        max_instances=6)
    val = Dataset.load_paddlex(ds_dir, "val")
    add_crowd_and_empty(val, seed=0)
    val.save_coco(ds_dir / ANN)
    res = root / f"results{n}.json"
    res.write_text(json.dumps(noisy_predictions(val, seed=0)))
    return ds_dir, res


def run_ours(ds_dir: Path, res: Path, out: Path) -> float:
    return evaluate(res, ds_dir, out)["segm"]["AP"]


def run_faster(ds_dir: Path, res: Path, out: Path) -> float:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(ds_dir / ANN))
    dt = gt.loadRes(str(res))
    ap = 0.0
    for t in ("bbox", "segm"):
        ev = COCOeval_faster(gt, dt, t, print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        ap = ev.stats[0]
    return float(ap)


def run_pycocotools(ds_dir: Path, res: Path, out: Path) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ds_dir / ANN))
        dt = gt.loadRes(str(res))
        ap = 0.0
        for t in ("bbox", "segm"):
            ev = COCOeval(gt, dt, t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            ap = ev.stats[0]
    return float(ap)


RUNNERS = {"ours": run_ours, "faster-coco-eval": run_faster, "pycocotools": run_pycocotools}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, nargs="+", default=[100, 500, 2000])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile one call of ours per size instead")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in args.images:
            ds_dir, res = make_case(root, n, args.size)
            out = root / f"eval{n}"
            aps = {name: f(ds_dir, res, out) for name, f in RUNNERS.items()}  # warm-up, imports
            assert abs(aps["ours"] - aps["faster-coco-eval"]) < 1e-4 and abs(aps["ours"] - aps["pycocotools"]) < 1e-4, aps
            if args.profile:
                import cProfile
                import pstats

                pr = cProfile.Profile()
                pr.enable()
                run_ours(ds_dir, res, out)
                pr.disable()
                print(f"--- {n} images")
                pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
                continue
            times: dict[str, list[float]] = {name: [] for name in RUNNERS}
            for _ in range(args.runs):
                for name, f in RUNNERS.items():
                    t0 = time.perf_counter()
                    f(ds_dir, res, out)
                    times[name].append(time.perf_counter() - t0)
            med = {name: statistics.median(v) for name, v in times.items()}
            best = {name: min(v) for name, v in times.items()}
            ratio = {name: statistics.median(o / t for o, t in zip(times["ours"], v)) for name, v in times.items()}
            rows.append((n, med, best, ratio))
            print(f"{n} images: " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()), flush=True)
    if rows:
        print(f"\nseconds: median of {args.runs} runs (best run in brackets); ratio: median over the runs of "
              "ours / the library alone in that run")
        print("| images | ours | faster-coco-eval | pycocotools | ours / faster-coco-eval | ours / pycocotools |")
        print("|---|---|---|---|---|---|")
        for n, med, best, ratio in rows:
            cells = " | ".join(f"{med[k]:.3f} ({best[k]:.3f})" for k in RUNNERS)
            print(f"| {n} | {cells} | {ratio['faster-coco-eval']:.2f} | {ratio['pycocotools']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
