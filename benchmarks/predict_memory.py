"""Peak memory added by predicting one image (issue 12, items 5 and 11).

Each case runs in a fresh subprocess, one after the other (never two at once): build the model
(random-init weights), make the image, read the RSS ("loaded"), reset the kernel's peak-RSS mark
(``/proc/self/clear_refs`` = 5, so ``VmHWM`` restarts from the current RSS), run the step and read
``VmHWM`` again: ``added = peak - loaded``. Steps measured, each from a fresh peak mark:

* ``infer``: ``model.infer([image], threshold=0)`` (what ``model.predict`` runs per image);
* ``outputs``: then ``areas``, ``to_coco``, ``save_to_json`` and ``save_to_img`` of that ``Result``;
* ``added`` (reported): the larger of the two (the peak of predicting and saving one image).

By default a warm-up prediction on a 320x320 crop runs first, so the network's one-off
allocations are in "loaded"; ``--cold`` skips it (the first prediction's cost).

100 detections: the models are random-init with ``threshold=0``; Detectron2 with
``MODEL.ROI_HEADS.SCORE_THRESH_TEST=0`` (``TEST.DETECTIONS_PER_IMAGE`` stays 100), Mask-RT-DETR
keeps its top-100 queries x classes. The number of detections is printed with each case.

References, measured in the same run, same weights and image:

* ``d2-raw``: Detectron2's own inference (``DefaultPredictor``-style: the net with
  ``do_postprocess=True``, which pastes every mask as a full-size bitmap);
* ``forward``: the network's forward pass alone (the floor any post-processing adds to).

    .venv/bin/python benchmarks/predict_memory.py                 # all cases
    .venv/bin/python benchmarks/predict_memory.py --sizes 1920x1080 --families detectron2
    .venv/bin/python benchmarks/predict_memory.py --code /tmp/old   # another checkout's workbench/

``--code DIR`` measures the ``workbench`` package under DIR (e.g. a ``git archive`` of an older
commit) with this script.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

FAMILIES = {"detectron2": "MaskRCNN-ResNet50-FPN", "mask_rtdetr": "Mask-RT-DETR-L"}


def _status(key: str) -> int:
    """``/proc/self/status`` field in bytes."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _measure(fn):
    import gc

    gc.collect()
    before = _status("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, {"rss_before": before, "peak": _status("VmHWM"), "seconds": round(dt, 2)}


def _build(family: str):
    from workbench.models.registry import create_model

    name = FAMILIES[family]
    if family == "detectron2":
        m = create_model(name, device="cpu", num_classes=80,
                         d2_overrides={"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    else:
        m = create_model(name, device="cpu", num_classes=80)
    m.build()
    return m


def run_case(family: str, size: str, mode: str, warmup: bool = True) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)
    w, h = (int(v) for v in size.split("x"))
    model = _build(family)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if warmup:  # warm-up on a small image: one-off allocations are not the prediction's
        with torch.no_grad():
            model.infer([image[:320, :320].copy()], [None], threshold=0.0)
    import workbench

    info: dict = {"family": family, "model": model.name, "size": size, "mode": mode, "warmup": warmup,
                  "code": os.path.dirname(os.path.dirname(workbench.__file__))}
    steps: dict = {}
    if mode == "workbench":
        results, steps["infer"] = _measure(lambda: model.infer([image], [None], threshold=0.0))
        r = results[0]
        info["detections"] = len(r)

        def outputs():
            with tempfile.TemporaryDirectory() as d:
                r.areas.sum()
                r.to_coco(1)
                r.save_to_json(os.path.join(d, "x_res.json"))
                r.save_to_img(os.path.join(d, "x_res.png"))

        _, steps["outputs"] = _measure(outputs)
    elif mode == "d2-raw":
        from workbench.models.detectron2.predictor import NetPredictor

        net = model.net
        inputs = NetPredictor(net, model.cfg, model.classes.category_ids, model.classes.names)._inputs([image])

        def raw():
            with torch.no_grad():
                return net(inputs)[0]["instances"]

        inst, steps["infer"] = _measure(raw)
        info["detections"] = len(inst)
    elif mode == "forward":
        net = model.net
        if family == "detectron2":
            from workbench.models.detectron2.predictor import NetPredictor

            inputs = NetPredictor(net, model.cfg, model.classes.category_ids, model.classes.names)._inputs([image])

            def fwd():
                with torch.no_grad():
                    return net.inference(inputs, do_postprocess=False)[0]
        else:
            from workbench.models.mask_rtdetr.data import to_model_input

            def fwd():
                with torch.no_grad():
                    return net(to_model_input(image, model.input_size).unsqueeze(0))

        _, steps["infer"] = _measure(fwd)
    else:
        raise ValueError(mode)
    loaded = steps["infer"]["rss_before"]
    info["loaded_mib"] = round(loaded / 2**20)
    for k, s in steps.items():
        info[f"{k}_added_mib"] = round((s["peak"] - loaded) / 2**20)
        info[f"{k}_seconds"] = s["seconds"]
    info["added_mib"] = max(info[f"{k}_added_mib"] for k in steps)
    info["seconds"] = round(sum(s["seconds"] for s in steps.values()), 2)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--sizes", nargs="+", default=["1920x1080", "8000x6000"])
    ap.add_argument("--modes", nargs="+", default=["workbench", "d2-raw", "forward"])
    ap.add_argument("--code", default=None, help="a folder holding the workbench package to measure")
    ap.add_argument("--case", nargs=3, metavar=("FAMILY", "SIZE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up prediction: 'loaded' is right after building the model, so the first "
                         "forward pass's one-off allocations count as added")
    a = ap.parse_args(argv)
    if a.code:
        sys.path.insert(0, os.path.abspath(a.code))
    if a.case:
        print("RESULT " + json.dumps(run_case(*a.case, warmup=not a.cold)), flush=True)
        return 0
    rows = []
    for fam in a.families:
        for size in a.sizes:
            for mode in a.modes:
                if mode == "d2-raw" and fam != "detectron2":
                    continue
                cmd = [sys.executable, os.path.abspath(__file__), "--case", fam, size, mode]
                if a.code:
                    cmd += ["--code", a.code]
                if a.cold:
                    cmd += ["--cold"]
                p = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if p.returncode or not line:
                    row = {"family": fam, "size": size, "mode": mode, "error": (p.stderr or p.stdout)[-400:]}
                else:
                    row = json.loads(line[-1][7:])
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print("| family | image | mode | detections | loaded MiB | infer +MiB | outputs +MiB | added MiB | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['family']} | {r['size']} | {r['mode']} | error: {r['error'][-120:]!r} |")
            continue
        print(f"| {r['family']} | {r['size']} | {r['mode']} | {r.get('detections', '')} | {r['loaded_mib']} | "
              f"{r['infer_added_mib']} | {r.get('outputs_added_mib', '')} | {r['added_mib']} | {r['seconds']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
