"""The evaluation screen: AP tables, PR curves and the worst images, ground truth beside prediction.

The ranking is the report's (``workbench.evaluation.explore``: ``analysis.match_image`` through
``error_breakdown``, worst F1 first), so the explorer and ``evaluate_result.json`` agree.
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import StaticFallback, W, fit, png_b64, set_figure, styled, table_html, wrapping_row


def ap_table_html(evaluation: dict) -> str:
    """Per-class box and mask AP, and the COCO summary numbers, from ``evaluate_result.json``."""
    m = evaluation.get("metrics", evaluation)
    bbox, segm = m.get("bbox", {}), m.get("segm", {})
    classes = list(dict.fromkeys([*segm.get("per_class", {}), *bbox.get("per_class", {})]))

    def ap(per_class: dict, c: str):
        v = per_class.get(c)
        return v.get("AP") if isinstance(v, dict) else v

    rows = [(c, ap(bbox.get("per_class", {}), c), ap(segm.get("per_class", {}), c)) for c in classes]
    rows = [tuple(float("nan") if v is None else v for v in r) for r in rows]
    per_class = table_html(rows, ["class", "box AP", "mask AP"], "wb-ap-table")
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"]
    summ = [(t, *[float("nan") if d.get(k) is None else d.get(k) for k in keys]) for t, d in
            (("box", bbox), ("mask", segm))]
    return per_class + "<br>" + table_html(summ, ["", *keys], "wb-ap-summary")


def _image_label(file_name: str, e) -> str:
    c = e.counts
    return (f"{Path(file_name).name}: F1 {e.f1:.2f} (TP {c['tp']}, missed {c['missed']}, "
            f"wrong class {c['wrong_class']}, duplicate {c['duplicate']}, poor mask {c['poor_mask']}, "
            f"background {c['background']})")


class EvaluationExplorer(StaticFallback, W.VBox):
    """AP table per class, PR curves per class and IoU, and the worst images with overlays.

    ``evaluation``: the dict of ``model.evaluate`` or a path to ``evaluate_result.json`` (or its
    folder). ``results``: the model's ``Result`` per image of the split; by default those that
    ``model.evaluate`` kept (``evaluation.results``: the split is predicted once), else
    ``workbench.evaluation.predict_split``'s. With them the explorer computes PR curves (unless the
    evaluation has them) and ranks images as the report does (per-image F1 of mask matches at IoU
    0.5, detections scored at least the threshold slider). Side-by-side parts stack when the
    notebook is narrow. The explorer draws the PR curves; ``analysis_figures()`` are the other
    charts of the evaluation (shown once, below it, in 05_evaluate), ``figures()`` all of them.
    """

    def __init__(self, evaluation, dataset_dir: str | os.PathLike | None = None, results: Sequence | None = None,
                 split: str | None = None, threshold: float = 0.5, max_side: int | None = 700, **kwargs):
        from ..data.dataset import Dataset
        from ..evaluation.explore import check_results, pr_curves_from_results

        if not isinstance(evaluation, dict):
            p = Path(evaluation)
            evaluation = json.loads((p / "evaluate_result.json" if p.is_dir() else p).read_text())
        self.evaluation = evaluation
        if results is None:
            results = getattr(evaluation, "results", None)  # kept by model.evaluate
        self.split = split or evaluation.get("split", "val")
        dataset_dir = dataset_dir or evaluation.get("dataset_dir")
        self.dataset = Dataset.load_paddlex(dataset_dir, self.split) if dataset_dir else None
        self.results = list(results) if results is not None else None
        explore = self.results is not None and self.dataset is not None
        if explore:
            check_results(self.dataset, self.results)
        self.max_side = max_side
        self.table = styled(W.HTML(ap_table_html(evaluation)), "wb-ap")
        stored = evaluation.get("analysis", {}).get("pr_curves")
        self.pr = stored or (pr_curves_from_results(self.dataset, self.results) if explore else None)
        self.iou = styled(W.Dropdown(options=list((self.pr or {}).get("curves", {})) or ["IoU 0.50"],
                                     description="PR at"), "wb-pr-iou")
        self.pr_out = styled(W.Output(layout=W.Layout(width="100%", min_width="340px")), "wb-pr-curves")
        self.threshold = styled(W.FloatSlider(min=0.0, max=1.0, step=0.05, value=float(threshold),
                                              description="score ≥", continuous_update=False), "wb-score-threshold")
        self.worst = styled(W.Dropdown(options=[], description="worst images", layout=W.Layout(width="620px")),
                            "wb-worst-images")
        self.gt_image = styled(W.Image(format="png", layout=W.Layout(align_self="flex-start")), "wb-gt-overlay")
        self.pred_image = styled(W.Image(format="png", layout=W.Layout(align_self="flex-start")), "wb-overlay")
        self.info = styled(W.HTML(), "wb-image-info")
        self.ranking: list[tuple[int, object]] = []  # (image index, analysis.ImageErrors), worst first
        self.pair: np.ndarray | None = None
        children = [W.HTML("<b>Average precision</b>"), self.table]
        if self.pr is not None:
            children += [self.iou, self.pr_out]
        if explore:
            children += [wrapping_row([self.threshold, self.worst], align_items="center"), self.info,
                         wrapping_row([W.VBox([W.HTML("ground truth"), self.gt_image]),
                                       W.VBox([W.HTML("prediction"), self.pred_image])], "wb-image-pair")]
        super().__init__(children, **kwargs)
        self.add_class("wb-evaluation-explorer")
        self.iou.observe(lambda _c: self._draw_pr(), "value")
        self.threshold.observe(lambda _c: self._rank(), "value")
        self.worst.observe(lambda _c: self._show(), "value")
        self._gt_cache: dict = {}
        self._detections: list[dict] | None = None
        self._draw_pr()
        if explore:
            self._rank()

    def _draw_pr(self) -> None:
        from ..viz import pr_figure

        if self.pr is not None:
            set_figure(self.pr_out, pr_figure(self.pr, self.iou.value))

    def _gt(self, i: int):
        if i not in self._gt_cache:
            self._gt_cache[i] = self.dataset.masks(self.dataset.images[i])
        return self._gt_cache[i]

    def _rank(self) -> None:
        from ..evaluation.explore import rank_images, result_detections

        if self._detections is None:
            self._detections = result_detections(self.dataset, self.results)
        self.ranking = rank_images(self.dataset, self._detections, score_threshold=self.threshold.value)
        opts = [(_image_label(self.dataset.images[i].file_name, e), i) for i, e in self.ranking]
        keep = self.worst.value
        self.worst.options = opts
        self.worst.value = keep if keep in dict(opts).values() else (opts[0][1] if opts else None)
        self._show()

    def _show(self) -> None:
        from ..evaluation.explore import mean_match_iou
        from ..viz import draw_instances, encode_png

        i = self.worst.value
        if i is None:
            return
        im = self.dataset.images[i]
        img = self.dataset.load_image(im)
        insts, masks = self._gt(i)
        names = {c.id: c.name for c in self.dataset.categories}
        gt = draw_instances(img, masks, class_ids=[a.category_id for a in insts],
                            labels=[names.get(a.category_id, "?") for a in insts], show_boxes=False)
        r = self.results[i].filter(threshold=self.threshold.value)
        pred = draw_instances(img, r.masks if r.has_masks else None, r.boxes, class_ids=r.class_ids,
                              labels=r.class_names, scores=r.scores)
        gt, pred = fit(gt, self.max_side), fit(pred, self.max_side)
        self.gt_image.value, self.pred_image.value = encode_png(gt), encode_png(pred)
        self.gt_image.layout.width = self.pred_image.layout.width = f"{gt.shape[1]}px"
        self.pair = np.concatenate([gt, np.full((gt.shape[0], 8, 3), 255, np.uint8), pred], 1)
        e = dict(self.ranking)[i]
        self.info.value = (f"<b>{html.escape(im.file_name)}</b>: {len(insts)} ground-truth instance(s), "
                           f"{len(r)} prediction(s) with score ≥ {self.threshold.value:.2f}; "
                           f"F1 {e.f1:.2f} at mask IoU 0.5, mean IoU of matches {mean_match_iou(e):.2f}")

    def analysis_figures(self) -> dict:
        """The charts of ``evaluate_result.json``'s analysis that the explorer does not draw itself:
        confusion matrix, errors by kind, threshold sweep."""
        from ..evaluation import analysis_figures

        return {k: f for k, f in analysis_figures(self.evaluation).items() if k != "pr_curves"}

    def figures(self) -> dict:
        """The analysis of ``evaluate_result.json`` (confusion matrix, errors by kind, threshold sweep)
        and the PR curves at the chosen IoU."""
        from ..viz import pr_figure

        pr = {"pr_curves": pr_figure(self.pr, self.iou.value)} if self.pr is not None else {}
        return {**pr, **self.analysis_figures()}

    def static_bundle(self) -> dict:
        out = {}
        body = self.table.value
        if self.pair is not None:
            out["image/png"] = png_b64(self.pair)
            body += f"<p>{self.info.value}</p><img src='data:image/png;base64,{out['image/png']}'/>"
        out["text/html"] = f"<div class='wb-static'>{body}</div>"
        return out
