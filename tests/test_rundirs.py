"""Every training run has its own folder (``output``, ``output-2`` …), a resumed run continues in its
own, ``latest.json`` points at the newest run with a best model, and a run folder given as weights
(``runs/x/train``, ``runs/x/latest``) means that latest run; without a trained model the error says
"train first" (issue 13, item 3)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.engine.errors import NoTrainedModelError, WeightsError
from workbench.engine.run_dir import LATEST, RunDir, latest_run, new_run_dir
from workbench.engine.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[1]


def _run(folder: Path, status: str = "done", weights: bool = True, pid: int | None = None) -> Path:
    """A fake run folder: ``train_result.json`` with ``status`` and optionally a best model."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"status": status, "iterations": 3}
    if pid is not None:
        rec.update(pid=pid, host=socket.gethostname())
    (folder / "train_result.json").write_text(json.dumps(rec))
    if weights:
        (folder / "best_model").mkdir(exist_ok=True)
        (folder / "best_model" / "model.pth").write_bytes(b"weights of " + folder.name.encode())
    return folder


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_new_runs_get_numbered_folders_and_resume_stays(tmp_path):
    base = tmp_path / "runs" / "train"
    assert new_run_dir(base) == base  # nothing there yet
    base.mkdir(parents=True)
    (base / "training_panel.log").write_text("")
    assert new_run_dir(base) == base  # created but never started: used as it is
    _run(base)
    assert new_run_dir(base) == tmp_path / "runs" / "train-2"
    assert new_run_dir(base, resume=True) == base
    killed = _run(tmp_path / "runs" / "train-2", "running", weights=False, pid=_dead_pid())
    assert new_run_dir(base, resume=True) == killed  # resume continues the newest run, in its folder
    assert new_run_dir(base, resume=True, resume_path=base / "model_0000002.pth") == base
    assert new_run_dir(base) == tmp_path / "runs" / "train-3"
    assert json.loads((killed / "train_result.json").read_text())["status"] == "killed"  # marked on the way
    (tmp_path / "runs" / "train-10").mkdir()  # one past the highest number, a never-started folder reused
    assert new_run_dir(base) == tmp_path / "runs" / "train-10"
    assert new_run_dir(tmp_path / "runs" / "train-2") == tmp_path / "runs" / "train-2-2"
    (tmp_path / "runs" / "trainer").mkdir()  # another series, not a number: not one of ours
    assert new_run_dir(tmp_path / "runs" / "trainer") == tmp_path / "runs" / "trainer"


def test_a_run_folder_as_weights_means_its_latest_run(tmp_path):
    runs = tmp_path / "runs"
    first, second = _run(runs / "train"), _run(runs / "train-2")
    third = _run(runs / "train-3", "stopped", weights=False)  # stopped before it had a best model
    assert latest_run(runs / "train") == second  # the newest run with weights
    assert resolve_weights(runs / "train") == second / "best_model" / "model.pth"
    assert resolve_weights(first / "best_model") == first / "best_model" / "model.pth"  # one run, exactly
    RunDir(first).mark_latest()  # latest.json names the run that last saved a best model
    assert json.loads((runs / LATEST).read_text())["run"] == "train"
    assert resolve_weights(runs / "train") == first / "best_model" / "model.pth"
    assert resolve_weights(runs / "latest") == first / "best_model" / "model.pth"
    with pytest.raises(NoTrainedModelError, match="no trained model at .*train-3: train first"):
        resolve_weights(third)


