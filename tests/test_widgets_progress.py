"""Feedback on long work, headless: the training panel's start-up message and ``it / total · s/it ·
ETA``, its summary, ``model.evaluate`` keeping its predictions (05_evaluate predicts the split once,
with a progress bar) and the rows of charts that stack when the notebook is narrow."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

W = pytest.importorskip("ipywidgets")

from workbench import widgets as wbw  # noqa: E402
from workbench.engine.model import BaseModel  # noqa: E402

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _wait_for(cond, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not cond():
        time.sleep(0.05)
    return cond()


def _train_record(it, max_iter=800, per=0.46, **kw):
    return {"type": "train", "iter": it, "max_iter": max_iter, "epoch": 1, "total_loss": 1.5, "lr": 0.01,
            "time": per, "elapsed_s": round(it * per, 3), **kw}


# ----------------------------------------------------------------------- training panel
def test_training_status_starts_then_counts_steps_with_rate_and_eta(tmp_path, monkeypatch):
    """A stand-in training process (it sleeps); the test writes ``metrics.jsonl`` as a run does."""
    out = tmp_path / "train"
    p = wbw.TrainingPanel(str(tmp_path / "data"), str(out), model_name="MaskRCNN-ResNet50-FPN", epochs_iters=800,
                          poll_interval=0.05)
    monkeypatch.setattr(p, "command", lambda spec: [sys.executable, "-c", "import time; time.sleep(60)"])
    p.start()
    try:
        assert p.running and "starting: loading model and data…" in p.status.value
        first = p.status.value
        # the elapsed seconds move while nothing is logged
        assert _wait_for(lambda: p.status.value != first, 5), p.status.value
        assert "starting: loading model and data…" in p.status.value and " s" in p.status.value
        (out / "metrics.jsonl").write_text(json.dumps(_train_record(1, per=2.0)) + "\n"
                                           + json.dumps(_train_record(12)) + "\n")
        assert _wait_for(lambda: "12 / 800 it" in p.status.value), p.status.value
        assert "12 / 800 it · 0.46 s/it · ETA 6:02" in p.status.value  # 788 steps x 0.46 s
        assert "starting" not in p.status.value and "loss 1.500" in p.status.value
        assert (p.progress.value, p.progress.max) == (12, 800)
    finally:
        p.stop(timeout=4)
    assert p.state == "stopped"


def test_training_status_of_an_epoch_family_names_the_epoch():
    p = wbw.TrainingPanel("data", "out", model_name="Mask-RT-DETR-S", epochs_iters=12)
    p.state, p._t_start = "running", time.time() - 7
    p._draw()
    assert "starting: loading model and data… 7 s" in p.status.value
    p.records = [_train_record(5, max_iter=60, per=0.5, epoch=1), _train_record(15, max_iter=60, per=0.5, epoch=3)]
    p._draw()
    assert "epoch 3 / 12 · 15 / 60 it · 0.50 s/it · ETA 0:22" in p.status.value


def test_training_summary_is_readable(tmp_path):
    best = tmp_path / "best_model"
    best.mkdir()
    final = tmp_path / "model_final.pth"
    final.write_bytes(b"x")
    p = wbw.TrainingPanel("data", str(tmp_path), model_name="MaskRCNN-ResNet50-FPN")
    p.records = [_train_record(20, max_iter=20)]
    p.state = "done"
    p.train_result = {"status": "done", "unit": "iterations", "epochs_iters": 20, "max_epochs_iters": 20,
                      "iterations": 20, "best_epochs_iters": 10, "wall_time_s": 75.0,
                      "best_metrics": {"segm_AP": 0.25, "bbox_AP": 0.3},
                      "paths": {"best_model": str(best), "model_final": str(final),
                                "last_checkpoint": str(tmp_path / "model_0000020.pth")}}
    lines = p.summary().splitlines()
    assert lines[0] == "status: done"
    assert lines[1] == "iterations: 20 / 20 (20 optimizer steps, 1:15)"
    assert lines[2] == "best val mask AP 0.250, box AP 0.300 at iteration 10"
    assert lines[3:] == [f"best weights: {best}", f"last weights: {final}"]
    assert "{" not in p.summary()  # no raw dict
    p.state = "stopped"
    p.train_result = {**p.train_result, "status": "stopped", "best_epochs_iters": None, "best_metrics": None}
    assert p.summary().splitlines()[0] == "status: stopped" and "best weights" not in p.summary()


def test_training_panel_charts_wrap():
    p = wbw.TrainingPanel("data", "out", model_name="MaskRCNN-ResNet50-FPN")
    assert p.charts.layout.flex_flow == "row wrap"
    assert list(p.charts.children) == [p.loss_out, p.metric_out]
    for out in p.charts.children:
        assert out.layout.min_width and out.layout.flex  # shares the row, stacks below its minimum
    assert p.charts in p.children and all(not isinstance(c, W.HBox) for c in p.children)


# ----------------------------------------------------------------------- evaluate once
class CountingModel(BaseModel):
    """A model whose ``infer`` gives the ground truth of the image (first instance dropped on odd
    images) and counts the images it is asked for."""

    family = "test"

    def __init__(self, dataset_dir):
        from workbench.data.dataset import Dataset
        from workbench.engine.classes import ClassMap

        self.ds = Dataset.load_paddlex(dataset_dir, "val")
        super().__init__("counting", weights="counting.pth", device="cpu", classes=ClassMap.from_dataset(self.ds),
                         input_size=96)
        self.by_path = {str(self.ds.image_path(im)): (k, im) for k, im in enumerate(self.ds.images)}
        self.inferred: list[str] = []

    def build(self):
        return None

    def infer(self, images, paths, threshold=0.5, mask_threshold=0.5, keep_image=True):
        from workbench.engine.result import Result

        out = []
        for path in paths:
            self.inferred.append(path)
            k, im = self.by_path[path]
            insts, masks = self.ds.masks(im)
            keep = list(range(len(insts)))[k % 2:]
            out.append(Result(input_path=path, image_size=(im.height, im.width),
                              boxes=[[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                                     for a in (insts[i] for i in keep)],
                              scores=[0.9] * len(keep), class_ids=[insts[i].category_id for i in keep],
                              class_names=["x"] * len(keep),
                              masks=masks[keep] if keep else np.zeros((0, im.height, im.width), bool)))
        return out

    def save(self, path):
        raise NotImplementedError

    def train_job(self, dataset_dir, output, device, args):
        raise NotImplementedError


def test_evaluate_keeps_its_predictions_with_a_progress_bar(shapes_dir, tmp_path, capsys):
    from workbench.engine.model import Evaluation

    model = CountingModel(shapes_dir)
    ev = model.evaluate(shapes_dir, output=tmp_path / "eval")
    n = len(model.ds.images)
    assert isinstance(ev, Evaluation) and len(ev.results) == n and len(model.inferred) == n
    assert [r.input_path for r in ev.results] == [str(model.ds.image_path(im)) for im in model.ds.images]
    assert json.loads(json.dumps(ev)) == json.loads(json.dumps(dict(ev)))  # JSON-ready, as a plain dict
    assert "results" not in ev
    assert "evaluate counting on val: 100%|" in capsys.readouterr().err  # the bar, titled
    model.evaluate(shapes_dir, progress=False)
    assert "evaluate counting" not in capsys.readouterr().err
    ex = wbw.EvaluationExplorer(ev, shapes_dir)  # the explorer takes evaluate's predictions
    assert ex.results == ev.results and ex.ranking and len(model.inferred) == 2 * n


def test_evaluate_notebook_predicts_the_split_once(shapes_dir, tmp_path, monkeypatch):
    """05_evaluate's cells, the model replaced by one that counts: each val image is predicted once,
    and the explorer shows those predictions."""
    import plotly.io as pio

    import workbench

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # the notebook's setup_notebook()
    model = CountingModel(shapes_dir)
    monkeypatch.setattr(workbench, "create_model", lambda *a, **k: model, raising=False)
    monkeypatch.setattr("workbench.widgets.show_figures", lambda figs: shown.append(dict(figs)))
    shown: list[dict] = []
    nb = json.loads((NB_DIR / "05_evaluate.ipynb").read_text())
    ns = {"dataset_dir": str(shapes_dir), "model_name": "counting", "model_dir": str(tmp_path / "weights"),
          "output_dir": str(tmp_path / "eval"), "split": "val", "score_threshold": 0.5, "device": None}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" not in cell["metadata"].get("tags", []):
            exec("".join(cell["source"]), ns)  # noqa: S102 - the notebook's own cells
    assert sorted(model.inferred) == sorted(model.by_path)  # every image, once
    ex = ns["explorer"]
    kept = ns["evaluation"].results
    assert len(ex.results) == len(kept) and all(a is b for a, b in zip(ex.results, kept)) and ex.ranking
    assert (tmp_path / "eval" / "evaluate_result.json").is_file()
    # each chart once: the PR curves in the explorer, the other analysis charts below it
    assert ex.pr is not None and ex.pr_out.outputs
    assert shown and all("pr_curves" not in figs for figs in shown)
    assert {"confusion_matrix", "error_breakdown"} <= set(shown[0])
    assert "pr_curves" in ex.figures()  # still there for API users


def test_evaluation_explorer_parts_wrap(shapes_dir, tmp_path):
    model = CountingModel(shapes_dir)
    ev = model.evaluate(shapes_dir, progress=False)
    ex = wbw.EvaluationExplorer(ev, shapes_dir)
    rows = [c for c in ex.children if isinstance(c, W.Box) and not isinstance(c, (W.VBox, W.HBox))]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows)
    pair = next(r for r in rows if "wb-image-pair" in r._dom_classes)
    assert pair.children[0].children[1] is ex.gt_image and pair.children[1].children[1] is ex.pred_image
    assert not any(isinstance(c, W.HBox) for c in ex.children)
    assert ex.pr_out.layout.min_width
