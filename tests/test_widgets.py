"""Widget logic without a browser: the controls change what is drawn and counted."""
from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest

W = pytest.importorskip("ipywidgets")

from workbench import widgets as wbw  # noqa: E402
from workbench.data.check import check_dataset  # noqa: E402


def _image_with_classes(browser, *names):
    """Index of the first image (current split) having instances of all ``names``."""
    ds = browser.dataset
    cats = {c.id: c.name for c in ds.categories}
    for i, (_im, insts) in enumerate(ds.iter_images()):
        have = {cats[a.category_id] for a in insts}
        if set(names) <= have:
            return i
    pytest.skip(f"no image with classes {names}")


def test_browser_class_filter_changes_overlay(shapes_dir, tmp_path):
    result = check_dataset(shapes_dir, tmp_path / "check", verbose=False)
    b = wbw.DatasetBrowser(shapes_dir, check=result)
    b.set_index(_image_with_classes(b, "circle", "square"))
    before, png_before, n_before = b.overlay.copy(), b.image.value, b.drawn_instances
    b.class_boxes["square"].value = False  # what un-ticking the checkbox does
    assert b.drawn_instances < n_before
    assert not np.array_equal(before, b.overlay)
    assert b.image.value != png_before
    assert "square: " in b.info.value  # the per-class count still lists all classes
    b.class_boxes["square"].value = True
    assert np.array_equal(before, b.overlay)  # back to the same picture
    b.set_classes([])
    assert b.drawn_instances == 0
    assert np.array_equal(b.overlay, b.dataset.load_image(b.current_image))  # nothing drawn on it
    with pytest.raises(ValueError, match="unknown class"):
        b.set_classes(["hexagon"])


def test_browser_toggles_opacity_and_navigation(shapes_dir):
    b = wbw.DatasetBrowser(shapes_dir)
    b.set_index(_image_with_classes(b, "circle"))
    ref = b.overlay.copy()
    b.opacity.value = 0.9
    assert not np.array_equal(ref, b.overlay)
    b.opacity.value = 0.45
    assert np.array_equal(ref, b.overlay)
    for toggle in (b.show_masks, b.show_boxes, b.show_labels):
        toggle.value = False
        assert not np.array_equal(ref, b.overlay), toggle.description
        toggle.value = True
    # slider and dropdown stay in step
    b.slider.value = 3
    assert b.image_dd.value == 3 and b.current_image is b.dataset.images[3]
    b.image_dd.value = 1
    assert b.slider.value == 1
    b.split_dd.value = "val"
    assert b.slider.max == len(b.dataset.images) - 1 and b.current_image.file_name.startswith("images/val_")


def test_browser_shows_problems_of_current_image(shapes_dir, tmp_path):
    ann = shapes_dir / "annotations" / "instance_train.json"
    d = json.loads(ann.read_text())
    bad = d["annotations"][0]
    bad["category_id"] = 99  # unknown category
    ann.write_text(json.dumps(d))
    result = check_dataset(shapes_dir, tmp_path / "check", verbose=False)
    assert not result.check_pass
    b = wbw.DatasetBrowser(shapes_dir, check=result)
    idx = [im.id for im in b.dataset.images].index(bad["image_id"])
    b.set_index(idx)
    assert "unknown_category_id" in b.problems.value and f"annotation id {bad['id']}" in b.problems.value
    other = next(i for i, im in enumerate(b.dataset.images) if im.id != bad["image_id"])
    b.set_index(other)
    assert "no problems" in b.problems.value
    # the unknown category has its own checkbox: every box ticked shows every instance
    assert "<id 99>" in b.class_boxes
    b.set_index(idx)
    n = len(b.dataset.instances_by_image()[bad["image_id"]])
    assert b.drawn_instances == n and f"{n} of {n} instance(s) shown" in b.info.value
    b.set_classes([c for c in b.class_boxes if c != "<id 99>"])
    assert b.drawn_instances == n - sum(1 for a in b.dataset.instances_by_image()[bad["image_id"]]
                                        if a.category_id == 99)


