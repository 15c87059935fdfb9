"""Result: the prediction currency (print, save_to_img, save_to_json/from_json, to_coco, filter)."""
import json

import numpy as np
import pytest

from workbench.engine.result import Result


def _result(with_probs=True):
    h, w = 40, 60
    probs = np.zeros((3, h, w), np.uint8)
    probs[0, 5:15, 5:20] = 255          # certain
    probs[0, 15:20, 5:20] = 100         # p ~ 0.39: in at 0.3, out at 0.5
    probs[1, 20:30, 30:50] = 200        # p ~ 0.78
    probs[2, 0:5, 0:5] = 150            # p ~ 0.59
    img = np.full((h, w, 3), 80, np.uint8)
    return Result(input_path="/data/img_001.png", image_size=(h, w),
                  boxes=[[5, 5, 20, 20], [30, 20, 50, 30], [0, 0, 5, 5]], scores=[0.9, 0.6, 0.2],
                  class_ids=[1, 3, 1], class_names=["cat", "dog", "cat"],
                  mask_probs=probs if with_probs else None,
                  masks=None if with_probs else probs >= 128, image=img, model_name="M")


def test_masks_rles_consistent():
    r = _result()
    assert r.masks.shape == (3, 40, 60) and r.masks.dtype == bool
    assert r.masks[0].sum() == 10 * 15       # the p~0.39 band is out at 0.5
    assert r.areas.tolist() == [150.0, 200.0, 25.0]
    rles = r.rles
    assert isinstance(rles[0]["counts"], str) and rles[0]["size"] == [40, 60]
    r2 = Result(input_path=None, image_size=(40, 60), boxes=r.boxes, scores=r.scores, class_ids=r.class_ids,
                class_names=r.class_names, rles=rles)
    assert np.array_equal(r2.masks, r.masks)


def test_filter_threshold_and_mask_threshold():
    r = _result()
    f = r.filter(threshold=0.5)
    assert len(f) == 2 and f.class_names == ["cat", "dog"] and len(r) == 3  # original untouched
    g = r.filter(mask_threshold=0.3)
    assert g.masks[0].sum() == 15 * 15 and g.mask_threshold == 0.3
    assert r.masks[0].sum() == 150
    both = r.filter(threshold=0.5, mask_threshold=0.9)
    assert both.masks[1].sum() == 0 and both.masks[0].sum() == 150
    assert r.filter(class_names=["dog"]).class_ids.tolist() == [3]
    assert r.filter(class_ids=[1]).scores.tolist() == pytest.approx([0.9, 0.2])
    hard = _result(with_probs=False)
    with pytest.raises(ValueError, match="soft masks"):
        hard.filter(mask_threshold=0.3)


def test_json_round_trip(tmp_path):
    r = _result()
    p = r.save_to_json(tmp_path)
    assert p.name == "img_001_res.json"
    d = json.loads(p.read_text())
    assert d["boxes"][1]["label"] == "dog" and d["boxes"][1]["cls_id"] == 3
    assert set(d["boxes"][0]["mask"]) == {"size", "counts"}
    back = Result.from_json(p)
    assert back.input_path == r.input_path and back.image_size == (40, 60)
    assert np.allclose(back.boxes, r.boxes) and np.allclose(back.scores, r.scores)
    assert back.class_ids.tolist() == [1, 3, 1] and back.class_names == r.class_names
    assert np.array_equal(back.masks, r.masks)
    empty = Result(input_path="x.png", image_size=(4, 4))
    assert len(Result.from_json(empty.to_dict())) == 0


def test_to_coco_matches_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils

    r = _result()
    coco = r.to_coco(image_id=7)
    assert [c["image_id"] for c in coco] == [7, 7, 7]
    assert coco[1]["bbox"] == [30.0, 20.0, 20.0, 10.0] and coco[1]["category_id"] == 3
    seg = dict(coco[0]["segmentation"])
    seg["counts"] = seg["counts"].encode()
    assert mask_utils.area(seg) == 150
    json.dumps(coco)  # serialisable


def test_print_and_save_to_img(tmp_path, capsys):
    r = _result()
    r.print()
    out = capsys.readouterr().out
    assert out.startswith("{'res': {") and "'label': 'dog'" in out and "<3 masks of 40x60>" in out
    r.print(json_format=True)
    js = json.loads(capsys.readouterr().out)
    assert js["res"]["boxes"][0]["score"] == pytest.approx(0.9)
    p = r.save_to_img(tmp_path)
    assert p.name == "img_001_res.png"
    from PIL import Image

    drawn = np.asarray(Image.open(p).convert("RGB"))
    assert drawn.shape == (40, 60, 3)
    assert not np.array_equal(drawn, r.image)             # something was drawn
    assert np.array_equal(drawn[35:, :5], r.image[35:, :5])  # background far from instances untouched
    p2 = r.save_to_img(tmp_path / "x.jpg")
    assert p2.suffix == ".jpg" and p2.exists()


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="scores"):
        Result(input_path=None, image_size=(4, 4), boxes=[[0, 0, 1, 1]], scores=[0.1, 0.2])
