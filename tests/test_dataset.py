"""The dataset currency: COCO load/save round trip, masks, subsets and merges."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from workbench.data.dataset import Dataset, Instance, rle_from_mask
from workbench.data.synthetic import make_shapes_dataset


def test_round_trip_is_lossless(shapes_dir, tmp_path):
    src = shapes_dir / "annotations" / "instance_train.json"
    ds = Dataset.load_coco(src, shapes_dir, "train")
    out = ds.save_coco(tmp_path / "copy.json")
    assert json.loads(out.read_text()) == json.loads(src.read_text())
    again = Dataset.load_coco(out, shapes_dir)
    assert again.to_coco_dict() == ds.to_coco_dict()
    # pycocotools reads what we write
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == len(ds.instances)


def test_masks_match_pycocotools(shapes_dir):
    ds = Dataset.load_paddlex(shapes_dir, "val")
    coco = ds.to_pycocotools()
    for im, insts in ds.iter_images():
        for a in insts:
            ref = coco.annToMask(coco.anns[a.id]).astype(bool)
            assert np.array_equal(a.mask(im.height, im.width), ref)
            assert a.mask(im.height, im.width).sum() == pytest.approx(a.area, abs=1)


def test_rle_instances_round_trip(tmp_path):
    m = np.zeros((20, 30), bool)
    m[2:9, 3:12] = True
    m[12:18, 20:28] = True
    rle = rle_from_mask(m)
    ds = Dataset(images=[], categories=[], instances=[Instance(1, 1, 1, rle, [3, 2, 25, 16], float(m.sum()))])
    d = ds.to_coco_dict()
    json.dumps(d)  # RLE counts are strings, JSON-safe
    back = Dataset.from_coco_dict(d)
    assert np.array_equal(back.instances[0].mask(20, 30), m)


def test_synthetic_is_deterministic_and_multipart(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", 6, 2, (64, 64), seed=5, formats=("coco", "labelme"))
    b = make_shapes_dataset(tmp_path / "b", 6, 2, (64, 64), seed=5)
    assert a["train"].to_coco_dict() == b["train"].to_coco_dict()
    assert (tmp_path / "a/images/train_00001.png").read_bytes() == (tmp_path / "b/images/train_00001.png").read_bytes()
    c = make_shapes_dataset(tmp_path / "c", 6, 2, (64, 64), seed=6)
    assert c["train"].to_coco_dict() != a["train"].to_coco_dict()
    big = make_shapes_dataset(tmp_path / "d", 20, 0, (96, 96), seed=1, split_prob=0.5)
    assert any(len(i.segmentation) > 1 for i in big["train"].instances), "no multi-part instance generated"
    lm = json.loads((tmp_path / "a/labelme/train_00001.json").read_text())
    assert lm["imagePath"] == "train_00001.png" and lm["shapes"]
    assert {s["shape_type"] for s in lm["shapes"]} == {"polygon"}


def test_malformed_structure_names_the_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match=r"x\.json.*annotations"):
        Dataset.load_coco(p)
    p.write_text(json.dumps({"images": [], "categories": [], "annotations": [{"id": 9, "image_id": "a"}]}))
    with pytest.raises(ValueError, match="annotation id 9"):
        Dataset.load_coco(p)


def test_subset_and_merge(shapes_dir):
    tr = Dataset.load_paddlex(shapes_dir, "train")
    va = Dataset.load_paddlex(shapes_dir, "val")
    m = Dataset.merge([tr, va])
    assert len(m.images) == len(tr.images) + len(va.images)
    sub = m.subset([va.images[0].id], "val")
    assert {a.image_id for a in sub.instances} == {va.images[0].id}
    with pytest.raises(ValueError, match="image id"):
        Dataset.merge([tr, tr])
