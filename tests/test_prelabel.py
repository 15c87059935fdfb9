"""The labelling loop: predictions -> LabelMe JSON (pre_label) -> convert -> the same masks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from workbench.data.labelme import convert_labelme
from workbench.data.prelabel import mask_to_polygons, polygons_iou, pre_label
from workbench.engine.result import Result

H, W = 96, 128
yy, xx = np.mgrid[:H, :W]


def _disc(cx, cy, r):
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2


def _masks_of_image(k: int) -> list[tuple[str, float, np.ndarray]]:
    """(class, score, mask) per instance: discs, a box at the border, an ellipse, a ring (a hole),
    two separate discs as one instance, a small disc and a low-score one (below the threshold)."""
    ring = _disc(88, 40, 26) & ~_disc(88, 40, 10)
    out = [
        ("circle", 0.91, _disc(24 + k, 24, 14)),
        ("square", 0.88, (xx < 20 + k) & (yy >= 60)),  # touches the left and bottom border
        ("ellipse", 0.77, ((xx - 60) / 30) ** 2 + ((yy - 80 + k) / 9) ** 2 < 1),
        ("ring", 0.66, ring),
        ("circle", 0.6, _disc(8, 8, 5) | _disc(120, 90, 5 + k)),  # one instance of two parts
        ("circle", 0.3, _disc(60, 50, 6)),  # below threshold=0.5: not written
    ]
    if k == 1:
        out.append(("square", 0.55, (xx >= 100) & (xx < 108) & (yy >= 2) & (yy < 12)))
    return out


def _bbox(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.fixture
def predicted(tmp_path):
    """Two generated images and Results built from known masks."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    results = []
    for k in range(2):
        path = img_dir / f"img_{k}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        inst = _masks_of_image(k)
        results.append(Result(input_path=str(path), image_size=(H, W), boxes=[_bbox(m) for _, _, m in inst],
                              scores=[s for _, s, _ in inst], class_ids=[0] * len(inst),
                              class_names=[c for c, _, _ in inst], masks=np.stack([m for _, _, m in inst]),
                              model_name="stub"))
    return img_dir, results


def _decoded(conv) -> dict[str, list[tuple[str, np.ndarray]]]:
    """file name -> [(class, mask)] of the converted train split, in annotation order."""
    from pycocotools import mask as mask_utils

    ds = conv["train"]
    names = {c.id: c.name for c in ds.categories}
    out = {im.file_name: [] for im in ds.images}
    by_id = {im.id: im for im in ds.images}
    for a in ds.instances:
        im = by_id[a.image_id]
        seg = a.segmentation
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, im.height, im.width)) if isinstance(seg, list) else \
            mask_utils.frPyObjects(seg, im.height, im.width)
        out[im.file_name].append((names[a.category_id], mask_utils.decode(rle).astype(bool)))
    return out


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.0])
def test_round_trip_predictions_labelme_convert(predicted, tmp_path, tolerance):
    img_dir, results = predicted
    lm = tmp_path / "labelme"
    s = pre_label(results, dst=lm, threshold=0.5, tolerance=tolerance, verbose=False)
    assert len(s["written"]) == 2 and not s["skipped"] and not s["backups"]

    d = json.loads((lm / "img_0.json").read_text())
    assert d["imagePath"] == "../images/img_0.png" and d["imageData"] is None
    assert (d["imageHeight"], d["imageWidth"]) == (H, W) and d["flags"] == {}
    assert all(sh["shape_type"] == "polygon" and sh["flags"] == {} for sh in d["shapes"])
    assert {sh["description"] for sh in d["shapes"]} == {"score=0.9100", "score=0.8800", "score=0.7700",
                                                         "score=0.6600", "score=0.6000"}
    two_part = [sh for sh in d["shapes"] if sh["description"] == "score=0.6000"]
    assert len(two_part) == 2 and two_part[0]["group_id"] is not None
    assert two_part[0]["group_id"] == two_part[1]["group_id"]
    assert all(sh["group_id"] is None for sh in d["shapes"] if sh["description"] != "score=0.6000")
    assert d["prelabel"]["model_name"] == "stub" and d["prelabel"]["tolerance"] == tolerance

    conv = convert_labelme(lm, tmp_path / "dataset", val_percent=0, progress=False, verbose=False)
    got = _decoded(conv)
    for r in results:
        kept = r.filter(threshold=0.5)
        name = r.input_path.rsplit("/", 1)[-1]
        assert [c for c, _ in got[name]] == kept.class_names
        for (_, m), want in zip(got[name], kept.masks):
            iou = _iou(m, want)
            assert iou >= 0.95, (name, tolerance, iou)
            if tolerance == 0:
                assert np.array_equal(m, want)  # the exact pixel outline, holes included


