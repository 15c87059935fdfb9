"""The cross-family contract: every registered model family trains, writes, predicts and thresholds
the same way. Parametrised by registration: a new family joins these tests by registering its
names with a ``smoke`` configuration (the smallest model of the family that trains)."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import numpy as np
import pytest

from workbench.data.synthetic import make_shapes_dataset
from workbench.engine.model import keep_scores
from workbench.engine.result import Result
from workbench.engine.run_dir import TrainResult
from workbench.models import create_model, families, family_info

# per registered family, the model its smoke configuration names (its smallest member)
FAMILY_MODELS = {fam: family_info(names[0]).smoke.get("name", names[0]) for fam, names in families().items()}
TRAIN_KEYS = {"type", "iter", "max_iter", "epoch", "total_loss", "lr", "time", "elapsed_s"}
EVAL_KEYS = {
    "type",
    "iter",
    "epoch",
    "epochs_iters",
    "per_class_segm_AP",
    "eval_time_s",
    "best_segm_AP",
    "best_epochs_iters",
} | {
    f"{t}_{k}"
    for t in ("bbox", "segm")
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
}
LAYOUT = {
    "train_result.json",
    "metrics.jsonl",
    "train.log",
    "config.yaml",
    "model_final.pth",
    "last_checkpoint",
    "model_NNNNNNN.pth",
    "best_model/model.pth",
    "best_model/config.yaml",
    "best_model/best_metrics.json",
}


def _family_keys(keys) -> set[str]:
    """Keys every family shares: the family's own loss terms (``loss_*``, ``val_*``) left out."""
    return {k for k in keys if not k.startswith(("loss_", "val_"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract_data")
    make_shapes_dataset(d, num_train=4, num_val=2, size=(96, 96), seed=3)
    return d


@pytest.fixture(scope="module", params=sorted(FAMILY_MODELS))
def trained(request, dataset, tmp_path_factory):
    fam = request.param
    name = FAMILY_MODELS[fam]
    smoke = family_info(name).smoke
    assert smoke, f"family {fam} registers no smoke configuration (register_family(..., smoke=...))"
    out = tmp_path_factory.mktemp(f"contract_{fam}")
    model = create_model(name, device="cpu", **smoke["model"])
    res = model.train(dataset, output=out, progress=False, **smoke["train"])
    return fam, name, model, res, out


def test_every_family_has_a_unit_and_defaults():
    for fam, name in FAMILY_MODELS.items():
        info = family_info(name)
        assert info.unit in ("iterations", "epochs"), fam
        assert {"epochs_iters", "batch_size", "learning_rate"} <= set(info.train_defaults), fam


def test_train_result_schema(trained):
    fam, name, model, res, out = trained
    saved = json.loads((out / "train_result.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert set(saved) == {f.name for f in fields(TrainResult)} | {"done_flag"}
    assert saved["status"] == "done" and saved["done_flag"] is True and saved["error"] is None
    assert saved["family"] == fam and saved["model_name"] == name
    assert saved["unit"] == family_info(name).unit == model.unit
    smoke = family_info(name).smoke["train"]
    assert saved["epochs_iters"] == saved["max_epochs_iters"] == smoke["epochs_iters"]
    assert saved["iterations"] == saved["max_iterations"] > 0
    assert saved["best_epochs_iters"] in range(1, smoke["epochs_iters"] + 1)
    assert {"segm_AP", "bbox_AP", "epochs_iters"} <= set(saved["best_metrics"])
    assert [c["name"] for c in saved["classes"]] == ["circle", "square"]
    assert set(saved["paths"]) == {"output", "model_final", "best_model", "last_checkpoint", "config", "log", "metrics"}
    assert saved["init_weights"] is None  # trained from scratch (what initial weights give: test_finetune.py)


def test_metrics_records(trained):
    fam, name, model, res, out = trained
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    assert train and evals
    for r in train:
        assert _family_keys(r) == TRAIN_KEYS, (fam, sorted(r))
        assert any(k.startswith("loss_") for k in r) and np.isfinite(r["total_loss"])
        assert r["max_iter"] == res["max_iterations"]
    assert [r["iter"] for r in train] == list(range(1, res["iterations"] + 1))  # log_interval 1
    for r in evals:
        assert _family_keys(r) == EVAL_KEYS, (fam, sorted(set(_family_keys(r)) ^ EVAL_KEYS))
    assert evals[-1]["epochs_iters"] == res["epochs_iters"]


def test_run_directory_layout(trained):
    fam, name, model, res, out = trained
    found = set()
    for p in out.rglob("*"):
        if p.is_file():
            rel = p.relative_to(out).as_posix()
            found.add(re.sub(r"^model_\d{7}\.pth$", "model_NNNNNNN.pth", rel))
    assert found == LAYOUT, (fam, found ^ LAYOUT)
    last = (out / "last_checkpoint").read_text().strip()
    assert last == f"model_{res['epochs_iters']:07d}.pth" and res["paths"]["last_checkpoint"] == str(out / last)
    # after training the model object holds the best weights
    assert model.weights == str(out / "best_model" / "model.pth")


def test_result_fields_and_threshold_rule(trained, dataset):
    fam, name, model, res, out = trained
    img = sorted((dataset / "images").iterdir())[0]
    r = next(model.predict(img, threshold=0.0))
    assert isinstance(r, Result) and r.model_name == name and r.input_path == str(img)
    assert r.image_size == (96, 96) and len(r) > 0 and r.mask_probs is not None
    assert set(r.to_dict()) == {
        "input_path",
        "page_index",
        "model_name",
        "image_size",
        "threshold",
        "mask_threshold",
        "boxes",
    }
    assert set(r.to_dict()["boxes"][0]) == {"cls_id", "label", "score", "coordinate", "mask"}
    assert set(r.class_ids.tolist()) <= {1, 2} and set(r.class_names) <= {"circle", "square"}
    # the threshold rule through the family's real inference path: a detection whose score equals
    # the threshold is kept, everything below it is dropped
    scores = np.sort(r.scores)[::-1]
    t = float(scores[len(scores) // 2])
    kept = next(model.predict(img, threshold=t))
    assert len(kept) == int((r.scores >= t).sum()) and kept.scores.min() == pytest.approx(t, abs=0)
    assert all(len(x) == int(np.count_nonzero(keep_scores(r.scores, t))) for x in [kept])


def test_threshold_rule_hand_made():
    scores = np.array([0.3, 0.5, 0.5000001, 0.7], np.float32)
    assert keep_scores(scores, 0.5).tolist() == [False, True, True, True]
    import torch

    from workbench.models.mask_rtdetr.postprocess import image_detections

    d = image_detections(
        torch.tensor(scores),
        torch.zeros(4, dtype=torch.long),
        torch.rand(4, 4),
        torch.zeros(4, 8, 8),
        (16, 16),
        threshold=0.5,
    )
    assert d["scores"].tolist() == pytest.approx([0.5, 0.5000001, 0.7])
    r = Result(input_path=None, image_size=(4, 4), boxes=np.zeros((4, 4)), scores=scores)
    assert len(r.filter(threshold=0.5)) == 3


def test_resume_continues_the_run(trained, dataset, tmp_path):
    """``resume=True`` on a copy of the run continues it to a longer schedule, in the same files."""
    import shutil

    fam, name, model, res, out = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    smoke = family_info(name).smoke
    longer = {**smoke["train"], "epochs_iters": smoke["train"]["epochs_iters"] + 1}
    m = create_model(name, device="cpu", **smoke["model"])
    again = m.train(dataset, output=run, resume=True, progress=False, **longer)
    assert again["status"] == "done" and again["epochs_iters"] == longer["epochs_iters"]
    assert again["iterations"] > res["iterations"] and again["max_epochs_iters"] == longer["epochs_iters"]
    assert "resuming from" in (run / "train.log").read_text()
    iters = [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert iters == sorted(iters) and iters[-1] == again["iterations"]
    assert (run / "last_checkpoint").read_text().strip() == f"model_{longer['epochs_iters']:07d}.pth"
