"""Configs: every model YAML loads, overrides apply, bad keys/values are named errors, CLI shape."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.config import ConfigError, available_configs, load_config

PADDLEX_NAMES = [
    "MaskRCNN-ResNet50-FPN", "MaskRCNN-ResNet50", "MaskRCNN-ResNet101-FPN", "MaskRCNN-ResNeXt101-vd-FPN",
    "MaskRCNN-ResNet50-vd-FPN", "MaskRCNN-ResNet101-vd-FPN", "MaskRCNN-ResNet50-vd-SSLDv2-FPN",
    "Cascade-MaskRCNN-ResNet50-FPN", "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN",
    "Mask-RT-DETR-S", "Mask-RT-DETR-M", "Mask-RT-DETR-L", "Mask-RT-DETR-X", "Mask-RT-DETR-H", "PP-YOLOE_seg-S",
]


def test_every_paddlex_name_has_a_config():
    assert sorted(PADDLEX_NAMES) == available_configs()
    for name in PADDLEX_NAMES:
        cfg = load_config(name)
        assert cfg["Global"]["model"] == name
        assert set(cfg) == {"Global", "CheckDataset", "Train", "Evaluate", "Predict"}


def test_overrides_are_typed():
    cfg = load_config("Mask-RT-DETR-L", ["Global.mode=train", "CheckDataset.split.enable=True",
                                         "CheckDataset.split.train_percent=80", "Train.learning_rate=1e-3",
                                         "Global.dataset_dir=2024", "Global.device=gpu:0,1"])
    assert cfg["Global"]["mode"] == "train"
    assert cfg["CheckDataset"]["split"]["enable"] is True
    assert cfg["CheckDataset"]["split"]["train_percent"] == 80
    assert cfg["Train"]["learning_rate"] == pytest.approx(1e-3)
    assert cfg["Global"]["dataset_dir"] == "2024"  # a path stays a string
    assert cfg["Global"]["device"] == "gpu:0,1"


@pytest.mark.parametrize("override,fragment", [
    ("Global.mdoe=train", "Global.mode"),
    ("Train.nope=1", "Train.nope"),
    ("Train.batch_size=0", "Train.batch_size"),
    ("Train.batch_size=two", "Train.batch_size"),
    ("Global.mode=fly", "Global.mode"),
    ("CheckDataset.split.enable=maybe", "CheckDataset.split.enable"),
    ("CheckDataset.split.val_percent=120", "CheckDataset.split.val_percent"),
    ("Predict.threshold=2", "Predict.threshold"),
    ("Global.mode", "Section.key=value"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config("MaskRCNN-ResNet50-FPN", [override])


def test_bad_config_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("Global:\n  mode: train\nTrian:\n  batch_size: 2\n")
    with pytest.raises(ConfigError, match="Trian.*did you mean 'Train'"):
        load_config(p)
    p.write_text("Train:\n  batch_size: 2\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="Train.lr"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config("MaskRCNN-ResNet51")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd)


def test_paddlex_command_shape_check_and_split(shapes_dir, tmp_path):
    r = _cli("-c", "MaskRCNN-ResNet50-FPN", "-o", "Global.mode=check_dataset", "-o", f"Global.dataset_dir={shapes_dir}",
             "-o", "CheckDataset.split.enable=True", "-o", "CheckDataset.split.train_percent=50",
             "-o", "CheckDataset.split.val_percent=50", "-o", f"Global.output={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr
    assert "Check dataset passed !" in r.stdout
    res = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    assert res["attributes"]["train_samples"] == res["attributes"]["val_samples"] == 6
    assert (shapes_dir / "annotations" / "instance_train.json.bak").exists()


def test_cli_reports_config_errors_plainly(tmp_path):
    r = _cli("-c", "MaskRCNN-ResNet50-FPN", "-o", "Global.mdoe=train")
    assert r.returncode == 2 and "Global.mdoe" in r.stderr and "Traceback" not in r.stderr
    r = _cli("-c", "MaskRCNN-ResNet50-FPN", "-o", "Global.mode=check_dataset")
    assert r.returncode == 2 and "Global.dataset_dir" in r.stderr and "Traceback" not in r.stderr


def test_cli_check_subcommand_fails_on_bad_data(shapes_dir, tmp_path):
    (shapes_dir / "annotations" / "instance_val.json").unlink()
    r = subprocess.run([sys.executable, "-m", "workbench", "check", str(shapes_dir), "--output", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "instance_val.json" in r.stdout and "missing_annotation_file" in r.stdout
