"""Re-split: percent validation, reproducibility, stratification, .bak backups."""
from __future__ import annotations

import json

import pytest

from workbench.data.dataset import Dataset
from workbench.data.split import split_dataset
from workbench.data.synthetic import make_shapes_dataset


def _ids(d):
    return sorted(im.id for im in d.images)


def test_percent_pair_must_sum_to_100(shapes_dir):
    before = (shapes_dir / "annotations/instance_train.json").read_bytes()
    with pytest.raises(ValueError, match="must be 100"):
        split_dataset(shapes_dir, 70, 20)
    with pytest.raises(ValueError, match="between 0 and 100"):
        split_dataset(shapes_dir, 120, -20)
    assert (shapes_dir / "annotations/instance_train.json").read_bytes() == before
    assert not list((shapes_dir / "annotations").glob("*.bak"))


def test_split_is_reproducible_and_keeps_everything(shapes_dir, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(shapes_dir, other)
    all_before = _ids(Dataset.merge([Dataset.load_paddlex(shapes_dir, s) for s in ("train", "val")]))
    n_inst = sum(len(Dataset.load_paddlex(shapes_dir, s).instances) for s in ("train", "val"))
    a = split_dataset(shapes_dir, 75, 25, seed=7, verbose=False)
    b = split_dataset(other, 75, 25, seed=7, verbose=False)
    assert _ids(a["val"]) == _ids(b["val"])
    assert sorted(_ids(a["train"]) + _ids(a["val"])) == all_before
    assert len(a["train"].instances) + len(a["val"].instances) == n_inst
    assert len(a["val"].images) == 3
    c = split_dataset(other, 75, 25, seed=8, verbose=False)
    assert len(c["val"].images) == 3
    # files on disk hold the same as the returned datasets
    assert _ids(Dataset.load_paddlex(shapes_dir, "val")) == _ids(a["val"])


def test_split_keeps_bak(shapes_dir):
    old_train = (shapes_dir / "annotations/instance_train.json").read_bytes()
    old_val = (shapes_dir / "annotations/instance_val.json").read_bytes()
    split_dataset(shapes_dir, 50, 50, seed=1, verbose=False)
    assert (shapes_dir / "annotations/instance_train.json.bak").read_bytes() == old_train
    assert (shapes_dir / "annotations/instance_val.json.bak").read_bytes() == old_val
    split_dataset(shapes_dir, 80, 20, seed=1, verbose=False)  # a second split keeps the first backup
    assert (shapes_dir / "annotations/instance_train.json.bak").read_bytes() == old_train
    assert (shapes_dir / "annotations/instance_train.json.bak1").exists()


def test_stratified_rare_classes_land_in_both_splits(tmp_path):
    make_shapes_dataset(tmp_path, 30, 0, (64, 64), seed=2, classes=("circle", "square", "triangle"),
                        max_instances=1)
    # make one class rare: keep "triangle" in exactly two images, drop it elsewhere
    jf = tmp_path / "annotations/instance_train.json"
    d = json.loads(jf.read_text())
    tri_imgs = sorted({a["image_id"] for a in d["annotations"] if a["category_id"] == 3})
    assert len(tri_imgs) >= 2
    keep = set(tri_imgs[:2])
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] != 3 or a["image_id"] in keep]
    jf.write_text(json.dumps(d))
    (tmp_path / "annotations/instance_val.json").write_text(json.dumps({**d, "images": [], "annotations": []}))
    for seed in range(5):
        out = split_dataset(tmp_path, 90, 10, seed=seed, verbose=False)
        for name in ("circle", "square", "triangle"):
            assert out["train"].class_counts()[name] >= 1, (seed, name)
            assert out["val"].class_counts()[name] >= 1, (seed, name)


def test_failure_half_way_loses_nothing(shapes_dir, monkeypatch):
    import workbench.utils.io as io_mod

    ann = shapes_dir / "annotations"
    before = {p.name: p.read_bytes() for p in ann.iterdir()}
    real = io_mod.replace_with_backup
    calls = []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 2:  # the val file: the train file is already replaced by now
            raise OSError("disk full (simulated)")
        return real(path, data)

    monkeypatch.setattr(io_mod, "replace_with_backup", flaky)
    with pytest.raises(OSError, match="simulated"):
        split_dataset(shapes_dir, 50, 50, seed=0, verbose=False)
    after = {p.name: p.read_bytes() for p in ann.iterdir()}
    assert after == before  # both annotation files as they were, no stray backups or temp files
