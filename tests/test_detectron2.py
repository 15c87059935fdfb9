"""Detectron2 family: registry, ResNet-vd backbone, weights, dataset registration, class checks,
COCO evaluation, and one training iteration + prediction for every registered name (CPU)."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from workbench.data.synthetic import make_shapes_dataset
from workbench.engine.result import Result
from workbench.models import DETECTRON2_MODELS, UnknownModelError, available_models, create_model, register_family
from workbench.models.detectron2.predictor import box_predictors

# Small images and few sampled RoIs per image keep CPU steps short; both are ordinary settings
# for 128-px images with a handful of objects (Detectron2's 512 RoIs/image are sized for COCO).
FAST = {"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(d, num_train=4, num_val=2, size=(128, 128), seed=3)
    return d


@pytest.fixture(scope="module")
def shapes_noval(tmp_path_factory, shapes):
    d = tmp_path_factory.mktemp("shapes_noval") / "ds"
    shutil.copytree(shapes, d)
    (d / "annotations" / "instance_val.json").unlink()
    return d


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownModelError) as e:
        create_model("MaskRCNN-ResNet51-FPN")
    msg = str(e.value)
    assert "MaskRCNN-ResNet50-FPN" in msg and "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN" in msg
    assert "Did you mean 'MaskRCNN-ResNet50-FPN'" in msg or "Did you mean 'MaskRCNN-ResNet101-FPN'" in msg


def test_every_paddlex_name_registered():
    names = set(available_models())
    assert set(DETECTRON2_MODELS) <= names
    assert len(DETECTRON2_MODELS) == 9


def test_register_family_plugs_in_another_family():
    calls = []

    def factory(name, weights=None, device=None, **kw):
        calls.append((name, weights, device, kw))
        return "built"

    register_family(["Toy-Model-X"], factory, family="toy")
    try:
        assert create_model("Toy-Model-X", weights="w.pth", device="cpu", depth=3) == "built"
        assert calls == [("Toy-Model-X", "w.pth", "cpu", {"depth": 3})]
        with pytest.raises(ValueError, match="already registered"):
            register_family(["MaskRCNN-ResNet50-FPN"], factory, family="toy")
    finally:
        from workbench.models import registry

        registry._NAME_TO_FAMILY.pop("Toy-Model-X", None)
        registry._FAMILIES.pop("toy", None)


def test_resnet_vd_backbone_structure():
    import torch
    from detectron2.modeling import build_backbone
    from torch import nn

    from workbench.models.detectron2.config import build_cfg
    from workbench.models.detectron2.resnet_vd import DeepStem

    cfg = build_cfg("MaskRCNN-ResNet50-vd-FPN", num_classes=2)
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_vd_fpn_backbone"
    bb = build_backbone(cfg)
    bottom = bb.bottom_up
    assert isinstance(bottom.stem, DeepStem)
    assert [c.weight.shape[-1] for c in (bottom.stem.conv1, bottom.stem.conv2, bottom.stem.conv3)] == [3, 3, 3]
    # downsampling shortcuts average-pool first; res2's first shortcut (stride 1) is a plain conv
    res3_first = bottom.res3[0]
    assert isinstance(res3_first.shortcut, nn.Sequential) and isinstance(res3_first.shortcut[0], nn.AvgPool2d)
    assert res3_first.shortcut[1].stride == (1, 1)
    assert not isinstance(bottom.res2[0].shortcut, nn.Sequential)
    assert res3_first.conv2.stride == (2, 2)  # stride in the 3x3
    out = bb(torch.zeros(1, 3, 128, 128))
    assert {k: v.shape[-1] for k, v in out.items()} == {"p2": 32, "p3": 16, "p4": 8, "p5": 4, "p6": 2}
    # ResNeXt-vd: 64 groups of width 4 in the first stage's 3x3
    cfg = build_cfg("MaskRCNN-ResNeXt101-vd-FPN", num_classes=2)
    x = build_backbone(cfg).bottom_up
    assert x.res2[0].conv2.groups == 64 and x.res2[0].conv2.in_channels == 256
    assert len(x.res4) == 23


def test_url_weights_fail_fast():
    from workbench.engine.errors import WeightsError

    t = time.perf_counter()
    with pytest.raises(WeightsError, match="cannot download weights from http://127.0.0.1:9/x.pth"):
        create_model("MaskRCNN-ResNet50-FPN", weights="http://127.0.0.1:9/x.pth", url_timeout=2)
    with pytest.raises(WeightsError, match="timeout 1 s|cannot download"):
        create_model("MaskRCNN-ResNet50-FPN", weights="http://10.255.255.1/model.pkl", url_timeout=1)
    assert time.perf_counter() - t < 15
    with pytest.raises(WeightsError, match="not found"):
        create_model("MaskRCNN-ResNet50-FPN", weights="/nonexistent/x.pth")
    with pytest.raises(WeightsError, match="no trained model at /nonexistent/model.pth: train first"):
        create_model("MaskRCNN-ResNet50-FPN", weights="/nonexistent/model.pth")


def test_dataset_registration_polygons_and_rle(shapes):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import detection_utils as utils

    from workbench.data.dataset import Dataset, rle_from_mask
    from workbench.engine.classes import ClassMap
    from workbench.models.detectron2.data import mask_format_for, register

    ds = Dataset.load_paddlex(shapes, "train")
    assert mask_format_for(ds) == "polygon"
    im = ds.images[0]
    inst = [a for a in ds.instances if a.image_id == im.id][0]
    want = inst.mask(im.height, im.width)
    inst.segmentation = rle_from_mask(want)            # RLE instance among polygons
    assert mask_format_for(ds) == "bitmask"
    classes = ClassMap.from_dataset(ds)
    name = register(ds, classes, tag="wb_test_rle")
    dicts = DatasetCatalog.get(name)
    assert MetadataCatalog.get(name).thing_classes == ds.category_names
    d0 = dicts[0]
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= set(range(len(classes)))
    insts = utils.annotations_to_instances(d0["annotations"], (d0["height"], d0["width"]), mask_format="bitmask")
    k = [i for i, a in enumerate(d0["annotations"]) if isinstance(a["segmentation"], dict)][0]
    got = insts.gt_masks.tensor[k].numpy()
    assert np.array_equal(got, want)


def test_class_mismatch_is_loud(tmp_path, shapes):
    from workbench.engine.errors import ClassMismatchError

    m = create_model("MaskRCNN-ResNet50-FPN", class_names=["apple", "pear"], depth=18, input_size=128)
    path = m.save(tmp_path / "w.pth")
    m2 = create_model("MaskRCNN-ResNet50-FPN", weights=path)
    assert m2.classes.names == ["apple", "pear"] and m2.depth == 18 and m2.input_size == 128
    with pytest.raises(ClassMismatchError, match="apple"):
        m2.evaluate(shapes)
    with pytest.raises(ClassMismatchError, match="class mismatch"):
        m2.train(shapes, epochs_iters=1, output=str(tmp_path / "out"), progress=False)
    from workbench.engine.errors import WeightsError

    with pytest.raises(WeightsError, match="not Cascade"):
        create_model("Cascade-MaskRCNN-ResNet50-FPN", weights=path)


def test_coco_eval_perfect_and_empty(shapes):
    from workbench.data.dataset import Dataset
    from workbench.evaluation import coco_metrics as evaluate_coco

    ds = Dataset.load_paddlex(shapes, "val")
    preds = []
    for a in ds.instances:
        im = ds.image_by_id()[a.image_id]
        rle = a.rle(im.height, im.width)
        preds.append({"image_id": a.image_id, "category_id": a.category_id, "bbox": a.bbox, "score": 0.9,
                      "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    res = evaluate_coco(ds, preds)
    assert res["segm"]["AP"] == pytest.approx(1.0) and res["bbox"]["AP50"] == pytest.approx(1.0)
    present = {ds.category_by_id()[a.category_id].name for a in ds.instances}
    assert all(res["segm"]["per_class"][n]["AP"] == pytest.approx(1.0) for n in present)
    assert set(res["segm"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"}
    empty = evaluate_coco(ds, [])
    assert empty["segm"]["AP"] == 0.0


def _reduced_depth(name: str) -> int:
    """The smallest depth of the same architecture: 18 (basic blocks); ResNeXt needs bottlenecks, 50."""
    return 50 if DETECTRON2_MODELS[name].num_groups > 1 else 18


ONE_ITER_CASES = [pytest.param(n, _reduced_depth(n), id=f"{n}-depth{_reduced_depth(n)}")
                  for n in sorted(DETECTRON2_MODELS)]
ONE_ITER_CASES.append(pytest.param("MaskRCNN-ResNeXt101-vd-FPN", None, id="MaskRCNN-ResNeXt101-vd-FPN-full-depth",
                                   marks=pytest.mark.slow))


@pytest.mark.parametrize("name,depth", ONE_ITER_CASES)
def test_one_iteration_and_prediction(name, depth, shapes_noval, tmp_path):
    """Every registered name builds, trains one iteration from scratch and predicts, on CPU: at the
    reduced depth of the same architecture in the fast tier, one name also at its full depth."""
    m = create_model(name, device="cpu", input_size=128, d2_overrides=FAST, depth=depth)
    out = tmp_path / "out"
    res = m.train(shapes_noval, epochs_iters=1, batch_size=1, output=str(out), save_interval=1, progress=False,
                  save_training_state=False)
    assert res["done_flag"] and res["iterations"] == 1 and res["status"] == "done"
    for f in ("train_result.json", "train.log", "config.yaml", "model_final.pth", "metrics.jsonl",
              "best_model/model.pth"):
        assert (out / f).is_file(), f
    assert json.loads((out / "train_result.json").read_text())["done_flag"] is True
    cfg_text = (out / "config.yaml").read_text()
    assert f"MODEL_NAME: {name}" in cfg_text
    if "-vd" in name:
        assert "build_resnet_vd_fpn_backbone" in cfg_text
    if "Cascade" in name:
        assert "CascadeROIHeads" in cfg_text
    img = next(iter(sorted((shapes_noval / "images").iterdir())))
    results = list(m.predict([img, np.zeros((96, 112, 3), np.uint8)], threshold=0.0))
    assert len(results) == 2 and all(isinstance(r, Result) for r in results)
    r0, r1 = results
    assert r0.input_path == str(img) and r0.image_size == (128, 128) and r1.image_size == (96, 112)
    if len(r0):
        assert r0.masks.shape[1:] == (128, 128) and r0.mask_probs is not None
        assert set(r0.class_names) <= {"circle", "square"} and set(r0.class_ids.tolist()) <= {1, 2}


@pytest.mark.parametrize("name", ["MaskRCNN-ResNet50-FPN", "Cascade-MaskRCNN-ResNet50-FPN"])
def test_threshold_under_the_models_score_floor_gets_every_detection(name):
    """``threshold`` below ``ROI_HEADS.SCORE_THRESH_TEST`` (0.05) lowers it for that call, so evaluation
    (threshold 0) sees every detection up to the per-image cap, as it does for Mask-RT-DETR; the
    model's own floor is back afterwards. 30 untrained classes: softmax scores near 1/31 < 0.05."""
    m = create_model(name, device="cpu", class_names=[f"c{i}" for i in range(30)], depth=18, input_size=128)
    img = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    every = m.infer([img], [None], threshold=0.0)[0]
    floor = m.infer([img], [None], threshold=0.05)[0]
    assert 0 < len(every) <= m.cfg.TEST.DETECTIONS_PER_IMAGE and every.scores.min() < 0.05
    assert len(floor) < len(every) and (floor.scores >= 0.05).all()
    assert all(p.test_score_thresh == 0.05 for p in box_predictors(m.build().roi_heads))
