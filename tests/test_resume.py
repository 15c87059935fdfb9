"""Resume is exact and the run directory consistent: a CPU run killed with SIGKILL at a random moment
and resumed ends with bitwise the weights of the uninterrupted run (smallest Detectron2
configuration, reduced Mask-RT-DETR-S); a killed run reads as ``"killed"``; resuming cuts
``metrics.jsonl`` and the checkpoints back to the checkpoint; resuming a finished run changes nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.data.synthetic import make_shapes_dataset
from workbench.engine.run_dir import RunDir, read_train_result

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from workbench.models import create_model
family, data, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if family == "detectron2":
    m = create_model("MaskRCNN-ResNet50-FPN", device="cpu", input_size=96, depth=18,
                     d2_overrides={"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32})
    m.train(data, epochs_iters=10, batch_size=2, output=out, save_interval=2, eval_interval=5, log_interval=1,
            max_to_keep=2, progress=False, resume=resume)
else:
    m = create_model("Mask-RT-DETR-S", device="cpu", num_queries=20, num_decoder_layers=2, num_denoising=10,
                     freeze_norm=False, num_sample_points=512)
    m.train(data, epochs_iters=4, batch_size=2, input_size=96, multi_scale=False, warmup_steps=2, output=out,
            save_interval=1, eval_interval=2, log_interval=1, max_to_keep=2, progress=False, resume=resume)
"""

CASES = {  # family: (first checkpoint after which to kill, final step, steps per unit)
    "detectron2": ("model_0000004.pth", 10, 1),
    "mask_rtdetr": ("model_0000001.pth", 4, 3),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume_data")
    make_shapes_dataset(d, num_train=6, num_val=2, size=(96, 96), seed=5)
    return d


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}


def _run(script: Path, family: str, data: Path, out: Path, resume: bool) -> None:
    r = subprocess.run([sys.executable, str(script), family, str(data), str(out), "1" if resume else "0"],
                       env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


def _weights(path: Path) -> dict:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return ck["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(torch.as_tensor(wa[k]), torch.as_tensor(wb[k]))]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ after resume, e.g. {differ[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(CASES))
def test_killed_and_resumed_run_equals_uninterrupted_run(family, data, tmp_path):
    first_ckpt, final, _ = CASES[family]
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)

    ref = tmp_path / "uninterrupted"
    _run(script, family, data, ref, resume=False)

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), family, str(data), str(out), "0"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / first_ckpt).exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.Random(family).uniform(0.0, 1.5))  # a random moment after the first checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model_final.pth").exists(), "the run finished before it was killed"
    killed = RunDir(out).read_result()
    assert killed["status"] == "killed" and not killed["done_flag"] and "resume" in killed["error"].lower()
    raw = json.loads((out / "train_result.json").read_text())
    assert raw["status"] == "running" and raw["pid"] == proc.pid and raw["iterations"] >= 1

    _run(script, family, data, out, resume=True)

    _assert_same_weights(ref / "model_final.pth", out / "model_final.pth")
    _assert_same_weights(ref / "best_model" / "model.pth", out / "best_model" / "model.pth")
    res = json.loads((out / "train_result.json").read_text())
    want = json.loads((ref / "train_result.json").read_text())
    assert res["status"] == "done" and res["iterations"] == want["iterations"]
    assert res["final_metrics"] == {**want["final_metrics"], "eval_time_s": res["final_metrics"]["eval_time_s"]}
    assert "was killed after" in (out / "train.log").read_text()

    # metrics.jsonl: every record once, the same records as the uninterrupted run (timings aside)
    def records(run):
        drop = ("time", "elapsed_s", "eval_time_s")
        return [{k: v for k, v in r.items() if k not in drop} for r in RunDir(run).read_metrics()]

    assert records(out) == records(ref)
    assert len(RunDir(out).checkpoints()) == 2 and (out / "last_checkpoint").read_text() == f"model_{final:07d}.pth"


@pytest.mark.slow
def test_resume_of_a_finished_run_changes_nothing(data, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    _run(script, "mask_rtdetr", data, out, resume=False)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "train.log"}
    _run(script, "mask_rtdetr", data, out, resume=True)
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "train.log"}
    assert after == before
    assert "already finished" in (out / "train.log").read_text()


def test_metrics_cut_back_to_the_checkpoint(tmp_path):
    run = RunDir(tmp_path).make()
    for i in range(1, 9):
        run.append_metrics({"type": "train", "iter": i})
        if i % 4 == 0:
            run.append_metrics({"type": "eval", "iter": i, "epochs_iters": i})
    with open(run.metrics, "a") as f:
        f.write('{"type": "train", "it')  # a line cut by the kill
    assert run.truncate_metrics(iterations=5, done=5) == 5
    assert [(r["type"], r["iter"]) for r in run.read_metrics()] == [("train", i) for i in range(1, 5)] + [
        ("eval", 4),
        ("train", 5),
    ]
    for step in (2, 4, 6, 8):
        run.checkpoint(step).write_bytes(b"x")
    assert [p.name for p in run.drop_checkpoints_after(4)] == ["model_0000006.pth", "model_0000008.pth"]
    assert [p.name for p in run.prune_checkpoints(1)] == ["model_0000002.pth"]


def test_running_status_of_a_dead_process_reads_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    path = tmp_path / "train_result.json"
    import socket

    path.write_text(json.dumps({"status": "running", "done_flag": False, "pid": p.pid, "host": socket.gethostname(),
                                "iterations": 3, "updated_at": "2026-12-01T10:00:00+0000"}))
    d = read_train_result(path)
    assert d["status"] == "killed" and "pid" in d["error"] and "3 iterations" in d["error"]
    path.write_text(json.dumps({"status": "running", "pid": os.getpid(), "host": socket.gethostname()}))
    assert read_train_result(path)["status"] == "running"  # alive: left as it is


def test_stop_during_start_up_records_stopped(data, tmp_path, monkeypatch):
    """A Stop (SIGINT) before the first step leaves this run's status, not the previous run's."""
    from workbench.models import create_model
    from workbench.models.detectron2.trainer import Detectron2Trainer

    out = tmp_path / "run"
    out.mkdir()
    (out / "train_result.json").write_text(json.dumps({"status": "done", "done_flag": True}))  # an older run

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Detectron2Trainer, "build", interrupted)
    m = create_model("MaskRCNN-ResNet50-FPN", device="cpu", input_size=96, depth=18)
    with pytest.raises(KeyboardInterrupt):
        m.train(data, epochs_iters=2, batch_size=1, output=out, progress=False)
    res = RunDir(tmp_path / "run-2").read_result()  # a new run: its own folder (tests/test_rundirs.py)
    assert res["status"] == "stopped" and not res["done_flag"] and res["pid"] == os.getpid()
    assert json.loads((out / "train_result.json").read_text()) == {"status": "done", "done_flag": True}