def test_static_fallback_bundle(shapes_dir):
    b = wbw.DatasetBrowser(shapes_dir)
    data = b._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    png = base64.b64decode(data["image/png"])
    assert png.startswith(b"\x89PNG")
    assert "wb-dataset-browser" in b._dom_classes and "wb-overlay" in b.image._dom_classes


def test_stats_figures(shapes_dir, tmp_path):
    result = check_dataset(shapes_dir, tmp_path / "check", verbose=False)
    fig = wbw.class_histogram(shapes_dir)
    assert {t.name for t in fig.data} == {"train", "val"}
    train = next(t for t in fig.data if t.name == "train")
    assert dict(zip(train.x, train.y)) == result.stats["instances_per_class"]["train"]
    figs = wbw.instance_stats_figures(result)
    assert {"class_histogram", "instances_per_image", "mask_area"} <= set(figs)
    panel = wbw.StatsPanel(shapes_dir)
    tab = panel.children[0]
    assert len(tab.children) == len(panel.figures)
    assert "application/vnd.plotly.v1+json" in tab.children[0].outputs[0]["data"]


def test_split_panel_runs_and_summarises(shapes_dir):
    p = wbw.SplitPanel(str(shapes_dir), val_percent=50, seed=1)
    parts = p.run()
    assert len(parts["val"].images) == 6 and len(parts["train"].images) == 6
    assert p.progress.bar_style == "success" and "wb-split-table" in p.summary.value
    p.dataset_dir.value = str(shapes_dir / "missing")
    p.run_button.click()  # errors are shown in the panel, not raised from a button
    assert p.progress.bar_style == "danger" and "failed" in p.status.value and p.error is not None


def test_convert_panel(demo_labelme_dir, tmp_path):
    p = wbw.ConvertPanel(str(demo_labelme_dir), str(tmp_path / "ds"), val_percent=25)
    conv = p.run()
    assert conv.summary["images"] == len(conv.datasets["train"].images) + len(conv.datasets["val"].images)
    assert "wb-category-table" in p.summary.value
    for c in conv.summary["categories"]:
        assert f">{c['name']}<" in p.summary.value
    assert "text/html" in p._repr_mimebundle_()


# ----------------------------------------------------------------------- predictions
def _soft_results(n_images=2, size=(64, 64)):
    """Results as a model gives them: scores, classes and soft masks (no model needed)."""
    from workbench.engine.result import Result

    rng = np.random.default_rng(0)
    h, w = size
    out = []
    for k in range(n_images):
        probs, boxes = [], []
        for i in range(4):
            yy, xx = np.mgrid[:h, :w]
            cy, cx = 12 + 12 * i, 20 + 5 * k
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            probs.append((np.clip(1 - d / 14, 0, 1) * 255).astype(np.uint8))  # soft disc, radius ~14
            boxes.append([cx - 10, cy - 10, cx + 10, cy + 10])
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        out.append(Result(input_path=f"img_{k}.png", image_size=size, boxes=boxes, scores=[0.9, 0.6, 0.3, 0.1],
                          class_ids=[1, 2, 1, 2], class_names=["circle", "square", "circle", "square"],
                          mask_probs=np.stack(probs), image=img, threshold=0.05))
    return out


def test_prediction_explorer_sliders_refilter(tmp_path):
    results = _soft_results()
    ex = wbw.PredictionExplorer(results, threshold=0.5, mask_threshold=0.5, output_dir=tmp_path)
    assert ex.count == 2  # scores 0.9 and 0.6
    png = ex.image.value
    ex.threshold.value = 0.2
    assert ex.count == 3 and ex.image.value != png and "<b>3</b> of 4" in ex.info.value
    ex.threshold.value = 0.95
    assert ex.count == 0
    ex.threshold.value = 0.05
    area_05 = ex.filtered.areas.sum()
    ex.mask_threshold.value = 0.8  # re-binarised from the soft masks: smaller masks, same instances
    assert ex.count == 4 and ex.filtered.areas.sum() < area_05
    assert results[0].mask_threshold == 0.5  # the stored results are not changed
    ex.image_dd.value = 1
    assert ex.filtered.input_path == "img_1.png"
    p = ex.save_json()
    saved = json.loads(p.read_text())
    assert len(saved["boxes"]) == 4 and saved["mask_threshold"] == 0.8
    assert "download" in ex.download.value and "data:application/json;base64," in ex.download.value
    assert "image/png" in ex._repr_mimebundle_()