def test_train_first_error(tmp_path):
    missing = tmp_path / "runs" / "notebooks" / "train" / "best_model"
    with pytest.raises(NoTrainedModelError) as info:
        resolve_weights(missing)
    assert str(info.value) == f"no trained model at {missing}: train first (04_train) or set model_dir"
    assert isinstance(info.value, WeightsError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(NoTrainedModelError, match="train first"):
        resolve_weights(tmp_path / "runs" / "latest")
    with pytest.raises(WeightsError, match="weights file not found"):
        resolve_weights(tmp_path / "some_download.pth")  # a file someone named: no "train first"
    from workbench.models import create_model

    with pytest.raises(NoTrainedModelError, match="train first"):
        create_model("MaskRCNN-ResNet50-FPN", weights=str(missing), device="cpu")
    # the command line: one line, exit 1, the same hint
    out = tmp_path / "runs" / "cli_train"
    r = subprocess.run([sys.executable, "-m", "workbench", "-c", "MaskRCNN-ResNet50-FPN", "-o",
                        "Global.mode=evaluate", "-o", f"Global.dataset_dir={tmp_path}", "-o",
                        f"Global.output={out}", "-o", "Global.device=cpu"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[0] == f"error: no trained model at {out}: train first (04_train) or set model_dir"


def test_demo_chain_follows_the_latest_run(tmp_path):
    from workbench.pipeline.demo import demo_plan

    plan = demo_plan(tmp_path / "demo")
    train = Path(plan["train"]["output_dir"])
    _run(train), _run(train.with_name("train-2"))
    for step in ("evaluate", "predict"):
        assert resolve_weights(plan[step]["model_dir"]) == train.with_name("train-2") / "best_model" / "model.pth"


def test_notebooks_default_to_the_latest_run():
    for name in ("05_evaluate", "06_predict"):
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        ns: dict = {}
        exec("".join(params["source"]), ns)  # noqa: S102 - the notebook's own parameter cell
        assert ns["model_dir"] == "runs/notebooks/train", name  # 04's output_dir: its latest run


def test_second_training_run_gets_its_own_folder(tmp_path):
    """Two real (tiny) runs given the same output: the first run's files stay as they were, the
    second writes ``train-2``, ``latest.json`` points at it and the folder as weights loads it."""
    pytest.importorskip("detectron2")
    from workbench.data.synthetic import make_shapes_dataset
    from workbench.models import create_model

    shapes_dir = tmp_path / "shapes"
    make_shapes_dataset(shapes_dir, num_train=2, num_val=1, size=(64, 64), seed=3)
    out = tmp_path / "runs" / "train"
    kw = dict(epochs_iters=1, batch_size=1, eval_interval=1, save_interval=1, log_interval=1, progress=False)
    m = create_model("MaskRCNN-ResNet50-FPN", device="cpu", input_size=64, depth=18)
    first = m.train(shapes_dir, output=out, **kw)
    assert first["paths"]["output"] == str(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "train.log"}
    second = m.train(shapes_dir, output=out, **kw)
    two = out.with_name("train-2")
    assert second["status"] == "done" and second["paths"]["output"] == str(two)
    assert second["paths"]["best_model"] == str(two / "best_model")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "train.log"} == before
    assert json.loads((out.parent / LATEST).read_text())["run"] == "train-2"
    assert create_model("MaskRCNN-ResNet50-FPN", weights=str(out), device="cpu").weights == str(
        two / "best_model" / "model.pth")
    # resuming with the same output continues the newest run (finished: nothing to do), no train-3
    again = m.train(shapes_dir, output=out, resume=True, **kw)
    assert again["paths"]["output"] == str(two) and not out.with_name("train-3").exists()


def test_training_panel_starts_each_run_in_its_own_folder(tmp_path, monkeypatch):
    """The panel reads the folder its run writes: a new one beside a finished run, the run's own on resume."""
    from workbench import widgets as wbw

    out = _run(tmp_path / "runs" / "train")
    before = sorted(p.name for p in out.rglob("*"))
    monkeypatch.setattr(wbw.TrainingPanel, "command", lambda self, spec: [sys.executable, "-c", "pass"])
    p = wbw.TrainingPanel(str(tmp_path / "data"), str(out), epochs_iters=1, batch_size=1, poll_interval=0.1)
    p.start()
    p.wait(30)
    two = out.with_name("train-2")
    assert p._spec["output_dir"] == str(two.resolve()) and (two / "training_panel.log").is_file()
    assert "in <code>train-2/</code>" in p.status.value and f"run folder: {two.resolve()}" in p.summary()
    assert sorted(q.name for q in out.rglob("*")) == before  # the finished run is left alone
    p = wbw.TrainingPanel(str(tmp_path / "data"), str(out), epochs_iters=1, batch_size=1, poll_interval=0.1,
                          train_kwargs={"resume": True})
    p.start()
    p.wait(30)
    assert p._spec["output_dir"] == str(out.resolve())  # two holds no run (never started): resume the first
