"""The installed environment: pins in sync, console script, Detectron2 importable and runnable on CPU."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = dict(_norm(r) for r in py["project"]["dependencies"] + py["project"]["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    env_pins = dict(_norm(r) for r in pip if not r.startswith("-e"))
    env_pins.pop("setuptools", None)
    assert env_pins == pins
    assert "python=3.11" in env["dependencies"]
    assert all(v.startswith("==") for v in pins.values()), "every dependency is pinned exactly"


def test_console_script_installed():
    exe = Path(sys.executable).parent / "workbench"
    assert exe.exists() or shutil.which("workbench")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "check" in r.stdout and "convert" in r.stdout


def test_detectron2_mask_rcnn_forward_on_cpu():
    import numpy as np
    import PIL.Image
    import torch

    if not hasattr(PIL.Image, "LINEAR"):  # Detectron2 0.6 uses the name Pillow 10 removed
        PIL.Image.LINEAR = PIL.Image.BILINEAR
    import detectron2
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    assert detectron2.__version__ == "0.6"
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 128, 160), dtype=np.uint8))
    with torch.no_grad():
        out = model([{"image": img, "height": 128, "width": 160}])
    inst = out[0]["instances"]
    assert inst.image_size == (128, 160)
    assert inst.has("pred_masks") and inst.has("pred_boxes")
    if len(inst):
        assert inst.pred_masks.shape[1:] == (128, 160)
    # and a training forward gives the Mask R-CNN losses
    from detectron2.structures import BitMasks, Boxes, Instances

    model.train()
    gt = Instances((128, 160))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0]]))
    gt.gt_classes = torch.tensor([1])
    m = torch.zeros(1, 128, 160, dtype=torch.bool)
    m[0, 10:70, 10:60] = True
    gt.gt_masks = BitMasks(m)
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        losses = model([{"image": img, "height": 128, "width": 160, "instances": gt}])
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