def test_prediction_explorer_without_soft_masks(tmp_path):
    from workbench.engine.result import Result

    r = _soft_results(1)[0].filter(threshold=0.05)
    r.save_to_json(tmp_path / "x_res.json")
    loaded = Result.from_json(tmp_path / "x_res.json")
    loaded.image = r.image
    ex = wbw.PredictionExplorer([loaded], threshold=0.5)
    assert ex.mask_threshold.disabled and ex.count == 2
    ex.threshold.value = 0.05
    assert ex.count == 4


def _results_from_gt(ds, drop=(), relabel=()):
    """Results made from the ground truth: images ``drop`` lose all masks, images ``relabel`` get
    their first instance's class wrong."""
    from workbench.engine.result import Result

    other = {c.id: next(o.id for o in ds.categories if o.id != c.id) for c in ds.categories}
    results = []
    for k, (im, insts) in enumerate(ds.iter_images()):
        _, masks = ds.masks(im)
        keep = [] if k in drop else list(range(len(insts)))
        cls = [insts[i].category_id for i in keep]
        if k in relabel and cls:
            cls[0] = other[cls[0]]
        results.append(Result(input_path=str(ds.image_path(im)), image_size=(im.height, im.width),
                              boxes=[[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                                     for a in (insts[i] for i in keep)],
                              scores=[0.9] * len(keep), class_ids=cls, class_names=["x"] * len(keep),
                              masks=masks[keep] if keep else np.zeros((0, im.height, im.width), bool)))
    return results


def test_evaluation_explorer_ranks_and_draws(shapes_dir):
    """Predictions made from the ground truth (one image's masks dropped) rank that image worst."""
    from workbench.data.dataset import Dataset
    from workbench.evaluation import coco_metrics

    ds = Dataset.load_paddlex(shapes_dir, "val")
    results = _results_from_gt(ds, drop=(1,))
    preds = [p for im, r in zip(ds.images, results) for p in r.to_coco(im.id)]
    evaluation = {"split": "val", "dataset_dir": str(shapes_dir), "metrics": coco_metrics(ds, preds)}
    ex = wbw.EvaluationExplorer(evaluation, shapes_dir, results)
    assert "wb-ap-table" in ex.table.value
    worst_i, worst = ex.ranking[0]
    assert worst_i == 1 and worst.f1 == 0.0 and worst.counts["missed"] == len(list(ds.iter_images())[1][1])
    assert all(e.f1 == 1.0 for i, e in ex.ranking[1:])
    assert ex.worst.value == 1 and "F1 0.00" in ex.worst.label and "F1 0.00" in ex.info.value
    assert set(ex.pr["curves"]) == {"IoU 0.50", "IoU 0.75", "IoU 0.50:0.95"}
    assert ex.figures()["pr_curves"].data
    assert ex.pair is not None and "image/png" in ex._repr_mimebundle_()
    ex.threshold.value = 0.95  # nothing passes: every image is now missing all instances
    assert all(e.counts["tp"] == 0 for _, e in ex.ranking)
    with pytest.raises(ValueError, match="predict every image"):
        wbw.EvaluationExplorer(evaluation, shapes_dir, results[:-1])


def test_evaluation_explorer_ranks_like_the_report(shapes_dir, tmp_path):
    """The explorer and ``evaluate``'s report rank with one matcher: same order, same counts."""
    from workbench.data.dataset import Dataset
    from workbench.evaluation import evaluate

    ds = Dataset.load_paddlex(shapes_dir, "val")
    results = _results_from_gt(ds, drop=(2,), relabel=(0,))
    report = evaluate(results, ds, output_dir=tmp_path / "eval", score_threshold=0.5)
    ex = wbw.EvaluationExplorer(tmp_path / "eval", shapes_dir, results, threshold=0.5)
    assert ex.pr == report.metrics["analysis"]["pr_curves"]  # read from evaluate_result.json
    ranked = [ds.images[i].id for i, _ in ex.ranking]
    assert ranked == [e.image_id for e in report.worst_images(len(ds.images))]
    assert [e.counts for _, e in ex.ranking] == [e.counts for e in report.worst_images(len(ds.images))]
    assert ex.ranking[0][1].counts["wrong_class"] + ex.ranking[1][1].counts["wrong_class"] == 1
    assert not hasattr(wbw, "image_quality")


# ----------------------------------------------------------------------- training
def test_training_panel_follows_the_family():
    """Schedule label and defaults come from the registry, and follow the model dropdown."""
    import sys

    from workbench.models import family_info

    p = wbw.TrainingPanel("data", "out", model_name="Mask-RT-DETR-S")
    d = family_info("Mask-RT-DETR-S").train_defaults
    assert p.iters.description == "epochs" and p.unit == "epochs"
    assert (p.iters.value, p.batch_size.value, p.lr.value) == (d["epochs_iters"], d["batch_size"], d["learning_rate"])
    p.model.value = "MaskRCNN-ResNet50-FPN"
    d = family_info("MaskRCNN-ResNet50-FPN").train_defaults
    assert p.iters.description == "iterations"
    assert (p.iters.value, p.batch_size.value, p.lr.value) == (d["epochs_iters"], d["batch_size"], d["learning_rate"])
    q = wbw.TrainingPanel("data", "out", model_name="MaskRCNN-ResNet50-FPN", epochs_iters=7, batch_size=3,
                          learning_rate=0.5)
    assert (q.iters.value, q.batch_size.value, q.lr.value) == (7, 3, 0.5)
    spec = q.spec()
    assert spec["train_kwargs"]["epochs_iters"] == 7 and spec["model_name"] == "MaskRCNN-ResNet50-FPN"
    cmd = q.command(spec)
    assert cmd[:4] == [sys.executable, "-m", "workbench", "train-worker"] and json.loads(cmd[4]) == spec
    assert wbw.train_worker_main([]) == 2


def test_training_panel_progress_counts_optimizer_steps():
    p = wbw.TrainingPanel("data", "out", model_name="Mask-RT-DETR-S")
    p.state = "running"
    p.records = [{"type": "train", "iter": 1, "max_iter": 40, "epoch": 1, "total_loss": 3.0, "lr": 1e-4,
                  "time": 0.5, "elapsed_s": 0.5},
                 {"type": "train", "iter": 10, "max_iter": 40, "epoch": 1, "total_loss": 2.0, "lr": 1e-4,
                  "time": 0.25, "elapsed_s": 2.75},
                 {"type": "eval", "iter": 10, "epoch": 1, "epochs_iters": 1, "bbox_AP": 0.1, "segm_AP": 0.2,
                  "best_segm_AP": 0.2, "best_epochs_iters": 1}]
    p._draw()
    assert (p.progress.value, p.progress.max, p.progress.description) == (10, 40, "10/40 it")
    assert "10 / 40 it · 0.25 s/it · ETA 0:08" in p.status.value and "val mask AP 0.200" in p.status.value
    assert wbw.progress_of(p.records)["eta_s"] == pytest.approx(7.5)
    loss, ap = p.figures()["loss"], p.figures()["metrics"]
    assert loss.layout.xaxis.title.text == "iteration" and list(loss.data[0].x) == [1, 10]
    assert list(ap.data[0].x) == [10]


def test_viz_package_keeps_its_names():
    from workbench import viz
    from workbench.viz import draw_instances, figures

    assert viz.draw_instances is draw_instances and viz.loss_figure is figures.loss_figure
    for name in ("class_color", "encode_png", "save_image", "grouped_bar_figure", "histogram_figure", "bar_figure",
                 "save_bar_png", "save_hist_png", "pr_figure", "score_histogram", "instance_stats_figures"):
        assert callable(getattr(viz, name)), name


def test_training_panel_stop_really_stops(shapes_dir, tmp_path):
    """Start trains in a subprocess; Stop ends it (the process is gone, no result 'done')."""
    import time

    pytest.importorskip("detectron2")
    out = tmp_path / "train"
    p = wbw.TrainingPanel(str(shapes_dir), str(out), epochs_iters=500, batch_size=1, input_size=96,
                          model_kwargs={"depth": 18}, train_kwargs={"eval_interval": 1000, "log_interval": 1},
                          poll_interval=0.3)
    assert "MaskRCNN-ResNet50-FPN" in p.model.options
    p.start_button.click()
    assert p.running and p.stop_button.disabled is False
    deadline = time.time() + 240
    while time.time() < deadline and not p.records:  # wait for the first logged iteration
        time.sleep(0.5)
    assert p.records, f"no metrics within 240 s: {p.log_path.read_text()[-2000:]}"
    assert p.progress.value >= 1
    assert p.loss_out.outputs and "application/vnd.plotly.v1+json" in p.loss_out.outputs[0]["data"]
    pid = p.process.pid
    p.stop_button.click()
    p.wait(30)
    assert p.state == "stopped" and not p.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    n = len(p.records)
    time.sleep(2)
    assert len(wbw.read_metrics(out / "metrics.jsonl")) == n  # nothing is written after Stop
    res = json.loads((out / "train_result.json").read_text())
    assert res["status"] != "done"


def test_failed_panel_run_is_red_and_raises_inside_a_kernel(tmp_path, monkeypatch):
    """In a kernel ``Output.__exit__`` swallows exceptions; a failed step must still show red with the
    reason at the top, keep the traceback folded below, and raise so that the next cell does not run."""
    import ipywidgets.widgets.widget_output as wo
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(wo, "get_ipython", lambda: shell)
    monkeypatch.setattr(shell, "showtraceback", lambda *a, **k: None)
    p = wbw.ConvertPanel(str(tmp_path / "no_such_labelme_dir"), str(tmp_path / "ds"))
    with pytest.raises(Exception) as info:
        p.run()
    assert p.error is info.value and p.result is None
    assert p.progress.bar_style == "danger" and "done" not in p.status.value
    assert "failed:" in p.status.value and "no_such_labelme_dir" in p.status.value
    assert "<details" in p.summary.value and "Traceback" in p.summary.value
    # the cell's own output is one line, not a second traceback (IPython prints _render_traceback_)
    shown = info.value._render_traceback_()
    assert len(shown) == 1 and "ConvertPanel failed" in shown[0] and "no_such_labelme_dir" in shown[0]
    p.run_button.click()  # a button press shows the same, without raising
    assert p.progress.bar_style == "danger" and p.error is not None


def test_convert_panel_says_what_the_options_did_not_do(demo_labelme_dir, tmp_path):
    """labels.txt fixes the class order whatever the label-order option says, and a class-stratified
    val split of 8 images at 20 % holds 3, not 2: the panel says both instead of leaving it silent."""
    import shutil

    src = tmp_path / "lm"
    shutil.copytree(demo_labelme_dir, src)
    p = wbw.ConvertPanel(str(src), str(tmp_path / "ds"), label_order="stable", val_percent=20)
    p.run()
    s = p.result.summary
    assert s["images"] == 8 and s["splits"]["val"]["images"] == 3
    assert "the label-order option only applies without a labels file" in p.summary.value
    assert "val holds 3 of 8 images, not the 2 that 20 % would give" in p.summary.value
    (src / "labels.txt").unlink()
    p2 = wbw.ConvertPanel(str(src), str(tmp_path / "ds2"), val_percent=40)
    p2.run()
    assert p2.result.summary["splits"]["val"]["images"] == 3  # round(8 * 40 %) = 3: as asked
    assert "label-order option" not in p2.summary.value and "val holds" not in p2.summary.value
