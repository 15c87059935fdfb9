"""Data check: passes on good data, and names every problem in the broken-input corpus."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from workbench.data.check import DatasetCheckError, check_dataset
from workbench.data.dataset import ANNOTATION_FILES

CORPUS = sorted((Path(__file__).parent / "check_corpus").glob("*.yaml"))


def test_corpus_has_at_least_ten_cases():
    assert len(CORPUS) >= 10


def test_check_passes_on_generated_data(shapes_dir, tmp_path, capsys):
    r = check_dataset(shapes_dir, tmp_path / "out")
    assert r.check_pass, [str(p) for p in r.errors]
    assert "Check dataset passed !" in capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    assert res["done_flag"] is True and res["check_pass"] is True
    assert res["dataset_type"] == "COCOInstSegDataset"
    a = res["attributes"]
    assert a["num_classes"] == 2
    assert a["train_samples"] == 8 and a["val_samples"] == 4  # images, not annotations
    assert len(a["train_sample_paths"]) == 8 and all(Path(p).is_file() for p in a["train_sample_paths"])
    assert Path(res["analysis"]["histogram"]).is_file()
    s = res["stats"]
    assert set(s["instances_per_class"]["train"]) == {"circle", "square"}
    assert sum(s["instances_per_image"]["train"]) == a["train_instances"]
    assert len(s["mask_areas"]["val"]) == a["val_instances"]
    figs = r.figures()
    assert {"class_histogram", "instances_per_image", "mask_area", "image_sizes"} <= set(figs)
    assert figs["class_histogram"].data[0].y is not None


def _apply(case: dict, root: Path) -> dict:
    """Apply a corpus case's mutations; return {index-kind: id} to resolve expected ids."""
    jf = root / "annotations" / ANNOTATION_FILES[case["split"]]
    d = json.loads(jf.read_text()) if jf.exists() else None
    ids = {}
    for op in case["ops"]:
        kind = op["op"]
        if kind == "delete_image_file":
            im = d["images"][op["image_index"]]
            (root / im["file_name"]).unlink()
        elif kind == "corrupt_image_file":
            im = d["images"][op["image_index"]]
            p = root / im["file_name"]
            p.write_bytes(p.read_bytes()[:40])
        elif kind == "set_image_field":
            im = d["images"][op["image_index"]]
            if "copy_from_image_index" in op:
                old = im[op["field"]]
                im[op["field"]] = d["images"][op["copy_from_image_index"]][op["field"]]
                for a in d["annotations"]:
                    if a["image_id"] == old:
                        a["image_id"] = im["id"]
            else:
                im[op["field"]] = op["value"]
        elif kind == "set_annotation_field":
            a = d["annotations"][op["annotation_index"]]
            if "copy_from_annotation_index" in op:
                a[op["field"]] = d["annotations"][op["copy_from_annotation_index"]][op["field"]]
            else:
                a[op["field"]] = op["value"]
        elif kind == "empty_split":
            d["images"], d["annotations"] = [], []
        elif kind == "delete_annotation_file":
            jf.unlink()
            d = None
        elif kind == "write_annotation_text":
            jf.write_text(op["text"])
            d = None
        elif kind == "rename_category":
            d["categories"][op["index"]]["name"] = op["name"]
        else:
            raise AssertionError(f"unknown corpus op {kind}")
    if d is not None:
        jf.write_text(json.dumps(d))
        ids = {"images": [im["id"] for im in d["images"]], "annotations": d["annotations"]}
    return ids


@pytest.mark.parametrize("case_file", CORPUS, ids=[p.stem for p in CORPUS])
def test_check_names_each_problem(case_file, shapes_dir, tmp_path):
    case = yaml.safe_load(case_file.read_text())
    ids = _apply(case, shapes_dir)
    r = check_dataset(shapes_dir, tmp_path / "out", verbose=False)
    assert not r.check_pass
    res = json.loads((tmp_path / "out" / "check_dataset_result.json").read_text())
    assert res["check_pass"] is False and res["done_flag"] is True
    for exp in case["expect"]:
        hits = [p for p in r.errors if p.code == exp["code"]]
        assert hits, f"{case_file.stem}: expected {exp['code']}, got {[str(p) for p in r.problems]}"
        p = hits[0]
        assert p.file.endswith(ANNOTATION_FILES[case["split"]]) or p.code == "missing_images_dir"
        if "image_index" in exp:
            assert p.image_id == ids["images"][exp["image_index"]]
        if "annotation_index" in exp:
            a = ids["annotations"][exp["annotation_index"]]
            assert p.annotation_id == a["id"]
            assert str(a["id"]) in str(p)
        assert p.message


def test_check_lists_every_problem_at_once(shapes_dir, tmp_path):
    jf = shapes_dir / "annotations" / "instance_train.json"
    d = json.loads(jf.read_text())
    d["annotations"][0]["category_id"] = 42
    d["annotations"][1]["segmentation"] = [[0, 0, 1, 1]]
    d["annotations"][2]["bbox"] = [1, 1, -3, 4]
    jf.write_text(json.dumps(d))
    (shapes_dir / d["images"][-1]["file_name"]).unlink()
    r = check_dataset(shapes_dir, tmp_path / "o", verbose=False)
    codes = {p.code for p in r.errors}
    assert {"unknown_category_id", "bad_polygon", "zero_area_bbox", "missing_image"} <= codes
    with pytest.raises(DatasetCheckError, match="annotation id"):
        check_dataset(shapes_dir, tmp_path / "o", verbose=False, raise_on_error=True)


def test_check_missing_dir(tmp_path):
    r = check_dataset(tmp_path / "nope", tmp_path / "o", verbose=False)
    assert not r.check_pass and r.errors[0].code == "missing_dataset_dir"


def test_check_warns_about_class_missing_in_val(shapes_dir, tmp_path):
    jf = shapes_dir / "annotations" / "instance_val.json"
    d = json.loads(jf.read_text())
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] != 2]
    jf.write_text(json.dumps(d))
    r = check_dataset(shapes_dir, tmp_path / "o", verbose=False)
    assert any(p.code == "class_missing_in_val" and p.severity == "warning" for p in r.problems)


def test_two_point_polygon_is_named_not_a_pycocotools_message(shapes_dir):
    """A polygon of 4 numbers (2 points) is what pycocotools takes for a box: its own error
    ("Argument 'bb' has incorrect type") must not reach the user; the part is left out of the mask."""
    from workbench.data.dataset import Dataset

    ds = Dataset.load_paddlex(shapes_dir, "train")
    a = ds.instances[0]
    im = ds.image_by_id()[a.image_id]
    full = a.mask(im.height, im.width)
    a.segmentation = [[1.0, 1.0, 5.0, 5.0], *a.segmentation]  # a broken part before the real one
    assert (a.mask(im.height, im.width) == full).all()
    a.segmentation = [[1.0, 1.0, 5.0, 5.0]]
    with pytest.raises(ValueError, match=rf"annotation {a.id}: no polygon with at least 3 points") as e:
        a.mask(im.height, im.width)
    assert "bb" not in str(e.value)


def test_missing_image_is_named_where_the_layout_keeps_images(shapes_dir):
    ann = shapes_dir / "annotations" / ANNOTATION_FILES["train"]
    d = json.loads(ann.read_text())
    d["images"][0]["file_name"] = "gone.jpg"
    ann.write_text(json.dumps(d))
    res = check_dataset(shapes_dir, raise_on_error=False)
    missing = [p for p in res.errors if p.code == "missing_image"]
    assert len(missing) == 1 and str(shapes_dir / "images" / "gone.jpg") in missing[0].message
