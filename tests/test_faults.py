"""Fault corpus of issue 12 (data and evaluation side): bad or unusual input a real user brings.

Every case generates its own images and JSON in ``tmp_path`` and runs in well under a second or
two; each one failed on the code before its fix (the demo-split guard is a regression guard).
Numbers in the test names are the issue's item numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.cli import main as cli_main
from workbench.data.check import check_dataset
from workbench.data.dataset import Category, Dataset, ImageInfo, Instance, read_image_rgb, rle_from_mask
from workbench.data.labelme import LabelmeWarning, convert_labelme
from workbench.data.split import split_dataset
from workbench.data.synthetic import make_shapes_dataset
from workbench.engine.errors import DatasetError

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo_labelme"


# ----------------------------------------------------------------------------------- helpers
def write_labelme(
    folder: Path, stem: str, shapes: list[dict], size=(64, 48), image: np.ndarray | None = None, bom: bool = False
) -> Path:
    """A LabelMe JSON (imagePath, no imageData) and its PNG image in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    if image is None:
        rng = np.random.default_rng(abs(hash(stem)) % 2**32)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{stem}.png")
    d = {
        "version": "5.4.1",
        "flags": {},
        "imagePath": f"{stem}.png",
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
        "shapes": [
            {
                "label": s.get("label", "a"),
                "points": s["points"],
                "group_id": None,
                "shape_type": s.get("shape_type", "polygon"),
                "flags": {},
                "description": "",
                "mask": None,
            }
            for s in shapes
        ],
    }
    text = json.dumps(d)
    p = folder / f"{stem}.json"
    p.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return p


SQUARE = {"points": [[10, 10], [30, 10], [30, 30], [10, 30]]}


