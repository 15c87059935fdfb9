"""Evaluation: identity with pycocotools, and the error analysis on hand-made cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.data.dataset import Category, Dataset, ImageInfo, Instance, rle_from_mask
from workbench.data.synthetic import add_crowd_and_empty, make_shapes_dataset, noisy_predictions
from workbench.evaluation import STAT_NAMES, coco_metrics, error_breakdown, evaluate, threshold_sweep


def _assert_identical(gt, dets):
    ref = coco_metrics(gt, dets, backend="pycocotools")
    fast = coco_metrics(gt, dets, backend="fast")
    for t in ("bbox", "segm"):
        for k in STAT_NAMES:
            a, b = ref[t][k], fast[t][k]
            assert (a is None and b is None) or abs(a - b) < 1e-4, (t, k, a, b)
        for name, v in ref[t]["per_class"].items():
            for k in ("AP", "AP50", "AR100"):
                a, b = v[k], fast[t]["per_class"][name][k]
                assert (a is None and b is None) or abs(a - b) < 1e-4, (t, name, k, a, b)
    return ref


@pytest.mark.slow
def test_fast_path_identical_to_pycocotools_on_500_images(tmp_path):
    parts = make_shapes_dataset(tmp_path, 520, 0, (64, 64), seed=11, classes=("circle", "square", "triangle"))
    gt = add_crowd_and_empty(parts["train"], seed=1, crowd_fraction=0.1, empty_fraction=0.1)
    assert sum(a.iscrowd for a in gt.instances) > 10
    by_img = gt.instances_by_image()
    assert sum(1 for v in by_img.values() if not v) > 20  # empty images
    dets = noisy_predictions(gt, seed=2)
    ref = _assert_identical(gt, dets)
    assert 0.05 < ref["segm"]["AP"] < 0.95  # a non-trivial operating point, not all-or-nothing


def test_fast_path_identical_on_demo_set(demo_labelme_dir, tmp_path):
    from workbench.data.labelme import convert_labelme

    convert_labelme(demo_labelme_dir, tmp_path / "ds")
    gt = Dataset.merge([Dataset.load_paddlex(tmp_path / "ds", s) for s in ("train", "val")])
    dets = noisy_predictions(gt, seed=3, max_shift=2)
    ref = _assert_identical(gt, dets)
    assert ref["segm"]["AP"] > 0


def _img_ds(masks_by_class, h=40, w=40):
    """One image; masks_by_class: list of (category_id, mask)."""
    cats = [Category(1, "a"), Category(2, "b")]
    insts = []
    for i, (c, m) in enumerate(masks_by_class, 1):
        ys, xs = np.nonzero(m)
        insts.append(Instance(i, 1, c, rle_from_mask(m), [float(xs.min()), float(ys.min()),
                                                          float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                              float(m.sum())))
    return Dataset([ImageInfo(1, "x.png", w, h)], cats, insts)


def _box(y0, y1, x0, x1, h=40, w=40):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _det(c, m, s):
    return {"image_id": 1, "category_id": c, "segmentation": rle_from_mask(m), "score": s}


def test_error_breakdown_known_answers():
    A = _box(0, 10, 0, 10)
    B = _box(20, 30, 20, 30)
    C = _box(0, 10, 25, 35)
    gt = _img_ds([(1, A), (2, B), (1, C)])
    dets = [
        _det(1, A, 0.9),                  # tp on A
        _det(1, _box(0, 10, 1, 10), 0.8),  # duplicate of A (IoU 0.9, A already matched)
        _det(1, B, 0.7),                  # wrong class on B (B is class 2)
        _det(1, _box(0, 10, 29, 39), 0.6),  # poor mask on C (IoU 6/14 = 0.43)
        _det(2, _box(30, 38, 0, 8), 0.55),  # background
        _det(2, _box(30, 38, 30, 38), 0.2),  # below the score threshold: ignored
    ]
    per_image, cm, labels = error_breakdown(gt, dets, score_threshold=0.5)
    e = per_image[0]
    assert e.counts == {"tp": 1, "duplicate": 1, "wrong_class": 1, "poor_mask": 1, "background": 1, "missed": 2}
    assert labels == ["a", "b", "background"]
    # rows GT, cols pred: A matched (a,a); B predicted as a (b,a); C missed (a,bg);
    # duplicate + poor mask (pred a) and background (pred b) are false positives in the background row
    assert cm.tolist() == [[1, 0, 1],
                           [1, 0, 0],
                           [2, 1, 0]]


def test_threshold_sweep_known_answers():
    A = _box(0, 10, 0, 10)
    B = _box(20, 30, 20, 30)
    gt = _img_ds([(1, A), (1, B)])
    dets = [_det(1, A, 0.9), _det(1, _box(30, 38, 0, 8), 0.6), _det(1, B, 0.3)]
    s = threshold_sweep(gt, dets, thresholds=[0.2, 0.5, 0.95])
    assert s["precision"][:2] == pytest.approx([2 / 3, 1 / 2])
    assert s["precision"][2] is None  # no prediction scores 0.95: undefined, not 1.0
    assert s["recall"] == pytest.approx([1.0, 0.5, 0.0])
    assert s["best_threshold"] == 0.2


def test_evaluate_writes_result_and_report(shapes_dir, tmp_path):
    gt = Dataset.load_paddlex(shapes_dir, "val")
    dets = noisy_predictions(gt, seed=0)
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    rep = evaluate(tmp_path / "dets.json", shapes_dir, tmp_path / "eval")
    res = json.loads((tmp_path / "eval" / "evaluate_result.json").read_text())
    assert res == json.loads(json.dumps(rep.to_dict()))
    for t in ("bbox", "segm"):
        assert set(STAT_NAMES) <= set(res["metrics"][t])
        assert set(res["metrics"][t]["per_class"]) == {"circle", "square"}
    pr = res["analysis"]["pr_curves"]
    assert set(pr["curves"]) == {"IoU 0.50", "IoU 0.75", "IoU 0.50:0.95"}
    assert len(pr["curves"]["IoU 0.50"]["circle"]) == len(pr["recall"]) == 101
    assert res["analysis"]["confusion_matrix"]["labels"] == ["circle", "square", "background"]
    assert len(res["analysis"]["per_image"]) == len(gt.images)
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# Evaluation report")
    page = (tmp_path / "eval" / "report.html").read_text()
    # the plots are drawn by the plotly.js written beside the page (offline: no CDN, no network)
    assert '<script src="plotly.min.js"' in page and "cdn." not in page
    assert (tmp_path / "eval" / "plotly.min.js").stat().st_size > 1_000_000
    assert all(f'id="fig-{k}"' in page for k in ("pr_curves", "confusion_matrix", "error_breakdown",
                                                  "threshold_sweep"))
    assert res["worst_images"] and all((tmp_path / "eval" / "worst_images").iterdir())
    assert set(rep.figures()) == {"pr_curves", "confusion_matrix", "error_breakdown", "threshold_sweep"}
    perfect = evaluate(noisy_predictions(gt, seed=0, drop=0, wrong_class=0, max_shift=0, false_positives=0,
                                         duplicates=0), gt, analysis=False)
    assert perfect["segm"]["AP"] == pytest.approx(1.0)


def test_unknown_prediction_class_is_loud(shapes_dir):
    gt = Dataset.load_paddlex(shapes_dir, "val")
    dets = noisy_predictions(gt, seed=0)
    dets[0]["category_id"] = 99
    with pytest.raises(ValueError, match="99"):
        coco_metrics(gt, dets)


def test_cli_evaluate_results_file(shapes_dir, tmp_path):
    import subprocess
    import sys

    gt = Dataset.load_paddlex(shapes_dir, "val")
    (tmp_path / "dets.json").write_text(json.dumps(noisy_predictions(gt, seed=1)))
    r = subprocess.run([sys.executable, "-m", "workbench", "evaluate", str(tmp_path / "dets.json"), str(shapes_dir),
                        "--output", str(tmp_path / "ev")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "segm AP" in r.stdout and (tmp_path / "ev" / "evaluate_result.json").is_file()


def test_evaluate_takes_results_matched_by_input_path(shapes_dir):
    from workbench.engine.result import Result

    gt = Dataset.load_paddlex(shapes_dir, "val")
    names = {c.id: c.name for c in gt.categories}
    results = []
    for im, insts in gt.iter_images():
        masks = np.stack([a.mask(im.height, im.width) for a in insts])
        boxes = [[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]] for a in insts]
        results.append(Result(input_path=gt.image_path(im), image_size=(im.height, im.width), boxes=boxes,
                              scores=[0.9] * len(insts), class_ids=[a.category_id for a in insts],
                              class_names=[names[a.category_id] for a in insts], masks=masks))
    rep = evaluate(results, gt)
    assert rep["segm"]["AP"] == pytest.approx(1.0)
    assert rep["bbox"]["AP"] > 0.9
    assert rep["analysis"]["errors"]["tp"] == len(gt.instances)
    stray = Result(input_path="/elsewhere/not_in_dataset.png", image_size=(96, 96))
    with pytest.raises(ValueError, match="not_in_dataset.png"):
        evaluate([stray], gt)


def _reference_analysis(gt, dets, score_threshold):
    """The analysis as two separate matching passes with pycocotools' mask IoU (the way it was
    computed before the one-pass ``analyse``)."""
    from pycocotools import mask as mask_utils

    from workbench.evaluation import analysis

    real = analysis._mask_iou
    analysis._mask_iou = lambda: mask_utils.iou
    try:
        return (*error_breakdown(gt, dets, score_threshold), threshold_sweep(gt, dets))
    finally:
        analysis._mask_iou = real


@pytest.mark.parametrize("score_threshold", [0.5, 0.03])
def test_one_pass_analysis_equals_separate_passes(tmp_path, score_threshold):
    """``evaluate``'s analysis (one matching pass, the ground-truth RLEs of the COCO index,
    faster-coco-eval's mask IoU) gives exactly what the breakdown and the sweep give on their own
    with pycocotools' IoU: every count, IoU value, the confusion matrix and the sweep."""
    parts = make_shapes_dataset(tmp_path, 80, 0, (64, 64), seed=4, classes=("circle", "square", "triangle"))
    gt = add_crowd_and_empty(parts["train"], seed=2)
    dets = noisy_predictions(gt, seed=5)
    rep = evaluate(dets, gt, score_threshold=score_threshold)
    per_image, cm, labels, sweep = _reference_analysis(gt, dets, score_threshold)
    assert [(e.image_id, e.counts, e.detections, e.missed_gt) for e in rep.per_image] == \
        [(e.image_id, e.counts, e.detections, e.missed_gt) for e in per_image]
    assert rep.confusion.tolist() == cm.tolist() and rep.confusion_labels == labels
    assert rep.sweep == sweep


