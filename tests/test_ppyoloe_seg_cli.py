"""PP-YOLOE_seg-S through the PaddleX command shape: train -> evaluate -> predict -> export."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(*overrides):
    args = [sys.executable, "-m", "workbench", "-c", "PP-YOLOE_seg-S"]
    for o in overrides:
        args += ["-o", o]
    return subprocess.run(args, capture_output=True, text=True)


@pytest.mark.slow
def test_ppyoloe_seg_modes_through_the_cli(tmp_path):
    from workbench.data.synthetic import make_shapes_dataset

    ds, out = tmp_path / "ds", tmp_path / "out"
    make_shapes_dataset(ds, 4, 2, (96, 96), seed=0)
    common = [f"Global.dataset_dir={ds}", f"Global.output={out}"]
    r = _run("Global.mode=train", *common, "Train.epochs_iters=1", "Train.input_size=64", "Train.batch_size=2",
             "Train.eval_interval=1", "Train.save_interval=1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ignored" not in r.stderr
    res = json.loads((out / "train_result.json").read_text())
    assert res["done_flag"] is True and res["unit"] == "epochs"
    assert (out / "best_model").is_dir() and (out / "model_final.pth").is_file() and (out / "metrics.jsonl").is_file()

    r = _run("Global.mode=evaluate", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((out / "evaluate_result.json").read_text())
    assert {"bbox", "segm"} <= set(ev["metrics"])

    r = _run("Global.mode=predict", *common, f"Predict.input={ds / 'images'}", "Predict.threshold=0.0")
    assert r.returncode == 0, r.stderr[-2000:]
    pr = json.loads((out / "predict_result.json").read_text())
    assert pr["num_images"] == 6

    r = _run("Global.mode=export", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "inference" / "model.onnx").stat().st_size > 1_000_000