def run_cli(argv: list[str], monkeypatch) -> tuple[int, str, str]:
    monkeypatch.delenv("WORKBENCH_DEBUG", raising=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(argv)
    return rc, out.getvalue(), err.getvalue()


def gradient16(h=48, w=64, top=33000) -> np.ndarray:
    """A 16-bit gray image: a horizontal ramp 0..top/2 and a bright square of ``top``."""
    a = np.tile(np.linspace(0, top // 2, w), (h, 1)).astype(np.uint16)
    a[30:40, 40:56] = top
    return a


def expected8(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    g = np.rint((a.astype(np.float64) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    return np.stack([g] * 3, -1)


# ------------------------------------------------------------------------ (1) 16-bit images
def test_1_16bit_png_read_by_its_range_in_check_convert_and_predict(tmp_path):
    from workbench.engine.inputs import load_input

    a = gradient16()
    src = tmp_path / "lm"
    src.mkdir()
    Image.fromarray(a).save(src / "deep.png")  # PIL mode I;16, values up to 33000
    assert Image.open(src / "deep.png").mode.startswith("I;16")
    want = expected8(a)

    # the one reader: scaled by the image's own range, not clipped to white
    img = read_image_rgb(src / "deep.png")
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
    assert np.abs(img.astype(int) - want).max() <= 1
    assert (img == 255).mean() < 0.1

    # predict's inputs: a path, a PIL image and a uint16 array all give the same 8-bit image
    for x in (src / "deep.png", Image.open(src / "deep.png"), a):
        arr, _ = load_input(x)
        assert np.abs(arr.astype(int) - want).max() <= 1, type(x)

    # convert keeps the file; what it writes is read the same way
    d = json.loads(write_labelme(src, "deep", [SQUARE]).read_text())
    Image.fromarray(a).save(src / "deep.png")  # write_labelme wrote an 8-bit image: put the 16-bit one back
    write_labelme(src, "other", [SQUARE])
    assert d["imagePath"] == "deep.png"
    res = convert_labelme(src, tmp_path / "ds", val_percent=50, progress=False, verbose=False)
    ds = res["train"] if any(im.file_name == "deep.png" for im in res["train"].images) else res["val"]
    im = next(i for i in ds.images if i.file_name == "deep.png")
    assert np.abs(ds.load_image(im).astype(int) - want).max() <= 1

    # check: passes, says how the image is read, and its sample overlay is the scaled image
    r = check_dataset(tmp_path / "ds", tmp_path / "out", verbose=False)
    assert r.check_pass, [str(p) for p in r.errors]
    notes = [p for p in r.warnings if p.code == "high_bit_depth_image"]
    assert len(notes) == 1 and "deep.png" in notes[0].message and "33000" in notes[0].message
    split = "train" if ds is res["train"] else "val"
    sample = next(p for p in r.attributes[f"{split}_sample_paths"] if Path(p).name == "deep.png")
    vis = np.asarray(Image.open(sample).convert("RGB")).astype(int)
    assert np.abs(vis[40:48, 0:8] - want[40:48, 0:8]).max() <= 1  # far from the instance: the image itself
    assert vis.mean() < 200


# --------------------------------------------------------------------- (2) one-line errors
def test_2_evaluate_unknown_image_id_is_a_named_error(tmp_path, monkeypatch):
    ds_dir = tmp_path / "ds"
    make_shapes_dataset(ds_dir, 2, 2, (48, 48), seed=1)
    val = Dataset.load_paddlex(ds_dir, "val")
    good = [{"image_id": val.images[0].id, "category_id": val.categories[0].id, "bbox": [1, 1, 10, 10], "score": 0.9}]
    bad = good + [{"image_id": 999, "category_id": val.categories[0].id, "bbox": [1, 1, 10, 10], "score": 0.5}]
    res = tmp_path / "results.json"
    res.write_text(json.dumps(bad))
    rc, _, err = run_cli(["evaluate", str(res), str(ds_dir), "--output", str(tmp_path / "ev")], monkeypatch)
    assert rc == 1
    assert "999" in err and "results.json" in err and "not in the dataset" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the error + the debug hint
    with pytest.raises(DatasetError, match=r"results\.json: detections refer to image id\(s\) 999"):
        from workbench.evaluation import evaluate

        evaluate(res, ds_dir)


def test_2_convert_into_an_existing_file_is_a_named_error(tmp_path, monkeypatch):
    src = tmp_path / "lm"
    write_labelme(src, "a", [SQUARE])
    write_labelme(src, "b", [SQUARE])
    dst = tmp_path / "dataset.zip"
    dst.write_bytes(b"not a folder")
    rc, _, err = run_cli(["convert", str(src), "--dst", str(dst)], monkeypatch)
    assert rc == 1 and "Traceback" not in err
    assert "dataset.zip" in err and "existing file, not a folder" in err
    assert dst.read_bytes() == b"not a folder"
    with pytest.raises(DatasetError, match="existing file"):
        convert_labelme(src, dst, progress=False)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "images").write_text("x")  # a file where the images folder goes
    with pytest.raises(DatasetError, match=r"half/images: .*existing file"):
        convert_labelme(src, tmp_path / "half", progress=False)
    assert sorted(p.name for p in (tmp_path / "half").iterdir()) == ["images"]


# ------------------------------------------------------------ (3) shapes crossing the border
def test_3_convert_clips_shapes_to_the_image_and_check_passes(tmp_path):
    src = tmp_path / "lm"
    w, h = 64, 48
    shapes = [
        {"label": "a", "points": [[-10, 5], [30, 5], [30, 20], [-10, 20]]},  # 0: partly outside (left)
        {"label": "b", "shape_type": "circle", "points": [[58, 40], [58, 50]]},  # 1: circle over two borders
        {"label": "a", "shape_type": "rectangle", "points": [[50, -6], [70, 8]]},  # 2: rectangle over a corner
        {"label": "gone", "points": [[70, 5], [90, 5], [80, 20]]},  # 3: entirely outside -> dropped
        {"label": "sliver", "points": [[-5, 5], [0, 10], [-5, 15]]},  # 4: touches the border only -> dropped
        {"label": "a", "points": [[5, 25], [20, 25], [12, 40]]},  # 5: inside, kept as it is
    ]
    write_labelme(src, "edge", shapes, (w, h))
    write_labelme(
        src,
        "plain",
        [{"label": "a", **SQUARE}, {"label": "b", "shape_type": "circle", "points": [[40, 30], [40, 36]]}],
        (w, h),
    )
    with pytest.warns(LabelmeWarning) as rec:
        res = convert_labelme(
            src, tmp_path / "ds", val_percent=50, labels=["a", "b", "gone", "sliver"], progress=False, verbose=False
        )
    msg = "\n".join(str(r.message) for r in rec)
    assert "edge.json: shape 3 ('gone', polygon): entirely outside the 64x48 image" in msg
    assert "edge.json: shape 4 ('sliver', polygon): degenerate after clipping" in msg
    s = res.summary
    assert sorted(x["shape_index"] for x in s["skipped_shapes"]) == [3, 4]
    assert sorted(x["shape_index"] for x in s["clipped_shapes"]) == [0, 1, 2]
    edge = next(d for d in res.datasets.values() for im in d.images if im.file_name == "edge.png")
    insts = {tuple(a.extra["labelme_shapes"]): a for a in edge.instances}
    assert sorted(insts) == [(0,), (1,), (2,), (5,)]
    for a in insts.values():
        xy = np.asarray(a.segmentation[0]).reshape(-1, 2)
        assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= w and xy[:, 1].min() >= 0 and xy[:, 1].max() <= h
        assert a.bbox[0] + a.bbox[2] <= w and a.bbox[1] + a.bbox[3] <= h
    assert insts[(0,)].segmentation == [[0.0, 5.0, 30.0, 5.0, 30.0, 20.0, 0.0, 20.0]]
    assert insts[(5,)].segmentation == [[5.0, 25.0, 20.0, 25.0, 12.0, 40.0]]
    assert abs(insts[(0,)].area - 30 * 15) <= 31
    r = check_dataset(tmp_path / "ds", tmp_path / "out", verbose=False)
    assert r.check_pass, [str(p) for p in r.errors]


# --------------------------------------------------------------------- (4) empty val split
def _three_unique_classes(src: Path) -> None:
    for stem, label in (("x", "cat"), ("y", "dog"), ("z", "cow")):
        write_labelme(src, stem, [{"label": label, **SQUARE}])


def test_4_empty_val_split_fails_naming_the_minimum(tmp_path, monkeypatch):
    src = tmp_path / "lm"
    _three_unique_classes(src)
    with pytest.raises(DatasetError, match=r"leaves the val split empty: .*at least 2 images.*min_val=1") as e:
        convert_labelme(src, tmp_path / "ds", val_percent=20, progress=False)
    assert "x.png: 'cat'" in str(e.value)
    assert not (tmp_path / "ds").exists()  # nothing written
    rc, _, err = run_cli(["convert", str(src), "--dst", str(tmp_path / "ds"), "--val-percent", "33"], monkeypatch)
    assert rc == 1 and "leaves the val split empty" in err and "Traceback" not in err

    one = tmp_path / "one"
    write_labelme(one, "only", [SQUARE])
    with pytest.raises(DatasetError, match=r"1 image\(s\) leaves the val split empty: .*at least 2 images"):
        convert_labelme(one, tmp_path / "ds1", val_percent=20, progress=False)

    # split on a dataset of that kind says the same (and leaves the files alone)
    res = convert_labelme(src, tmp_path / "ds", val_percent=0, progress=False, verbose=False)
    assert len(res["train"].images) == 3
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds" / "annotations").iterdir()}
    for tp, vp in ((80, 20), (67, 33), (50, 50)):
        with pytest.raises(DatasetError, match="leaves the val split empty"):
            split_dataset(tmp_path / "ds", tp, vp, verbose=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds" / "annotations").iterdir()} == before


def test_4_min_val_puts_one_image_in_val_and_says_so(tmp_path, monkeypatch, capsys):
    src = tmp_path / "lm"
    _three_unique_classes(src)
    res = convert_labelme(src, tmp_path / "ds", val_percent=20, min_val=1, progress=False, verbose=False)
    assert len(res["val"].images) == 1 and len(res["train"].images) == 2
    out = capsys.readouterr().out
    assert "min_val=1: put " + res["val"].images[0].file_name + " in val" in out and "no train image" in out
    assert res.summary["forced_val"] == [res["val"].images[0].file_name]
    rc, out, _ = run_cli(
        ["split", str(tmp_path / "ds"), "--train-percent", "80", "--val-percent", "20", "--min-val", "1"], monkeypatch
    )
    assert rc == 0 and "min_val=1" in out
    assert len(Dataset.load_paddlex(tmp_path / "ds", "val").images) == 1
    with pytest.raises(DatasetError, match="min_val=3 needs at least 4 images"):
        split_dataset(tmp_path / "ds", 50, 50, min_val=3, verbose=False)


def test_4_demo_data_splits_exactly_as_before(tmp_path):
    train = ["arc2017_right.jpg", "nuclei_01.png", "nuclei_10.png", "nuclei_11.png", "voc_right.jpg"]
    val = ["arc2017_left.jpg", "nuclei_00.png", "voc_left.jpg"]
    for kw in ({}, {"min_val": 1}):
        res = convert_labelme(DEMO, tmp_path / f"ds{len(kw)}", progress=False, verbose=False, **kw)
        assert [im.file_name for im in res["train"].images] == train
        assert [im.file_name for im in res["val"].images] == val
        assert res.summary["forced_val"] == []
        out = split_dataset(tmp_path / f"ds{len(kw)}", 80, 20, seed=0, verbose=False, **kw)
        assert [im.file_name for im in out["train"].images] == train
        assert [im.file_name for im in out["val"].images] == val


# ------------------------------------------------------------- (8) stale temporary files
def test_8_stale_temp_files_of_a_killed_run_are_removed(tmp_path, capsys):
    src = tmp_path / "lm"
    write_labelme(src, "train_00674", [SQUARE])
    write_labelme(src, "b", [SQUARE])
    dst = tmp_path / "ds"
    convert_labelme(src, dst, val_percent=50, progress=False)
    stale = [
        dst / "images" / ".train_00674.png.k3j_9x2a.tmp",
        dst / "annotations" / ".instance_train.json.a1b2c3d4.tmp",
    ]
    keep = [
        dst / "images" / ".keep.tmp",
        dst / "images" / "notes.tmp",
        dst / "images" / ".x.png.ABCDEFGH.tmp",
        dst / "images" / ".x.png.abcdefgh.tmp.bak",
        dst / "images" / "x.png.abcdefgh.tmp",
        dst / ".top.json.abcdefgh.tmp",
    ]  # not a folder the conversion writes
    for p in stale + keep:
        p.write_bytes(b"half written")
    (dst / "images" / ".sub.png.abcdefgh.tmp").mkdir()  # a folder of that name is not a temp file
    capsys.readouterr()
    convert_labelme(src, dst, val_percent=50, progress=False)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"half written" for p in keep)
    assert (dst / "images" / ".sub.png.abcdefgh.tmp").is_dir()
    assert "removed 2 temporary file(s)" in capsys.readouterr().out
    # split cleans its folder too
    (dst / "annotations" / ".instance_val.json.zzzzzzzz.tmp").write_bytes(b"x")
    split_dataset(dst, 50, 50, verbose=False)
    assert not (dst / "annotations" / ".instance_val.json.zzzzzzzz.tmp").exists()


# ---------------------------------------------------------------------- (9) duplicate images
def test_9_check_reports_cross_split_and_in_split_duplicates(tmp_path):
    ds_dir = tmp_path / "ds"
    make_shapes_dataset(ds_dir, 3, 2, (48, 48), seed=2)
    assert check_dataset(ds_dir, tmp_path / "o0", num_samples=0, verbose=False).check_pass
    tr = Dataset.load_paddlex(ds_dir, "train")
    va = Dataset.load_paddlex(ds_dir, "val")
    # the same content under another name in val, and an exact copy within train
    shutil.copyfile(tr.image_path(tr.images[0]), va.image_path(va.images[0]))
    shutil.copyfile(tr.image_path(tr.images[1]), tr.image_path(tr.images[2]))
    r = check_dataset(ds_dir, tmp_path / "o1", num_samples=0, verbose=False)
    assert not r.check_pass
    cross = [p for p in r.errors if p.code == "cross_split_duplicate"]
    assert len(cross) == 1 and cross[0].image_id == va.images[0].id
    assert va.images[0].file_name in cross[0].message and tr.images[0].file_name in cross[0].message
    assert f"image id {tr.images[0].id}" in cross[0].message and "content" in cross[0].message
    inside = [p for p in r.warnings if p.code == "duplicate_image"]
    assert len(inside) == 1 and inside[0].image_id == tr.images[2].id
    assert tr.images[1].file_name in inside[0].message
    # the same path in both splits
    jf = ds_dir / "annotations" / "instance_val.json"
    d = json.loads(jf.read_text())
    d["images"][1]["file_name"] = tr.images[1].file_name
    jf.write_text(json.dumps(d))
    r = check_dataset(ds_dir, tmp_path / "o2", num_samples=0, check_images=False, verbose=False)
    same = [p for p in r.errors if p.code == "cross_split_duplicate" and p.image_id == va.images[1].id]
    assert same and "the same file as" in same[0].message


# ----------------------------------------------------- (10) results files with masks only
def _mask_only_case():
    """GT with small/medium/large objects; detections as RLE masks without bbox, among them thin
    diagonal false positives whose mask is small (area < 32²) but whose box is medium."""
    rng = np.random.default_rng(0)
    H = W = 128
    images, gts, dets = [], [], []
    for iid in range(1, 5):
        images.append(ImageInfo(iid, f"{iid}.png", W, H))
        for k, (x, y, s) in enumerate([(4, 4, 20), (40, 4, 40), (4, 50, 70)]):
            m = np.zeros((H, W), bool)
            m[y : y + s, x : x + s] = True
            gts.append(Instance(len(gts) + 1, iid, 1 + k % 2, rle_from_mask(m), [x, y, s, s], float(s * s)))
            dm = np.zeros((H, W), bool)
            j = int(rng.integers(-3, 4))
            dm[max(0, y + j) : y + s + j, max(0, x + j) : x + s] = True
            dets.append(
                {
                    "image_id": iid,
                    "category_id": 1 + k % 2,
                    "segmentation": rle_from_mask(dm),
                    "score": float(rng.uniform(0.3, 0.9)),
                }
            )
        for _ in range(3):  # diagonal lines: box 50x50 (medium), mask ~150 px (small)
            line = np.zeros((H, W), bool)
            x0, y0 = int(rng.integers(75, 78)), int(rng.integers(60, 75))
            for t in range(50):
                line[y0 + t, x0 + t : x0 + t + 3] = True
            dets.append(
                {
                    "image_id": iid,
                    "category_id": int(rng.integers(1, 3)),
                    "segmentation": rle_from_mask(line),
                    "score": float(rng.uniform(0.5, 1.0)),
                }
            )
    gt = Dataset(images, [Category(1, "a"), Category(2, "b")], gts)
    return gt, dets


def test_10_mask_only_results_equal_pycocotools(tmp_path):
    from pycocotools.cocoeval import COCOeval

    from workbench.evaluation.metrics import STAT_NAMES, coco_metrics

    gt, dets = _mask_only_case()
    res = tmp_path / "results.json"
    res.write_text(json.dumps(dets))
    assert not any("bbox" in d for d in json.loads(res.read_text()))
    want = {}
    for t in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = gt.to_pycocotools()
            ev = COCOeval(coco, coco.loadRes(str(res)), t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        want[t] = [None if v < 0 else float(v) for v in ev.stats]
    assert want["bbox"][3] != want["bbox"][4]  # the case separates the size ranges
    for backend in ("pycocotools", "fast"):
        got = coco_metrics(gt, res, backend=backend)
        for t in ("bbox", "segm"):
            for k, name in enumerate(STAT_NAMES):
                g, w = got[t][name], want[t][k]
                assert (g is None and w is None) or abs(g - w) < 1e-12, (backend, t, name, g, w)


# ------------------------------------------------- (12) what was replaced, BOM-prefixed JSON
def test_12_convert_names_the_files_it_replaced(tmp_path, capsys):
    src = tmp_path / "lm"
    for stem in "abcd":
        write_labelme(src, stem, [SQUARE])
    dst = tmp_path / "ds"
    convert_labelme(src, dst, val_percent=25, progress=False)
    assert "already held a dataset" not in capsys.readouterr().out
    convert_labelme(src, dst, val_percent=50, seed=3, progress=False)
    out = [line for line in capsys.readouterr().out.splitlines() if "already held a dataset" in line]
    assert len(out) == 1
    assert "annotations/instance_train.json.bak" in out[0] and "annotations/instance_val.json.bak" in out[0]


def test_12_bom_prefixed_labelme_coco_and_results_json_are_read(tmp_path):
    src = tmp_path / "lm"
    write_labelme(src, "a", [{"label": "cat", **SQUARE}], bom=True)
    write_labelme(src, "b", [{"label": "cat", **SQUARE}], bom=True)
    (src / "labels.txt").write_text("\ufeff__ignore__\ncat\n", encoding="utf-8")
    res = convert_labelme(src, tmp_path / "ds", val_percent=50, progress=False, verbose=False)
    assert res["train"].category_names == ["cat"] and len(res["train"].instances) == 1
    jf = tmp_path / "ds" / "annotations" / "instance_val.json"
    jf.write_text("\ufeff" + jf.read_text(encoding="utf-8"), encoding="utf-8")
    val = Dataset.load_paddlex(tmp_path / "ds", "val")
    assert len(val.images) == 1
    assert check_dataset(tmp_path / "ds", tmp_path / "out", num_samples=0, verbose=False).check_pass
    a = val.instances[0]
    det = [{"image_id": a.image_id, "category_id": a.category_id, "bbox": a.bbox, "score": 0.9}]
    (tmp_path / "r.json").write_text("\ufeff" + json.dumps(det), encoding="utf-8")
    from workbench.evaluation.metrics import coco_metrics

    assert coco_metrics(val, tmp_path / "r.json", iou_types=("bbox",))["bbox"]["AP"] == pytest.approx(1.0)


# ------------------------------------------------ (6) unreadable images, subfolders in predict
def image_tree(root: Path) -> dict[str, list[str]]:
    """A folder as a COCO layout with subfolders: readable images (two ``x.png`` in different
    subfolders), a 0-byte PNG, a truncated PNG, a hidden folder and a file that is no image."""
    rng = np.random.default_rng(6)
    good = ["a/deep/y.jpg", "a/x.png", "b/x.png"]
    for rel in good + [".ipynb_checkpoints/z.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / rel)
    (root / "empty.png").write_bytes(b"")
    data = (root / "a" / "x.png").read_bytes()
    (root / "b" / "trunc.png").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image")
    return {"good": good, "failed": ["b/trunc.png", "empty.png"]}


FAILED_ERRORS = {
    "b/trunc.png": "unreadable or corrupt image (image file is truncated)",
    "empty.png": "empty file (0 bytes)",
}


def predict_argv(name: str, output: Path, inputs: Path, *overrides: str) -> list[str]:
    """``-c NAME -o Global.mode=predict ...``: the config predict mode."""
    sets = ["Global.mode=predict", f"Global.output={output}", f"Predict.input={inputs}", *overrides]
    return ["-c", name] + [a for o in sets for a in ("-o", o)]


class _FakeModel:
    """A ``BaseModel`` without a network: ``infer`` records its batches (the predict loop only)."""

    @staticmethod
    def make():
        from workbench.engine.model import BaseModel
        from workbench.engine.result import Result

        class Fake(BaseModel):
            family = "fake"

            def build(self):
                return None

            def infer(self, images, paths, threshold=0.5, mask_threshold=0.5, keep_image=True):
                self.batches.append(list(paths))
                return [Result(input_path=p, image_size=im.shape[:2]) for im, p in zip(images, paths)]

            def save(self, path):
                raise NotImplementedError

            def train_job(self, *a):
                raise NotImplementedError

        m = Fake("Fake", weights=None, device="cpu", classes=None, input_size=64)
        m.batches = []
        return m


def test_6_predict_loop_skips_unreadable_files_recursively_in_order(tmp_path, caplog):
    from workbench.engine.inputs import find_images, output_stems

    root = tmp_path / "images"
    tree = image_tree(root)
    assert [p.relative_to(root).as_posix() for p in find_images(root)] == sorted(tree["good"] + tree["failed"])
    assert [p.name for p in find_images(root, recursive=False)] == ["empty.png"]
    assert output_stems(["x", "X", "x", "x_2", "image"]) == ["x", "X_3", "x_4", "x_2", "image"]

    m = _FakeModel.make()
    with caplog.at_level("WARNING", logger="workbench.predict"):
        preds = m.predict(root, batch_size=2)
        results = list(preds)
    assert [Path(r.input_path).relative_to(root).as_posix() for r in results] == tree["good"]
    assert [r.output_stem for r in results] == ["a/deep/y", "a/x", "b/x"]
    assert m.batches == [[str(root / "a/deep/y.jpg"), str(root / "a/x.png")], [str(root / "b/x.png")]]
    assert preds.failed == [{"input": str(root / k), "error": v} for k, v in FAILED_ERRORS.items()]
    assert preds.num_inputs == 5
    warned = [r.getMessage() for r in caplog.records if r.name == "workbench.predict"]
    assert warned == [f"predict: skipped {root / k}: {v}" for k, v in FAILED_ERRORS.items()]

    # a list: files of the same name from different folders get distinct outputs
    preds = m.predict([root / "a" / "x.png", root / "b" / "x.png", root / "empty.png"])
    assert [r.output_stem for r in preds] == ["x", "x_2"] and len(preds.failed) == 1
    written = [f(tmp_path / "o") for r in m.predict(root) for f in (r.save_to_img, r.save_to_json)]
    assert len(set(written)) == 6 and all(p.is_file() for p in written)
    assert (tmp_path / "o" / "a" / "deep" / "y_res.png").is_file()

    # not searched into subfolders when asked; an unreadable image given on its own is an error
    shutil.copytree(root / "a" / "deep", tmp_path / "nested" / "deep")
    with pytest.raises(FileNotFoundError, match="recursive=False"):
        list(m.predict(tmp_path / "nested", recursive=False))
    assert len(list(m.predict(tmp_path / "nested"))) == 1
    with pytest.raises(ValueError, match="empty.png"):
        list(m.predict(root / "empty.png"))


def test_6_cli_predict_where_no_image_is_readable_fails_in_one_line(tmp_path, monkeypatch):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "empty.png").write_bytes(b"")
    monkeypatch.setattr("workbench.models.create_model", lambda *a, **k: _FakeModel.make())
    rc, _, err = run_cli(predict_argv("Mask-RT-DETR-S", tmp_path / "out", root), monkeypatch)
    assert rc == 1 and "none of the 1 images could be read" in err and "empty.png: empty file" in err
    assert "Traceback" not in err
    res = json.loads((tmp_path / "out" / "predict_result.json").read_text())
    assert res["done_flag"] is False and res["num_images"] == 0 and res["num_failed"] == 1


@pytest.mark.parametrize("family", ["detectron2", "mask_rtdetr"])
def test_6_predict_run_goes_on_past_unreadable_images(family, tmp_path, monkeypatch, caplog):
    """Both families, randomly initialised smallest models, through the config predict mode."""
    from workbench.models import create_model, families, family_info

    name = family_info(families()[family][0]).smoke.get("name") or families()[family][0]
    smoke = family_info(name).smoke
    model = create_model(name, device="cpu", class_names=["a", "b"], **smoke["model"])
    monkeypatch.setattr("workbench.models.create_model", lambda *a, **k: model)
    root, out = tmp_path / "images", tmp_path / "out"
    tree = image_tree(root)
    with caplog.at_level("WARNING", logger="workbench.predict"):
        rc, _, err = run_cli(predict_argv(name, out, root, "Predict.batch_size=2"), monkeypatch)
    assert rc == 0, err
    res = json.loads((out / "predict_result.json").read_text())
    assert res["done_flag"] is True and res["num_images"] == 3 and res["num_failed"] == 2
    assert res["failed"] == [{"input": str(root / k), "error": v} for k, v in FAILED_ERRORS.items()]
    assert [Path(r["input_path"]).relative_to(root).as_posix() for r in res["results"]] == tree["good"]
    images = [Path(r["image"]).relative_to(out / "predict").as_posix() for r in res["results"]]
    assert images == ["a/deep/y_res.png", "a/x_res.png", "b/x_res.png"]
    for r in res["results"]:
        assert Path(r["image"]).is_file() and json.loads(Path(r["json"]).read_text())["input_path"] == r["input_path"]
    assert sum("predict: skipped" in r.getMessage() for r in caplog.records) == 2


# --------------------------------------- (1) 16-bit images in Detectron2's training mapper
def test_1_detectron2_training_mapper_reads_16bit_by_its_range(tmp_path):
    from workbench.models.detectron2.config import build_cfg
    from workbench.models.detectron2.trainer import ImageMapper, read_image

    a = gradient16()
    Image.fromarray(a).save(tmp_path / "deep.png")
    want = expected8(a)[:, :, ::-1]  # BGR, Detectron2's default INPUT.FORMAT
    poly = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    d = {"file_name": str(tmp_path / "deep.png"), "image_id": 1, "height": 48, "width": 64,
         "annotations": [{"bbox": [10.0, 10.0, 20.0, 20.0], "bbox_mode": 1, "category_id": 0,
                          "segmentation": poly, "iscrowd": 0}]}  # fmt: skip
    plain = ImageMapper(is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True)
    out = plain(d)
    got = out["image"].permute(1, 2, 0).numpy().astype(int)
    assert got.shape == (48, 64, 3) and np.abs(got - want).max() <= 1
    assert len(out["instances"]) == 1 and out["instances"].gt_masks.polygons

    # the training loader's mapper (from the config: resize and flip) gets a non-white image too
    cfg = build_cfg("MaskRCNN-ResNet50-FPN", num_classes=1, depth=18, input_size=96)
    img = ImageMapper(cfg, True)(d)["image"].float()
    assert img.shape[1] == 96 and img.mean() < 150 and (img == 255).float().mean() < 0.2

    # channel order follows cfg.INPUT.FORMAT
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert read_image(str(tmp_path / "red.png"), "BGR")[0, 0].tolist() == [0, 0, 200]
    assert read_image(str(tmp_path / "red.png"), "RGB")[0, 0].tolist() == [200, 0, 0]


def test_12_result_from_a_bom_prefixed_json(tmp_path):
    from workbench.engine.result import Result

    r = Result(input_path="x.png", image_size=(4, 5), boxes=[[0, 0, 2, 2]], scores=[0.9], class_names=["cat"])
    (tmp_path / "r.json").write_text("\ufeff" + json.dumps(r.to_dict()), encoding="utf-8")
    assert Result.from_json(tmp_path / "r.json").class_names == ["cat"]