def _pycocotools_from_file(gt, res_path):
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    want = {}
    for t in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = gt.to_pycocotools()
            ev = COCOeval(coco, coco.loadRes(str(res_path)), t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        want[t] = [None if v < 0 else float(v) for v in ev.stats]
    return want


@pytest.mark.parametrize("boxes", ["none", "all"])
def test_evaluate_results_file_equals_pycocotools(tmp_path, boxes):
    """``evaluate`` end to end on a COCO results file -- masks without ``bbox`` (what ``predict``
    writes; pycocotools' mask branch) and masks with ``bbox`` (its box branch) -- gives
    pycocotools' numbers for that same file (bbox and segm, all 12 stats)."""
    from pycocotools import mask as mask_utils

    parts = make_shapes_dataset(tmp_path / "ds", 60, 0, (64, 64), seed=8, classes=("circle", "square"))
    gt = add_crowd_and_empty(parts["train"], seed=3)
    dets = noisy_predictions(gt, seed=6)
    for d in dets if boxes == "all" else []:
        r = {"size": d["segmentation"]["size"], "counts": d["segmentation"]["counts"].encode("ascii")}
        d["bbox"] = [float(v) for v in mask_utils.toBbox(r)]
    res = tmp_path / "results.json"
    res.write_text(json.dumps(dets))
    assert any("bbox" in d for d in dets) == (boxes != "none")
    want = _pycocotools_from_file(gt, res)
    rep = evaluate(res, gt)
    for t in ("bbox", "segm"):
        for k, name in enumerate(STAT_NAMES):
            g, w = rep[t][name], want[t][k]
            assert (g is None and w is None) or abs(g - w) < 1e-12, (boxes, t, name, g, w)


def test_batched_results_index_equals_loadres(tmp_path):
    """The fast path's results index (areas and boxes of all masks in one call each) holds exactly
    what faster-coco-eval's ``loadRes`` makes: the same records, values and types, the same lookups."""
    pytest.importorskip("faster_coco_eval")
    from faster_coco_eval import COCO

    from workbench.evaluation.metrics import _gt_dict, _load_results

    parts = make_shapes_dataset(tmp_path, 60, 0, (64, 64), seed=9, classes=("circle", "square", "triangle"))
    gt = parts["train"]
    add_crowd_and_empty(gt, seed=1)
    dets = noisy_predictions(gt, seed=4)
    assert dets and "bbox" not in dets[0]
    coco_gt = COCO(_gt_dict(gt))
    ref = coco_gt.loadRes([dict(d) for d in dets])
    ours = _load_results(coco_gt, [dict(d) for d in dets])
    assert ours.anns.keys() == ref.anns.keys()
    for k, a in ref.anns.items():
        b = ours.anns[k]
        assert a.keys() == b.keys()
        for f in a:
            assert type(a[f]) is type(b[f]), f
            assert np.array_equal(a[f], b[f]) if f != "segmentation" else a[f] == b[f], (k, f)
    assert ours.imgs == ref.imgs and ours.cats == ref.cats and ours.catToImgs == ref.catToImgs
    assert {i: [a["id"] for a in v] for i, v in ours.imgToAnns.items()} == \
        {i: [a["id"] for a in v] for i, v in ref.imgToAnns.items()}
    # a list with boxes takes loadRes's box branch, as before
    boxed = [{**d, "bbox": [1.0, 2.0, 3.0, 4.0]} for d in dets[:5]]
    assert _load_results(coco_gt, boxed).anns[1]["area"] == 12.0
