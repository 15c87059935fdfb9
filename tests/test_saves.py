"""What the panels and explorers save never replaces what the notebook wrote (issue 13, item 3):
06's explorer Save writes a new file named by its thresholds; re-running the convert panel in one
session keeps the one backup of the user's original files instead of stacking ``.bak1``, ``.bak2``…"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench import widgets as wbw


def _soft_results(n_images: int = 2, size=(64, 80)):
    from workbench.engine.result import Result

    rng = np.random.default_rng(0)
    h, w = size
    out = []
    for k in range(n_images):
        yy, xx = np.mgrid[:h, :w]
        probs = [(np.clip(1 - np.hypot(yy - 12 - 12 * i, xx - 20 - 5 * k) / 14, 0, 1) * 255).astype(np.uint8)
                 for i in range(4)]
        boxes = [[10 + 5 * k, 2 + 12 * i, 30 + 5 * k, 22 + 12 * i] for i in range(4)]
        out.append(Result(input_path=f"img_{k}.png", image_size=size, boxes=boxes, scores=[0.9, 0.6, 0.3, 0.1],
                          class_ids=[1, 2, 1, 2], class_names=["circle", "square", "circle", "square"],
                          mask_probs=np.stack(probs), image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                          threshold=0.05))
    return out


def test_explorer_save_writes_a_new_named_file(tmp_path):
    out = tmp_path / "predict"
    results = _soft_results()
    for r in results:  # what 06 writes at its own thresholds
        shown = r.filter(threshold=0.5, mask_threshold=0.5)
        shown.save_to_img(out)
        shown.save_to_json(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    ex = wbw.PredictionExplorer(results, threshold=0.5, mask_threshold=0.5, output_dir=out)
    ex.threshold.value = 0.1 * 3  # 0.30000000000000004, as a slider's steps add up
    ex.mask_threshold.value = 0.05 * 17  # 0.8500000000000001
    p = ex.save_json()
    assert p == out / "img_0_res_t0.30_m0.85.json"
    assert {q.name: q.read_bytes() for q in out.iterdir() if q != p} == before  # byte for byte
    text = p.read_text()
    saved = json.loads(text)
    assert saved["threshold"] == 0.3 and saved["mask_threshold"] == 0.85 and "0000000" not in text
    assert len(saved["boxes"]) == 3 and str(p) in ex.saved.value  # scores 0.9, 0.6, 0.3
    assert "img_0_res_t0.30_m0.85.json" in ex.download.value
    ex.image_dd.value = 1
    ex.mask_threshold.value = 0.5
    assert ex.save_json() == out / "img_1_res_t0.30_m0.50.json"


def test_explorer_save_without_soft_masks_names_the_score_only(tmp_path):
    from workbench.engine.result import Result

    r = _soft_results(1)[0].filter(threshold=0.05)
    r.save_to_json(tmp_path / "img_0_res.json")
    loaded = Result.from_json(tmp_path / "img_0_res.json")
    loaded.image = r.image
    ex = wbw.PredictionExplorer([loaded], threshold=0.5, output_dir=tmp_path)
    assert ex.mask_threshold.disabled
    assert ex.save_json() == tmp_path / "img_0_res_t0.50.json"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_convert_panel_backs_up_once_per_session(demo_labelme_dir, tmp_path):
    from workbench.data.labelme import convert_labelme

    src, dst = demo_labelme_dir, tmp_path / "dataset"
    inputs = _tree(src)
    convert_labelme(src, dst, val_percent=20, progress=False, verbose=False)  # the user's earlier dataset
    ann = dst / "annotations"
    original = {p.name: p.read_bytes() for p in ann.iterdir()}
    panel = wbw.ConvertPanel(str(src), str(dst), val_percent=30)
    panel.run()  # the first Run keeps the user's files as .bak
    assert sorted(p.name for p in ann.iterdir()) == ["instance_train.json", "instance_train.json.bak",
                                                      "instance_val.json", "instance_val.json.bak"]
    assert {n: (ann / f"{n}.bak").read_bytes() for n in original} == original
    for val, seed in ((40, 0), (30, 1), (30, 1)):  # re-runs of the same panel: no .bak1, .bak2 …
        panel.val_percent.value, panel.seed.value = val, seed
        panel.run()
        assert not list(dst.rglob("*.bak[0-9]*")), sorted(p.name for p in dst.rglob("*.bak*"))
        assert not [p for p in dst.rglob(".*") if p.is_file()], "a hidden temporary file was left"
    assert {n: (ann / f"{n}.bak").read_bytes() for n in original} == original
    assert panel.result.summary["backups"] == []
    # a file the user changed since the panel wrote it is theirs again: backed up, never lost
    edited = b'{"images": [], "annotations": [], "categories": []}'
    (ann / "instance_val.json").write_bytes(edited)
    panel.run()
    assert (ann / "instance_val.json.bak1").read_bytes() == edited
    assert not (ann / "instance_train.json.bak1").exists()
    assert _tree(src) == inputs  # the LabelMe input is never changed
    # a new panel (a new session) backs up again, once
    wbw.ConvertPanel(str(src), str(dst), val_percent=30).run()
    assert (ann / "instance_train.json.bak1").exists() and not (ann / "instance_train.json.bak2").exists()


def test_replace_all_rolls_back_own_files_too(tmp_path, monkeypatch):
    """A failure half-way puts every replaced file back, the caller's own (not backed up) ones too."""
    from workbench.utils import io as wio

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    real = wio.replace_with_backup
    calls = []

    def failing_second(path, data, backup=True):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, data, backup=backup)

    monkeypatch.setattr(wio, "replace_with_backup", failing_second)
    with pytest.raises(OSError, match="disk full"):
        wio.replace_all_with_backup({a: b"new a", b: b"new b"}, own={a: wio.file_sha256(a)})
    assert a.read_bytes() == b"old a" and b.read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_split_panel_backs_up_once_per_session(demo_labelme_dir, tmp_path):
    from workbench.data.labelme import convert_labelme

    dst = tmp_path / "dataset"
    convert_labelme(demo_labelme_dir, dst, val_percent=20, progress=False, verbose=False)
    ann = dst / "annotations"
    original = {p.name: p.read_bytes() for p in ann.iterdir()}
    panel = wbw.SplitPanel(str(dst), val_percent=30)
    panel.run()  # the first Run keeps the dataset's files as .bak
    assert {n: (ann / f"{n}.bak").read_bytes() for n in original} == original
    for val, seed in ((40, 0), (30, 1), (30, 1)):  # re-runs of the same panel: no .bak1, .bak2 …
        panel.val_percent.value, panel.seed.value = val, seed
        panel.run()
        assert not list(ann.glob("*.bak[0-9]*")), sorted(p.name for p in ann.glob("*.bak*"))
    assert {n: (ann / f"{n}.bak").read_bytes() for n in original} == original
    edited = (ann / "instance_val.json").read_bytes().replace(b'"images"', b'"images" ', 1)
    (ann / "instance_val.json").write_bytes(edited)  # the user's own change since: backed up again
    panel.run()
    assert (ann / "instance_val.json.bak1").read_bytes() == edited and not (ann / "instance_train.json.bak1").exists()
