"""LabelMe -> COCO conversion: shape types, grouping, labels, errors, safety, and agreement with
labelme's own labelme2coco semantics on the real demo data (data/demo_labelme)."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import workbench.utils.io as wio
from workbench.data import labelme as lm
from workbench.data.dataset import Dataset
from workbench.data.labelme import LabelmeError, LabelmeWarning, convert_labelme

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).resolve().parent / "labelme_cases"
DEMO = ROOT / "data" / "demo_labelme"
sys.path.insert(0, str(ROOT / "benchmarks"))
from convert_speed import reference_labelme2coco, shape_to_mask  # noqa: E402


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def convert_quiet(*args, **kw):
    kw.setdefault("progress", False)
    with pytest.warns(LabelmeWarning) if kw.pop("expect_skips", False) else _nullcontext():
        return convert_labelme(*args, **kw)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.fixture
def shapes_dir(tmp_path) -> Path:
    d = tmp_path / "shapes"
    shutil.copytree(CASES / "shapes", d)
    return d


def edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def by_shapes(ds: Dataset) -> dict[tuple, object]:
    return {tuple(a.extra["labelme_shapes"]): a for a in ds.instances}


# ------------------------------------------------------------------------------ shape types
def test_every_shape_type(shapes_dir, tmp_path):
    with pytest.warns(LabelmeWarning) as rec:
        res = convert_labelme(shapes_dir, tmp_path / "out", val_percent=0, progress=False)
    ds = res["train"]
    assert len(ds.images) == 1 and len(res["val"].images) == 0
    insts = by_shapes(ds)
    # 0 triangle, 1 box, 2 disk, 3 blob, 4+5 bar (group 7), 6 bar, 7 crowd triangle
    assert sorted(insts) == [(0,), (1,), (2,), (3,), (4, 5), (6,), (7,)]
    names = {c.id: c.name for c in ds.categories}

    tri = insts[(0,)]
    assert names[tri.category_id] == "triangle" and tri.iscrowd == 0
    assert tri.segmentation == [[4.0, 4.0, 20.0, 6.0, 14.0, 18.0]]
    assert abs(tri.area - 102) <= 10  # shoelace area 102

    box = insts[(1,)]  # rectangle with reversed corners -> 4-corner polygon
    assert box.segmentation == [[30.0, 5.0, 44.5, 5.0, 44.5, 15.5, 30.0, 15.5]]
    assert abs(box.area - 14.5 * 10.5) <= 16
    assert box.bbox[0] == 30 and box.bbox[1] == 5

    disk = insts[(2,)]  # circle centre (12, 32), r = 6
    assert len(disk.segmentation) == 1 and len(disk.segmentation[0]) >= 24
    pts = np.asarray(disk.segmentation[0]).reshape(-1, 2)
    r = np.hypot(pts[:, 0] - 12, pts[:, 1] - 32)
    assert np.allclose(r, 6)
    assert abs(disk.area - np.pi * 36) / (np.pi * 36) < 0.08

    blob = insts[(3,)]  # mask bitmap 10x8 at (22, 36): rows 1..6, cols 2..8, one hole
    assert isinstance(blob.segmentation, dict)
    expected = np.zeros((48, 64), bool)
    expected[37:43, 24:31] = True
    expected[39, 26] = False
    assert np.array_equal(blob.mask(48, 64), expected)
    assert blob.area == 41 and blob.bbox == [24.0, 37.0, 7.0, 6.0]

    bar = insts[(4, 5)]  # two polygons of one (label, group_id) -> one instance, two parts
    assert names[bar.category_id] == "bar" and len(bar.segmentation) == 2
    assert bar.extra["labelme_group_id"] == 7
    assert abs(bar.area - 2 * 7 * 11) <= 10
    assert bar.bbox[0] == 40 and bar.bbox[0] + bar.bbox[2] == 59

    assert names[insts[(6,)].category_id] == "bar"
    crowd = insts[(7,)]
    assert crowd.iscrowd == 1 and isinstance(crowd.segmentation, dict) and crowd.area > 20

    s = res.summary
    assert s["ignored_shapes"] == 1  # the __ignore__ rectangle
    assert s["crowd_instances"] == 1 and s["multi_part_instances"] == 1
    assert [(x["shape_index"], x["shape_type"]) for x in s["skipped_shapes"]] == \
        [(9, "line"), (10, "point"), (11, "linestrip")]
    msg = str(rec[0].message)
    assert "shapes.json: shape 9" in msg and "shape 10" in msg and "shape 11" in msg
    # the written file reads back, and pycocotools accepts it
    back = Dataset.load_paddlex(tmp_path / "out", "train")
    assert [a.to_coco() for a in back.instances] == [a.to_coco() for a in ds.instances]
    coco = back.to_pycocotools()
    assert len(coco.getAnnIds()) == 7
    assert (tmp_path / "out" / "images" / "shapes.png").read_bytes() == (shapes_dir / "shapes.png").read_bytes()


def test_labels_txt_ignore_background_ids(shapes_dir, tmp_path):
    res = convert_quiet(shapes_dir, tmp_path / "o", val_percent=0, expect_skips=True)  # one image: train only
    # labels.txt: __ignore__, _background_, box, bar, disk, triangle, blob
    assert [(c.id, c.name) for c in res["train"].categories] == \
        [(1, "box"), (2, "bar"), (3, "disk"), (4, "triangle"), (5, "blob")]
    assert res.summary["label_source"].endswith("labels.txt")


@pytest.mark.parametrize("order,expected", [
    ("sorted", ["bar", "blob", "box", "disk", "triangle"]),
    ("stable", ["triangle", "box", "disk", "blob", "bar"]),
])
def test_label_order_without_labels_txt(shapes_dir, tmp_path, order, expected):
    (shapes_dir / "labels.txt").unlink()
    res = convert_quiet(shapes_dir, tmp_path / "o", label_order=order, val_percent=0, expect_skips=True)
    assert [c.name for c in res["train"].categories] == expected
    assert [c.id for c in res["train"].categories] == [1, 2, 3, 4, 5]


def test_labels_argument_list_and_unknown_label(shapes_dir, tmp_path):
    res = convert_quiet(shapes_dir, tmp_path / "o", labels=["_background_", "triangle", "box", "disk", "blob",
                                                           "bar"], val_percent=0, expect_skips=True)
    assert res["train"].category_names == ["triangle", "box", "disk", "blob", "bar"]
    with pytest.raises(LabelmeError, match=r"shapes\.json: shape 1 \('box'\): label 'box' is not in the labels"):
        convert_labelme(shapes_dir, tmp_path / "o2", labels=["triangle", "disk", "blob", "bar"], progress=False)


def test_embedded_image_data_vs_image_path(tmp_path):
    src = tmp_path / "emb"
    shutil.copytree(CASES / "embedded", src)
    res = convert_quiet(src, tmp_path / "o", val_percent=0)
    im = res["train"].images[0]
    assert (im.width, im.height) == (32, 24)
    assert im.file_name == "embedded.png"  # imagePath's name, the folder it named does not matter
    written = tmp_path / "o" / "images" / "embedded.png"
    emb = base64.b64decode(json.loads((src / "embedded.json").read_text())["imageData"])
    assert written.read_bytes() == emb
    assert res["train"].load_image(im).shape == (24, 32, 3)
    assert len(res["train"].instances) == 2
    # the same annotation with the image as a file next to it instead gives the same instances
    src2 = tmp_path / "path"
    src2.mkdir()
    (src2 / "pic.png").write_bytes(emb)
    d = json.loads((src / "embedded.json").read_text())
    d["imageData"], d["imagePath"] = None, "pic.png"
    (src2 / "embedded.json").write_text(json.dumps(d))
    res2 = convert_quiet(src2, tmp_path / "o2", val_percent=0)
    assert res2["train"].images[0].file_name == "pic.png"
    assert [a.to_coco() for a in res2["train"].instances] == [a.to_coco() for a in res["train"].instances]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("edit,pattern", [
    (lambda d: d["shapes"][0].update(points=[[1, 1], [5, 5]]),
     r"shapes\.json: shape 0 \('triangle'\): polygon has 2 point\(s\); at least 3"),
    (lambda d: d["shapes"][2].update(shape_type="ellipse"),
     r"shapes\.json: shape 2 \('disk'\): unknown shape_type 'ellipse'"),
    (lambda d: d["shapes"][3].update(mask="bm90IGEgcG5n"),
     r"shapes\.json: shape 3 \('blob'\): 'mask' is not a readable PNG"),
    (lambda d: d["shapes"][1].update(points=[[1, 2]]),
     r"shapes\.json: shape 1 \('box'\): rectangle needs 2 corner points, got 1"),
    (lambda d: d["shapes"][4].update(points=[[1, "x"], [2, 3], [4, 5]]),
     r"shapes\.json: shape 4 \('bar'\): 'points' are not numeric"),
    (lambda d: d["shapes"][6].update(label=""), r"shapes\.json: shape 6: missing or empty 'label'"),
    (lambda d: d.update(imagePath="nope.png"), r"shapes\.json: image file not found: imagePath 'nope\.png'"),
    (lambda d: d.update(imageData="!!!! not base64 !!!!"), r"shapes\.json: 'imageData' is not valid base64"),
    (lambda d: d.update(imageData="bm90IGEgcG5n"), r"shapes\.json: 'imageData': unreadable image data"),
    (lambda d: d.update(imageWidth=65), r"shapes\.json: imageWidth x imageHeight is 65x48 but the image is 64x48"),
    (lambda d: d.pop("shapes"), r"shapes\.json: not a LabelMe file"),
])
def test_bad_input_names_file_and_shape(shapes_dir, tmp_path, edit, pattern):
    edit_json(shapes_dir / "shapes.json", edit)
    before = tree_hashes(shapes_dir)
    with pytest.raises(LabelmeError, match=pattern):
        convert_labelme(shapes_dir, tmp_path / "out", progress=False)
    assert tree_hashes(shapes_dir) == before
    assert not (tmp_path / "out").exists()  # validation happens before anything is written


def test_invalid_json_and_corrupt_image(shapes_dir, tmp_path):
    (shapes_dir / "shapes.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(LabelmeError, match=r"shapes\.json: image .*shapes\.png: unreadable image data"):
        convert_labelme(shapes_dir, tmp_path / "o", progress=False)
    (shapes_dir / "shapes.json").write_text('{"shapes": [')
    with pytest.raises(ValueError, match=r"shapes\.json: not valid JSON"):
        convert_labelme(shapes_dir, tmp_path / "o", progress=False)


# ------------------------------------------------------------------- in place, .bak, failure
@pytest.fixture
def demo_copy(tmp_path) -> Path:
    d = tmp_path / "demo"
    shutil.copytree(DEMO, d, ignore=shutil.ignore_patterns("_source"))
    return d


def test_in_place_conversion_keeps_bak(demo_copy):
    inputs = tree_hashes(demo_copy)
    first = convert_quiet(demo_copy)  # dst_dir defaults to the source folder (PaddleX in place)
    assert first.backups == []
    train = demo_copy / "annotations" / "instance_train.json"
    old_text = train.read_text()
    # inputs untouched, outputs beside them
    after = tree_hashes(demo_copy)
    assert {k: v for k, v in after.items() if k in inputs} == inputs
    assert sorted(k for k in after if k not in inputs) == sorted(
        ["annotations/instance_train.json", "annotations/instance_val.json"]
        + [f"images/{p.name}" for p in demo_copy.glob("*") if p.suffix in (".jpg", ".png")])
    # a second run with another split keeps the first result as .bak
    second = convert_quiet(demo_copy, val_percent=60, seed=3)
    assert sorted(p.name for p in second.backups) == ["instance_train.json.bak", "instance_val.json.bak"]
    assert (demo_copy / "annotations" / "instance_train.json.bak").read_text() == old_text
    assert len(second["val"].images) > len(first["val"].images)
    # a third run: the earlier .bak is not overwritten
    convert_quiet(demo_copy, val_percent=20)
    assert (demo_copy / "annotations" / "instance_train.json.bak").read_text() == old_text
    assert (demo_copy / "annotations" / "instance_train.json.bak1").exists()
    assert {k: v for k, v in tree_hashes(demo_copy).items() if k in inputs} == inputs


def test_failure_late_in_list_leaves_everything_untouched(demo_copy):
    convert_quiet(demo_copy)  # an earlier conversion whose results must survive too
    # a corrupt file sorted last: the error comes after every other file was read
    d = json.loads((demo_copy / "voc_right.json").read_text())
    d["shapes"][5]["points"] = d["shapes"][5]["points"][:2]
    (demo_copy / "zz_late.json").write_text(json.dumps(d | {"imagePath": "voc_right.jpg"}))
    before = tree_hashes(demo_copy)
    with pytest.raises(LabelmeError, match=r"zz_late\.json: shape 5 .*polygon has 2 point"):
        convert_labelme(demo_copy, progress=False)
    assert tree_hashes(demo_copy) == before


def test_failure_while_writing_rolls_back(demo_copy, monkeypatch):
    convert_quiet(demo_copy, val_percent=20)
    before = tree_hashes(demo_copy)
    real = wio.replace_with_backup
    calls = []

    def failing(path, data):
        calls.append(Path(path).name)
        if Path(path).name == "instance_val.json":
            raise OSError("disk full (injected)")
        return real(path, data)

    monkeypatch.setattr(wio, "replace_with_backup", failing)
    with pytest.raises(OSError, match="injected"):
        convert_labelme(demo_copy, val_percent=40, seed=5, progress=False)
    assert calls == ["instance_train.json", "instance_val.json"]  # train was replaced, then put back
    assert tree_hashes(demo_copy) == before
    assert not list((demo_copy / "annotations").glob(".*.tmp"))

    # a failure while copying images: nothing of the inputs changes, no annotation file appears
    fresh = demo_copy.parent / "fresh"
    real_write = lm.atomic_write_bytes
    n = []

    def failing_write(path, data):
        n.append(path)
        if len(n) == 5:
            raise OSError("injected image write failure")
        return real_write(path, data)

    monkeypatch.setattr(lm, "atomic_write_bytes", failing_write)
    with pytest.raises(OSError, match="injected image"):
        convert_labelme(demo_copy, fresh, progress=False)
    assert tree_hashes(demo_copy) == before
    assert not (fresh / "annotations").exists()


def test_split_is_deterministic_and_covers_classes(tmp_path):
    a = convert_quiet(DEMO, tmp_path / "a", seed=1)
    b = convert_quiet(DEMO, tmp_path / "b", seed=1)
    assert [im.file_name for im in a["val"].images] == [im.file_name for im in b["val"].images]
    assert (tmp_path / "a/annotations/instance_val.json").read_text() == \
        (tmp_path / "b/annotations/instance_val.json").read_text().replace(str(tmp_path / "b"), str(tmp_path / "a"))
    assert set(a["val"].class_counts()) == set(a["train"].class_counts())
    assert all(v > 0 for v in a["train"].class_counts().values())
    assert len(a["train"].images) + len(a["val"].images) == 8
    ids = [x.id for s in ("train", "val") for x in a[s].instances]
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------- real data vs labelme's semantics
def test_demo_data_is_real_labelme_with_multipart_instances():
    files = sorted(DEMO.glob("*.json"))
    assert len(files) >= 8
    labels_per_image: dict[str, set] = {}
    grouped = 0
    for f in files:
        d = json.loads(f.read_text())
        assert set(d) >= {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
        assert (DEMO / d["imagePath"]).is_file()
        for s in d["shapes"]:
            assert set(s) >= {"label", "points", "group_id", "shape_type", "flags", "description", "mask"}
            labels_per_image.setdefault(s["label"], set()).add(f.name)
            grouped += s["group_id"] is not None
    assert len(labels_per_image) >= 2 and all(len(v) >= 2 for v in labels_per_image.values())
    assert grouped >= 2
    assert any(p.name.startswith(("LICENSE", "ATTRIBUTION")) for p in DEMO.iterdir())
    assert sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) < 5 * 2 ** 20


def test_demo_matches_labelme2coco_reference(tmp_path):
    """Same instances (count, grouping, label) as labelme2coco; our masks equal the masks its
    COCO segmentation decodes to (IoU >= 0.99), and differ from its PIL ``shape_to_mask``
    rasterisation (used only for its area/bbox) only on the boundary."""
    import cv2
    import PIL.Image
    import PIL.ImageDraw

    ref = reference_labelme2coco(DEMO)
    res = convert_quiet(DEMO, tmp_path / "o", val_percent=0)
    ds = res["train"]
    names = {c.id: c.name for c in ds.categories}
    assert len(ds.instances) == sum(len(r["instances"]) for r in ref.values())
    ious, pil_ious = [], []
    shapes_of = {im.file_name: json.loads((DEMO / (Path(im.file_name).stem + ".json")).read_text())["shapes"]
                 for im in ds.images}
    for im, insts in ds.iter_images():
        r = ref[Path(im.file_name).stem + ".json"]
        assert (im.height, im.width) == (r["height"], r["width"])
        ref_by_shapes = {tuple(x["shapes"]): x for x in r["instances"]}
        assert len(insts) == len(ref_by_shapes)
        for a in insts:
            x = ref_by_shapes[tuple(a.extra["labelme_shapes"])]
            assert names[a.category_id] == x["label"]
            ours = a.mask(im.height, im.width)
            seg = mask_utils.decode(mask_utils.merge(
                mask_utils.frPyObjects(x["segmentation"], im.height, im.width))).astype(bool)
            iou = (ours & seg).sum() / (ours | seg).sum()
            ious.append(iou)
            assert iou >= 0.99, (im.file_name, a.extra["labelme_shapes"], iou)
            # PIL's rasterisation (pixel centres at integers, outline drawn) differs from ours
            # only within 1 px of the polygon outline, nowhere else
            pil = x["mask"]
            outline = PIL.Image.new("L", (im.width, im.height), 0)
            draw = PIL.ImageDraw.Draw(outline)
            for i in a.extra["labelme_shapes"]:
                pts = [tuple(p) for p in shapes_of[im.file_name][i]["points"]]
                draw.line(pts + [pts[0]], fill=1, width=1)
            band = cv2.dilate(np.asarray(outline, np.uint8), np.ones((3, 3), np.uint8)) > 0
            assert not ((ours ^ pil) & ~band).any(), (im.file_name, a.extra["labelme_shapes"])
            pil_ious.append((ours & pil).sum() / (ours | pil).sum())
    assert len(ious) > 100
    assert np.median(pil_ious) > 0.85


def test_reference_shape_to_mask_matches_labelme_examples():
    # labelme's semantics: integer coordinates are pixel centres, the outline is drawn
    m = shape_to_mask((6, 6), [[1, 1], [3, 1], [3, 3], [1, 3]])
    assert m.sum() == 9 and m[1:4, 1:4].all()
    c = shape_to_mask((9, 9), [[4, 4], [6, 4]], "circle")
    assert c[4, 4] and c[4, 6] and c[4, 2] and not c[0, 0]
    r = shape_to_mask((5, 5), [[3, 3], [1, 1]], "rectangle")
    assert r.sum() == 9
