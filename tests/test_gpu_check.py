"""The GPU check's CPU dry run: ``benchmarks/gpu_check.py --device cpu --tiny`` on one model of each
registered family trains, predicts, exports (or says export is not available) and times every stage,
and writes a JSON report with finite numbers and a markdown table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.models import families, family_info

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
# per registered family, its smallest model (the one its smoke configuration names)
MODELS = {fam: family_info(names[0]).smoke.get("name", names[0]) for fam, names in families().items()}


def _finite(entry: dict, *keys: str) -> None:
    for k in keys:
        v = entry[k]
        assert isinstance(v, (int, float)) and math.isfinite(v), (k, v, entry)


# 55-85 s on the shared 2-core machine (two trainings with an evaluation each, an ONNX export, two timed models)
@pytest.mark.slow
def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--output", str(out), "--models", *MODELS.values()]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["failures"] == []
    assert doc["env"]["device"] == "cpu" and doc["env"]["torch"]
    assert set(doc["families"]) == set(MODELS)
    for fam, name in MODELS.items():
        e = doc["families"][fam]
        assert e["model"] == name
        tr, pr, ex, lat = e["train"], e["predict"], e["export"], e["latency"]
        assert tr["status"] == "ok" and tr["amp"] is False  # AMP is CUDA-only
        assert tr["iterations"] >= 1
        _finite(tr, "seconds", "s_per_iter", "first_loss", "last_loss", "stage_s")
        assert pr["status"] == "ok" and pr["images"] >= 1
        _finite(pr, "seconds", "ms_per_image", "detections")
        assert ex["status"] in ("exported", "not available"), ex
        _finite(ex, "seconds")
        if ex["status"] == "exported":
            _finite(ex, "size_mb")
        assert lat["status"] == "ok" and lat["weights"] == "random"
        _finite(lat, "infer_ms", "build_s")
        if lat["forward_ms"] is not None:
            _finite(lat, "forward_ms")
        assert doc["latency"][name] == lat
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| model | forward ms |" in md and all(n in md for n in MODELS.values())


def test_gpu_check_wrapper_is_valid_bash():
    sh = REPO / "benchmarks" / "gpu_check.sh"
    proc = subprocess.run(["bash", "-n", str(sh)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "timeout" in sh.read_text() and "benchmarks/gpu_check.py" in sh.read_text()