def test_holes_cut_or_filled():
    ring = _disc(60, 48, 30) & ~_disc(60, 48, 12)
    cut = mask_to_polygons(ring, tolerance=0.0)
    assert len(cut) == 1 and polygons_iou(cut, ring) == 1.0  # one polygon, the hole cut in
    filled = mask_to_polygons(ring, tolerance=0.0, holes="fill")
    assert len(filled) == 1 and polygons_iou(filled, _disc(60, 48, 30)) == 1.0
    # a small part: the tolerance is lowered until the polygon keeps IoU >= 0.97
    small = _disc(10, 10, 4)
    assert polygons_iou(mask_to_polygons(small, tolerance=2.0), small) >= 0.97
    assert polygons_iou(mask_to_polygons(small, tolerance=2.0, min_iou=None), small) < 0.9
    assert mask_to_polygons(np.zeros((8, 8), bool)) == []


def test_existing_labelme_files_are_kept_unless_overwrite(predicted, tmp_path):
    _, results = predicted
    lm = tmp_path / "labelme"
    pre_label(results, dst=lm, verbose=False)
    edited = json.loads((lm / "img_0.json").read_text())
    edited["shapes"] = edited["shapes"][:1]
    edited["shapes"][0]["label"] = "corrected by a person"
    human = json.dumps(edited)
    (lm / "img_0.json").write_text(human)
    before_1 = (lm / "img_1.json").read_bytes()

    s = pre_label(results, dst=lm, verbose=False)
    assert s["written"] == [] and len(s["skipped"]) == 2 and s["backups"] == []
    assert (lm / "img_0.json").read_text() == human and (lm / "img_1.json").read_bytes() == before_1
    assert not list(lm.glob("*.bak*"))

    s = pre_label(results, dst=lm, overwrite=True, verbose=False)
    assert len(s["written"]) == 2 and sorted(s["backups"]) == [str(lm / "img_0.json.bak"), str(lm / "img_1.json.bak")]
    assert (lm / "img_0.json.bak").read_text() == human  # the person's file, kept
    assert len(json.loads((lm / "img_0.json").read_text())["shapes"]) == 6
    assert not [p for p in lm.iterdir() if p.name.endswith(".tmp")]
    # convert reads *.json only: the backups are not taken for LabelMe files
    conv = convert_labelme(lm, tmp_path / "ds", val_percent=0, progress=False, verbose=False)
    assert conv.summary["images"] == 2


def test_pre_label_cli_with_a_tiny_model(tmp_path):
    """The CLI end to end with a real (untrained, tiny) Mask-RT-DETR: the run directory names its
    weights and the model (from the checkpoint), one LabelMe file per image, existing ones kept."""
    from workbench import create_model
    from workbench.cli import main
    from workbench.data.synthetic import make_shapes_dataset

    ds = tmp_path / "ds"
    make_shapes_dataset(ds, 1, 1, (96, 96), seed=0)
    m = create_model("Mask-RT-DETR-S", device="cpu", class_names=["circle", "square", "triangle"], input_size=96,
                     num_queries=10, num_decoder_layers=1, num_denoising=0, num_sample_points=256)
    m.save(tmp_path / "run" / "best_model" / "model.pth")
    lm = tmp_path / "labelme"
    # mask threshold 0: an untrained model's soft masks are low everywhere; 0 keeps every mask non-empty
    args = ["pre-label", str(tmp_path / "run"), str(ds / "images"), "--dst", str(lm), "--threshold", "0",
            "--mask-threshold", "0", "--device", "cpu"]
    assert main(args) == 0
    files = sorted(p.name for p in lm.glob("*.json"))
    assert files == ["train_00001.json", "val_00002.json"]
    d = json.loads((lm / "val_00002.json").read_text())
    assert d["prelabel"]["model_name"] == "Mask-RT-DETR-S" and d["imagePath"] == "../ds/images/val_00002.png"
    assert d["shapes"] and {sh["label"] for sh in d["shapes"]} <= {"circle", "square", "triangle"}
    assert all(sh["description"].startswith("score=") for sh in d["shapes"])
    before = (lm / "val_00002.json").read_bytes()
    assert main([*args, "--model", "Mask-RT-DETR-S"]) == 0  # again: nothing replaced without --overwrite
    assert (lm / "val_00002.json").read_bytes() == before and not list(lm.glob("*.bak"))
    conv = convert_labelme(lm, tmp_path / "converted", val_percent=0, progress=False, verbose=False)
    assert conv.summary["images"] == 2
    assert main(["pre-label", str(tmp_path / "nowhere"), str(ds / "images"), "--dst", str(lm)]) == 1  # one line
