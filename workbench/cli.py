"""Command line: ``workbench <step> ...`` and the PaddleX-shaped ``python -m workbench -c CONFIG -o K=V``.

Steps::

    workbench check DATASET_DIR [--output DIR]
    workbench convert LABELME_DIR [--dst DIR] [--labels labels.txt] [--label-order sorted|stable] [--min-val N]
    workbench split DATASET_DIR --train-percent 80 --val-percent 20 [--seed 0] [--min-val N]
    workbench evaluate RESULTS.json DATASET_DIR [--output DIR]
    workbench pre-label MODEL_DIR IMAGES [--dst LABELME_DIR] [--tolerance 1.0] [--overwrite]
    workbench generate OUT_DIR [--num-train 16 --num-val 4 --size 128 --format coco labelme]
    workbench demo [--output runs/demo]          # the whole pipeline on the bundled demo data
    workbench run-notebook 04_train -p epochs_iters=20 [--output-dir DIR]   # a step notebook, headless
    workbench run-notebook --all --output-dir runs/notebooks               # all six, in order
    workbench -c MaskRCNN-ResNet50-FPN -o Global.mode=check_dataset -o Global.dataset_dir=DIR
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
MIN_VAL_HELP = ("put at least N images in val even if a class then has no train image (default 0: a split "
                "that leaves val empty is an error saying why)")


def _paddlex_main(argv: list[str]) -> int:
    from .config import dump, load_config

    ap = argparse.ArgumentParser(prog="python -m workbench",
                                 description="Run one step from a config, PaddleX style.")
    ap.add_argument("-c", "--config", required=True, help="config file or model name, e.g. Mask-RT-DETR-L")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                    help="override a config value; repeatable")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.override)
    if args.print_config:
        print(dump(cfg))
        return 0
    from .pipeline import run_config

    run_config(cfg)
    return 0


def _step_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="workbench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)

    p = sub.add_parser("check", help="validate a PaddleX COCO-layout dataset")
    p.add_argument("dataset_dir")
    p.add_argument("--output", default="output")
    p.add_argument("--num-samples", type=int, default=10)

    p = sub.add_parser("convert", help="convert a LabelMe folder to the PaddleX COCO layout")
    p.add_argument("src_dir")
    p.add_argument("--dst", default=None, help="output dataset dir (default: convert in place, PaddleX style)")
    p.add_argument("--labels", default=None, help="labels.txt fixing the class order")
    p.add_argument("--label-order", choices=["sorted", "stable"], default="sorted")
    p.add_argument("--val-percent", type=float, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-val", type=int, default=0, help=MIN_VAL_HELP)

    p = sub.add_parser("split", help="re-split train/val (old files kept as .bak)")
    p.add_argument("dataset_dir")
    p.add_argument("--train-percent", type=float, required=True)
    p.add_argument("--val-percent", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-val", type=int, default=0, help=MIN_VAL_HELP)

    p = sub.add_parser("evaluate", help="COCO metrics + error analysis of a results file against a dataset")
    p.add_argument("predictions", help="COCO results JSON (list of detections) or a folder of Result JSONs")
    p.add_argument("dataset", help="PaddleX dataset dir (its val split) or a COCO annotation JSON")
    p.add_argument("--output", default="output/evaluate")
    p.add_argument("--score-threshold", type=float, default=0.5)

    p = sub.add_parser("pre-label", help="write LabelMe JSON files from a trained model's predictions "
                                         "(to correct in labelme, then convert)")
    p.add_argument("model_dir", help="a run directory, its best_model folder or a weights file")
    p.add_argument("images", help="an image or a folder of images")
    p.add_argument("--dst", default=None, help="LabelMe folder to write (default: beside the images)")
    p.add_argument("--model", default=None, help="model name (default: from the run's config.yaml or the weights)")
    p.add_argument("--threshold", type=float, default=0.5, help="score threshold of the instances kept")
    p.add_argument("--mask-threshold", type=float, default=0.5)
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="polygon simplification in pixels (approxPolyDP; 0: the exact pixel outline)")
    p.add_argument("--holes", choices=["cut", "fill"], default="cut",
                   help="cut holes into the polygon through a zero-width seam, or fill them")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing LabelMe files (the old ones kept as .bak); default: leave them")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--no-recursive", action="store_true", help="a folder's top level only")

    p = sub.add_parser("generate", help="write a synthetic shapes dataset")
    p.add_argument("out_dir")
    p.add_argument("--num-train", type=int, default=16)
    p.add_argument("--num-val", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", nargs="+", default=["coco"], choices=["coco", "labelme"])

    p = sub.add_parser("train-worker", help="(internal) the training panel's subprocess: train from a JSON spec")
    p.add_argument("spec", help="JSON: model_name, weights, device, dataset_dir, output_dir, model_kwargs, train_kwargs")

    p = sub.add_parser("demo", help="run the whole step pipeline on the bundled demo data")
    p.add_argument("--output", default="runs/demo")
    p.add_argument("--data", default=str(REPO_DATA / "demo_labelme"))
    p.add_argument("--model", default=None,
                   help="the model to train (default: the demo recipe's, workbench.pipeline.demo.DEMO_RECIPE)")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations or epochs (default: the recipe's; 0: data steps only)")
    p.add_argument("--input-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--notebooks", action="store_true",
                   help="run the six step notebooks in batch (executed copies in OUTPUT/notebooks) "
                        "instead of the same steps as plain Python calls")

    args = ap.parse_args(argv)
    if args.step == "check":
        from .data.check import check_dataset

        r = check_dataset(args.dataset_dir, args.output, num_samples=args.num_samples)
        return 0 if r.check_pass else 1
    if args.step == "convert":
        from .data.labelme import convert_labelme

        convert_labelme(args.src_dir, args.dst, labels=args.labels, label_order=args.label_order,
                        val_percent=args.val_percent, seed=args.seed, min_val=args.min_val)
        return 0
    if args.step == "split":
        from .data.split import split_dataset

        split_dataset(args.dataset_dir, args.train_percent, args.val_percent, seed=args.seed, min_val=args.min_val)
        return 0
    if args.step == "evaluate":
        from .evaluation import evaluate

        preds = Path(args.predictions)
        if preds.is_dir():
            from .engine.result import Result

            preds = [Result.from_json(p) for p in sorted(preds.glob("*.json"))]
        rep = evaluate(preds, args.dataset, args.output, score_threshold=args.score_threshold)
        print(rep.table("segm"))
        print(f"segm AP {rep['segm']['AP']:.4f}  bbox AP {rep['bbox']['AP']:.4f}; report in {args.output}")
        return 0
    if args.step == "pre-label":
        from .data.prelabel import pre_label_from_dir

        pre_label_from_dir(args.model_dir, args.images, args.dst, model_name=args.model, device=args.device,
                           threshold=args.threshold, mask_threshold=args.mask_threshold, tolerance=args.tolerance,
                           holes=args.holes, overwrite=args.overwrite, batch_size=args.batch_size,
                           recursive=not args.no_recursive)
        return 0
    if args.step == "generate":
        from .data.synthetic import make_shapes_dataset

        d = make_shapes_dataset(args.out_dir, args.num_train, args.num_val, (args.size, args.size), args.seed,
                                formats=tuple(args.format))
        print({k: repr(v) for k, v in d.items()})
        return 0
    if args.step == "train-worker":
        from .widgets.training import train_worker_main

        return train_worker_main([args.spec])
    if args.step == "demo":
        from .pipeline import run_demo

        run_demo(args.output, data=args.data, model=args.model, epochs_iters=args.iters, input_size=args.input_size,
                 notebooks=args.notebooks)
        return 0
    return 2


def _error_exit(e: BaseException, code: int) -> int:
    """One line on stderr; the traceback only with WORKBENCH_DEBUG=1."""
    if os.environ.get("WORKBENCH_DEBUG"):
        raise e
    print(f"error: {e}\n(set WORKBENCH_DEBUG=1 for the traceback)", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point; every ``WorkbenchError`` (and a bad value or missing file) is one line on stderr
    with the error's exit code (1: bad input or a failed run, 2: a bad config, argument or mode)."""
    from .engine.errors import WorkbenchError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "run-notebook":
            from .notebooks import main as notebooks_main

            return notebooks_main(argv[1:])
        if argv and argv[0] in ("-c", "--config") or any(a.startswith("--config=") for a in argv[:1]):
            return _paddlex_main(argv)
        return _step_main(argv)
    except WorkbenchError as e:
        return _error_exit(e, e.exit_code)
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as e:
        return _error_exit(e, 1)


if __name__ == "__main__":
    sys.exit(main())
