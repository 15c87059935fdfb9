"""ipywidgets panels for the step notebooks, built on ``workbench.viz`` and the facade.

Each panel is an ``ipywidgets.VBox`` usable on its own::

    from workbench import widgets as wbw
    wbw.setup_notebook()                      # plotly renderer that keeps figures in saved outputs
    wbw.DatasetBrowser("dataset_dir", check=result)
    wbw.show_stats(result)                    # class histogram + instance statistics (plotly)
    wbw.ConvertPanel("labelme_dir", "dataset_dir")
    wbw.SplitPanel("dataset_dir")
    wbw.TrainingPanel("dataset_dir", "runs/train")
    wbw.EvaluationExplorer("runs/train/evaluate")
    wbw.PredictionExplorer(results)

Static fallback: when a panel is displayed, its output carries a static picture of its current
state (``image/png`` of the overlay and/or ``text/html`` of the summary) beside the live widget
view. JupyterLab shows the live widget; viewers without a widget frontend (nbconvert, GitHub,
an untrusted notebook, a batch run's saved copy) show the picture.

Every control has a CSS class (``wb-...``) for stable selectors in browser tests.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

try:  # ipywidgets is a dependency, but keep ``import workbench.widgets`` informative without it
    import ipywidgets as W
except ImportError as e:  # pragma: no cover
    raise ImportError("workbench.widgets needs ipywidgets (pip install ipywidgets)") from e

DEFAULT_PLOTLY_RENDERER = "plotly_mimetype+notebook"


# --------------------------------------------------------------------------------- helpers
def setup_notebook(renderer: str | None = None) -> None:
    """Choose the plotly renderer so figures are live in JupyterLab *and* kept in saved outputs.

    ``plotly_mimetype`` is what JupyterLab's plotly extension renders; ``notebook`` adds a
    self-contained HTML copy (plotly.js embedded once per notebook) that nbconvert's HTML keeps.
    ``PLOTLY_RENDERER`` in the environment wins over the default.
    """
    import plotly.io as pio

    chosen = renderer or os.environ.get("PLOTLY_RENDERER") or DEFAULT_PLOTLY_RENDERER
    pio.renderers.default = chosen


def slug(text: str) -> str:
    """A CSS-class-safe version of a class name: ``wb-class-<slug>``."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-").lower()
    return s or "x"


def png_b64(image: np.ndarray) -> str:
    from .viz import encode_png

    return base64.b64encode(encode_png(image)).decode("ascii")


def _fit(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale for display only (never upscales)."""
    if not max_side or max(image.shape[:2]) <= max_side:
        return image
    import cv2

    s = max_side / max(image.shape[:2])
    return cv2.resize(image, (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s))),
                      interpolation=cv2.INTER_AREA)


def figure_bundle(fig) -> dict:
    """A display_data output for an ``Output`` widget's ``outputs`` (thread-safe to assign)."""
    import plotly.io as pio

    return {"output_type": "display_data",
            "data": {"application/vnd.plotly.v1+json": json.loads(pio.to_json(fig, validate=False)),
                     "text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"},
            "metadata": {}}


def _set_figure(out: "W.Output", fig) -> None:
    out.outputs = (figure_bundle(fig),)


def _table_html(rows: Sequence[Sequence[Any]], header: Sequence[str], cls: str = "wb-table") -> str:
    h = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(_fmt(x))}</td>" for x in r)
                   + "</tr>" for r in rows)
    return f"<table class='{cls}' style='border-collapse:collapse'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if x != x:  # NaN
            return "–"
        return f"{x:.3f}"
    return str(x)


class StaticFallback:
    """Mixin: add a static picture of the current state to the widget's display output."""

    def static_bundle(self) -> dict:  # pragma: no cover - overridden
        return {}

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}  # type: ignore[misc]
        try:
            extra = self.static_bundle()
        except Exception as e:  # a broken picture must never hide the live widget
            extra = {"text/html": f"<pre>static view unavailable: {html.escape(repr(e))}</pre>"}
        data.update(extra)
        return data


def show_figures(figures: dict | Iterable) -> None:
    """Display plotly figures as ordinary outputs (live in JupyterLab, kept in saved notebooks)."""
    from IPython.display import display

    for fig in (figures.values() if isinstance(figures, dict) else figures):
        display(fig)


# --------------------------------------------------------------------------- datasets
def _load_splits(source) -> dict:
    """``{split: Dataset}`` from a dataset dir, a Dataset, a dict of them or a CheckResult."""
    from .data.check import CheckResult
    from .data.dataset import ANNOTATION_FILES, SPLITS, Dataset

    if isinstance(source, CheckResult):
        if source.datasets:
            return dict(source.datasets)
        source = source.dataset_dir
    if isinstance(source, Dataset):
        return {source.split or "data": source}
    if isinstance(source, dict):
        return dict(source)
    d = Path(source)
    out = {s: Dataset.load_paddlex(d, s) for s in SPLITS if (d / "annotations" / ANNOTATION_FILES[s]).is_file()}
    if not out:
        raise FileNotFoundError(f"{d / 'annotations'}: no instance_train.json or instance_val.json")
    return out


def dataset_stats(source) -> dict:
    """The check's statistics (instances/images per class, instances per image, mask areas)."""
    from .data.check import CheckResult
    from .data.check import dataset_stats as _split_stats

    if isinstance(source, CheckResult):
        return source.stats
    return _split_stats(_load_splits(source))


def class_histogram(source):
    """Plotly grouped bar chart: instances per class and split."""
    from . import viz

    return viz.grouped_bar_figure(dataset_stats(source)["instances_per_class"], "Instances per class")


def instance_stats_figures(source) -> dict:
    """Plotly figures: class histogram, images per class, instances per image, mask areas, sizes."""
    from .data.check import CheckResult

    if isinstance(source, CheckResult):
        return source.figures()
    from . import viz

    s = dataset_stats(source)
    return {"class_histogram": viz.grouped_bar_figure(s["instances_per_class"], "Instances per class"),
            "images_per_class": viz.grouped_bar_figure(s["images_per_class"], "Images containing each class",
                                                       ylabel="images"),
            "instances_per_image": viz.histogram_figure(s["instances_per_image"], "Instances per image",
                                                        "instances"),
            "mask_area": viz.histogram_figure(s["mask_areas"], "Mask area (pixels)", "area", log_x=True)}


def show_stats(source) -> None:
    """Display the class histogram and the instance statistics as plotly figures."""
    show_figures(instance_stats_figures(source))


class StatsPanel(W.VBox):
    """The statistics figures in tabs (one ``Output`` per figure)."""

    def __init__(self, source, **kwargs):
        self.figures = instance_stats_figures(source)
        outs = []
        for name, fig in self.figures.items():
            o = W.Output()
            o.add_class(f"wb-stats-{slug(name)}")
            _set_figure(o, fig)
            outs.append(o)
        tabs = W.Tab(children=outs)
        for i, name in enumerate(self.figures):
            tabs.set_title(i, name.replace("_", " "))
        super().__init__([tabs], **kwargs)
        self.add_class("wb-stats-panel")


class DatasetBrowser(StaticFallback, W.VBox):
    """Browse a dataset's images with their ground-truth instances drawn on them.

    Controls: split, image slider + dropdown, one checkbox per class, mask/box/label toggles,
    opacity. Below the image: the check's problems for the current image (pass ``check=`` the
    ``CheckResult`` of ``check_dataset``).
    """

    def __init__(self, dataset, check=None, split: str | None = None, index: int = 0,
                 max_side: int | None = 900, **kwargs):
        from .data.check import CheckResult

        if check is None and isinstance(dataset, CheckResult):
            check = dataset
        self.check = check
        self.datasets = _load_splits(dataset)
        self.max_side = max_side
        self._cache: dict = {}
        self.overlay: np.ndarray | None = None
        self.drawn_instances = 0
        splits = list(self.datasets)
        split = split if split in self.datasets else splits[0]
        first = self.datasets[split]

        self.split_dd = W.Dropdown(options=splits, value=split, description="split")
        self.split_dd.add_class("wb-split")
        self.slider = W.IntSlider(min=0, max=max(0, len(first.images) - 1), value=0, description="image",
                                  continuous_update=False)
        self.slider.add_class("wb-image-slider")
        self.image_dd = W.Dropdown(options=self._image_options(split), description="file",
                                   layout=W.Layout(width="340px"))
        self.image_dd.add_class("wb-image-dropdown")
        names = self._all_category_names()
        self.class_boxes = {}
        for n in names:
            cb = W.Checkbox(value=True, description=n, indent=False, layout=W.Layout(width="auto"))
            cb.add_class("wb-class-filter")
            cb.add_class(f"wb-class-{slug(n)}")
            self.class_boxes[n] = cb
        self.show_masks = W.Checkbox(value=True, description="masks", indent=False, layout=W.Layout(width="auto"))
        self.show_masks.add_class("wb-show-masks")
        self.show_boxes = W.Checkbox(value=True, description="boxes", indent=False, layout=W.Layout(width="auto"))
        self.show_boxes.add_class("wb-show-boxes")
        self.show_labels = W.Checkbox(value=True, description="labels", indent=False, layout=W.Layout(width="auto"))
        self.show_labels.add_class("wb-show-labels")
        self.opacity = W.FloatSlider(min=0.0, max=1.0, step=0.05, value=0.45, description="opacity",
                                     continuous_update=False)
        self.opacity.add_class("wb-opacity")
        self.image = W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%"))
        self.image.add_class("wb-overlay")
        self.info = W.HTML()
        self.info.add_class("wb-image-info")
        self.problems = W.HTML()
        self.problems.add_class("wb-problems")

        filters = W.HBox(list(self.class_boxes.values()), layout=W.Layout(flex_flow="row wrap"))
        filters.add_class("wb-class-filters")
        toggles = W.HBox([self.show_masks, self.show_boxes, self.show_labels, self.opacity])
        super().__init__([W.HBox([self.split_dd, self.slider, self.image_dd]), filters, toggles,
                          self.image, self.info, self.problems], **kwargs)
        self.add_class("wb-dataset-browser")

        self._syncing = False
        self.split_dd.observe(self._on_split, "value")
        self.slider.observe(self._on_slider, "value")
        self.image_dd.observe(self._on_dropdown, "value")
        for w in [*self.class_boxes.values(), self.show_masks, self.show_boxes, self.show_labels, self.opacity]:
            w.observe(lambda _change: self.refresh(), "value")
        self.set_index(index)

    # ------------------------------------------------------------------ state
    def _all_category_names(self) -> list[str]:
        names: list[str] = []
        for ds in self.datasets.values():
            for c in ds.categories:
                if c.name not in names:
                    names.append(c.name)
        return names

    def _image_options(self, split: str) -> list[tuple[str, int]]:
        return [(f"{i}: {Path(im.file_name).name}", i) for i, im in enumerate(self.datasets[split].images)]

    @property
    def dataset(self):
        return self.datasets[self.split_dd.value]

    @property
    def current_image(self):
        ims = self.dataset.images
        return ims[self.slider.value] if ims else None

    @property
    def visible_classes(self) -> list[str]:
        return [n for n, cb in self.class_boxes.items() if cb.value]

    def set_classes(self, visible: Iterable[str]) -> None:
        """Show only these classes (as ticking the checkboxes would)."""
        visible = set(visible)
        unknown = visible - set(self.class_boxes)
        if unknown:
            raise ValueError(f"unknown class(es) {sorted(unknown)}; classes: {list(self.class_boxes)}")
        with self.hold_trait_notifications():
            self._syncing = True
            try:
                for n, cb in self.class_boxes.items():
                    cb.value = n in visible
            finally:
                self._syncing = False
        self.refresh()

    def set_index(self, index: int) -> None:
        self.slider.value = int(index)
        self._on_slider({"new": self.slider.value})

    def _on_split(self, change) -> None:
        self._syncing = True
        try:
            self.image_dd.options = self._image_options(change["new"])
            self.slider.max = max(0, len(self.dataset.images) - 1)
            self.slider.value = 0
            if self.image_dd.options:
                self.image_dd.value = 0
        finally:
            self._syncing = False
        self.refresh()

    def _on_slider(self, change) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            if self.image_dd.options:
                self.image_dd.value = change["new"]
        finally:
            self._syncing = False
        self.refresh()

    def _on_dropdown(self, change) -> None:
        if self._syncing or change["new"] is None:
            return
        self.slider.value = change["new"]  # triggers _on_slider -> refresh

    # ------------------------------------------------------------------ drawing
    def _load(self, split: str, im):
        key = (split, im.id)
        if key not in self._cache:
            ds = self.datasets[split]
            img = ds.load_image(im)
            names = ds.category_by_id()
            insts = ds.instances_by_image().get(im.id, [])
            h, w = img.shape[:2]
            drawable, masks, failed = [], [], []
            for a in insts:
                try:
                    m = a.mask(h, w)
                except Exception as e:  # broken geometry: reported, not drawn
                    failed.append((a, str(e)))
                    continue
                drawable.append(a)
                masks.append(m)
            labels = [names[a.category_id].name if a.category_id in names else f"<id {a.category_id}>"
                      for a in drawable]
            self._cache = {key: (img, drawable, np.stack(masks) if masks else np.zeros((0, h, w), bool),
                                 labels, failed)}  # keep one image: browsing large datasets stays light
        return self._cache[key]

    def render(self) -> np.ndarray | None:
        """The overlay of the current image with the current settings (RGB uint8)."""
        from .viz import draw_instances

        im = self.current_image
        if im is None:
            return None
        img, insts, masks, labels, failed = self._load(self.split_dd.value, im)
        visible = set(self.visible_classes)
        keep = [i for i, lab in enumerate(labels) if lab in visible]
        self.drawn_instances = len(keep)
        boxes = np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                          for a in (insts[i] for i in keep)], np.float32).reshape(-1, 4)
        return draw_instances(img, masks[keep] if keep else None, boxes if keep else None,
                              class_ids=[insts[i].category_id for i in keep], labels=[labels[i] for i in keep],
                              alpha=float(self.opacity.value), show_masks=self.show_masks.value,
                              show_boxes=self.show_boxes.value, show_labels=self.show_labels.value)

    def refresh(self) -> None:
        if self._syncing:
            return
        from .viz import encode_png

        im = self.current_image
        if im is None:
            self.image.value = b""
            self.info.value = "<i>this split has no images</i>"
            self.problems.value = ""
            return
        try:
            self.overlay = self.render()
        except (FileNotFoundError, ValueError) as e:
            self.overlay = None
            self.image.value = b""
            self.info.value = f"<b>{html.escape(im.file_name)}</b>: <span style='color:#b00'>{html.escape(str(e))}</span>"
            self.problems.value = self._problems_html(im, [])
            return
        shown = _fit(self.overlay, self.max_side)
        self.image.layout.width = f"{shown.shape[1]}px"  # natural size, not stretched to the cell
        self.image.value = encode_png(shown)
        _, insts, _, labels, failed = self._load(self.split_dd.value, im)
        counts: dict[str, int] = {}
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
        per_class = ", ".join(f"{html.escape(k)}: {v}" for k, v in counts.items()) or "no instances"
        self.info.value = (f"<b>{html.escape(im.file_name)}</b> (id {im.id}, {im.width}×{im.height}) — "
                           f"{self.drawn_instances} of {len(insts)} instance(s) shown; {per_class}")
        self.problems.value = self._problems_html(im, failed)

    def _problems_html(self, im, failed) -> str:
        items = []
        if self.check is not None and self.split_dd.value in ("train", "val"):
            items += [str(p) for p in self.check.problems_for_image(self.split_dd.value, im.id)]
        items += [f"annotation id {a.id}: mask cannot be drawn ({e})" for a, e in failed]
        if not items:
            return "<span style='color:#080'>no problems found for this image</span>" if self.check else ""
        lis = "".join(f"<li>{html.escape(s)}</li>" for s in items)
        return f"<div style='color:#b00'><b>{len(items)} problem(s) in this image:</b><ul>{lis}</ul></div>"

    def static_bundle(self) -> dict:
        out = {}
        if self.overlay is not None:
            out["image/png"] = png_b64(_fit(self.overlay, self.max_side))
        out["text/html"] = (f"<div class='wb-static'>{self.info.value}{self.problems.value}"
                            + (f"<br><img src='data:image/png;base64,{out['image/png']}'/>" if out else "")
                            + "</div>")
        return out


# --------------------------------------------------------------------------- step panels
class _StepPanel(StaticFallback, W.VBox):
    """Options, a Run button, a progress bar, a log and a result summary."""

    css = "wb-step-panel"

    def __init__(self, options: list, **kwargs):
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.add_class("wb-run")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", bar_style="")
        self.progress.add_class("wb-progress")
        self.status = W.HTML()
        self.status.add_class("wb-status")
        self.log_output = W.Output(layout=W.Layout(max_height="240px", overflow="auto"))
        self.log_output.add_class("wb-log")
        self.summary = W.HTML()
        self.summary.add_class("wb-summary")
        self.error: BaseException | None = None
        super().__init__([*options, W.HBox([self.run_button, self.progress, self.status]), self.log_output,
                          self.summary], **kwargs)
        self.add_class(self.css)
        self.run_button.on_click(lambda _b: self.run(raise_errors=False))

    def _steps(self):  # pragma: no cover - overridden: yields step descriptions while working
        raise NotImplementedError

    def run(self, raise_errors: bool = True):
        """Do the step with the current options (what the Run button does)."""
        self.error = None
        self.result = None
        self.run_button.disabled = True
        self.progress.bar_style = "info"
        self.progress.value = 0
        self.log_output.clear_output()
        t0 = time.time()
        try:
            with self.log_output:
                for done, total, text in self._steps():
                    self.progress.max = total
                    self.progress.value = done
                    self.status.value = html.escape(text)
            self.progress.value = self.progress.max
            self.progress.bar_style = "success"
            self.status.value = f"done in {time.time() - t0:.1f} s"
        except Exception as e:
            self.error = e
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00'>failed: {html.escape(str(e))}</span>"
            if raise_errors:
                raise
        finally:
            self.run_button.disabled = False
        return self.result

    def static_bundle(self) -> dict:
        return {"text/html": f"<div class='wb-static'>{self.status.value}{self.summary.value}</div>"}


class ConvertPanel(_StepPanel):
    """LabelMe folder -> PaddleX COCO layout (``workbench.convert_labelme``)."""

    css = "wb-convert-panel"

    def __init__(self, src_dir: str = "", dst_dir: str = "", labels: str | None = None,
                 label_order: str = "sorted", val_percent: float = 20, seed: int = 0, **kwargs):
        self.src = W.Text(value=str(src_dir), description="LabelMe dir", layout=W.Layout(width="520px"))
        self.src.add_class("wb-src-dir")
        self.dst = W.Text(value=str(dst_dir), description="dataset dir", placeholder="(in place)",
                          layout=W.Layout(width="520px"))
        self.dst.add_class("wb-dst-dir")
        self.labels = W.Text(value=str(labels or ""), description="labels.txt", placeholder="(auto)",
                             layout=W.Layout(width="520px"))
        self.labels.add_class("wb-labels")
        self.label_order = W.Dropdown(options=["sorted", "stable"], value=label_order, description="label order")
        self.label_order.add_class("wb-label-order")
        self.val_percent = W.FloatSlider(min=0, max=90, step=5, value=float(val_percent), description="val %")
        self.val_percent.add_class("wb-val-percent")
        self.seed = W.IntText(value=int(seed), description="seed", layout=W.Layout(width="160px"))
        self.seed.add_class("wb-seed")
        self.result = None
        super().__init__([self.src, self.dst, self.labels, W.HBox([self.label_order, self.val_percent, self.seed])],
                         **kwargs)

    def _steps(self):
        from .data.labelme import convert_labelme, find_labelme_files

        src = Path(self.src.value).expanduser()
        files = find_labelme_files(src) if src.is_dir() else []
        yield 0, 2, f"converting {len(files)} LabelMe file(s)"
        self.result = convert_labelme(src, self.dst.value or None, labels=self.labels.value or None,
                                      label_order=self.label_order.value, val_percent=self.val_percent.value,
                                      seed=self.seed.value)
        yield 1, 2, "summarising"
        self.summary.value = conversion_summary_html(self.result.summary)
        yield 2, 2, "done"


def conversion_summary_html(s: dict) -> str:
    cats = _table_html([(c["id"], c["name"], s["class_counts"].get(c["name"], 0),
                         s["splits"]["train"]["class_counts"].get(c["name"], 0),
                         s["splits"]["val"]["class_counts"].get(c["name"], 0)) for c in s["categories"]],
                       ["category id", "name", "instances", "train", "val"], "wb-category-table")
    skipped = s.get("skipped_shapes") or []
    sk = ""
    if skipped:
        lis = "".join(f"<li>{html.escape(Path(x['file']).name)}: shape {x['shape_index']} "
                      f"({html.escape(str(x['label']))}, {x['shape_type']}): {html.escape(x['reason'])}</li>"
                      for x in skipped[:20])
        sk = f"<p style='color:#a60'><b>{len(skipped)} shape(s) skipped</b><ul>{lis}</ul></p>"
    return (f"<p><b>{s['images']}</b> images, <b>{s['instances']}</b> instances "
            f"({s.get('multi_part_instances', 0)} multi-part, {s.get('crowd_instances', 0)} crowd, "
            f"{s.get('ignored_shapes', 0)} ignored shapes) → <code>{html.escape(s['dst_dir'])}</code><br>"
            f"train: {s['splits']['train']['images']} images, val: {s['splits']['val']['images']} images; "
            f"labels from: {html.escape(str(s.get('label_source')))}</p>{cats}{sk}")


class SplitPanel(_StepPanel):
    """Re-split train/val (``workbench.split_dataset``; old files kept as ``.bak``)."""

    css = "wb-split-panel"

    def __init__(self, dataset_dir: str = "", val_percent: float = 20, seed: int = 0, **kwargs):
        self.dataset_dir = W.Text(value=str(dataset_dir), description="dataset dir", layout=W.Layout(width="520px"))
        self.dataset_dir.add_class("wb-dataset-dir")
        self.val_percent = W.FloatSlider(min=5, max=95, step=5, value=float(val_percent), description="val %")
        self.val_percent.add_class("wb-val-percent")
        self.seed = W.IntText(value=int(seed), description="seed", layout=W.Layout(width="160px"))
        self.seed.add_class("wb-seed")
        self.result = None
        super().__init__([self.dataset_dir, W.HBox([self.val_percent, self.seed])], **kwargs)

    def _steps(self):
        from .data.split import split_dataset

        yield 0, 2, "splitting"
        v = float(self.val_percent.value)
        self.result = split_dataset(self.dataset_dir.value, 100 - v, v, seed=int(self.seed.value))
        yield 1, 2, "summarising"
        self.summary.value = split_summary_html(self.result)
        yield 2, 2, "done"


def split_summary_html(parts: dict) -> str:
    names: list[str] = []
    for ds in parts.values():
        names += [n for n in ds.category_names if n not in names]
    counts = {s: ds.class_counts() for s, ds in parts.items()}
    rows = [("images", *[len(ds.images) for ds in parts.values()]),
            ("instances", *[len(ds.instances) for ds in parts.values()])]
    rows += [(n, *[counts[s].get(n, 0) for s in parts]) for n in names]
    return _table_html(rows, ["", *parts], "wb-split-table")


# --------------------------------------------------------------------------- training
def read_metrics(path: str | os.PathLike, since: float | None = None) -> list[dict]:
    """Records of ``metrics.jsonl`` (a partly written last line is skipped); none if the file is
    older than ``since`` (a previous run's)."""
    p = Path(path)
    if not p.is_file() or (since is not None and p.stat().st_mtime < since):
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def loss_figure(records: list[dict]):
    """Training losses (total and per term) and the validation loss, against iterations."""
    import plotly.graph_objects as go

    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval" and r.get("val_loss") is not None]
    fig = go.Figure()
    keys = sorted({k for r in train for k in r if "loss" in k})
    for k in sorted(keys, key=lambda k: (k != "total_loss", k)):
        fig.add_trace(go.Scatter(x=[r["iter"] for r in train if k in r], y=[r[k] for r in train if k in r],
                                 mode="lines+markers", name=k, visible=True if k == "total_loss" else "legendonly"))
    if evals:
        fig.add_trace(go.Scatter(x=[r["iter"] for r in evals], y=[r["val_loss"] for r in evals],
                                 mode="lines+markers", name="val_loss", line=dict(dash="dash")))
    fig.update_layout(title="Loss", xaxis_title="iteration", yaxis_title="loss", template="plotly_white",
                      height=340, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def metric_figure(records: list[dict]):
    """Validation AP (box and mask) at each evaluation."""
    import plotly.graph_objects as go

    evals = [r for r in records if r.get("type") == "eval"]
    fig = go.Figure()
    for k in ("segm_AP", "segm_AP50", "bbox_AP", "bbox_AP50"):
        pts = [(r["iter"], r[k]) for r in evals if r.get(k) is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k))
    fig.update_layout(title="Validation AP (best model chosen by segm_AP)", xaxis_title="iteration",
                      yaxis_title="AP", yaxis_range=[0, 1], template="plotly_white", height=340,
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def _train_worker(spec: dict) -> int:
    """Body of the training subprocess (``python -m workbench.widgets train SPEC_JSON``)."""
    from .models import create_model

    model = create_model(spec["model_name"], weights=spec.get("weights"), device=spec.get("device"),
                         **spec.get("model_kwargs", {}))
    model.train(spec["dataset_dir"], output=spec["output_dir"], **spec["train_kwargs"])
    return 0


class TrainingPanel(StaticFallback, W.VBox):
    """Train a model in a subprocess, with live loss/AP curves read from ``metrics.jsonl``.

    ``start()`` (the Start button) launches ``python -m workbench.widgets train`` and returns;
    a thread polls ``output_dir/metrics.jsonl`` and updates the progress bar and the figures.
    ``stop()`` (the Stop button) interrupts the process group (SIGINT, then SIGTERM/SIGKILL if it
    does not end). ``wait()`` blocks until training ends (interrupting the kernel stops training).
    Extra keyword arguments of ``model.train`` (``eval_interval``, ``depth``...) go in
    ``train_kwargs``; of ``create_model`` in ``model_kwargs``.
    """

    def __init__(self, dataset_dir: str = "", output_dir: str = "runs/train", model_name: str | None = None,
                 epochs_iters: int = 1000, batch_size: int = 2, learning_rate: float = 0.01,
                 input_size: int = 640, device: str | None = None, weights: str | None = None,
                 train_kwargs: dict | None = None, model_kwargs: dict | None = None, poll_interval: float = 1.0,
                 **kwargs):
        from .models import available_models

        names = available_models()
        model_name = model_name or ("MaskRCNN-ResNet50-FPN" if "MaskRCNN-ResNet50-FPN" in names else names[0])
        self.model = W.Dropdown(options=names, value=model_name, description="model", layout=W.Layout(width="420px"))
        self.model.add_class("wb-model")
        self.dataset_dir = W.Text(value=str(dataset_dir), description="dataset dir", layout=W.Layout(width="520px"))
        self.dataset_dir.add_class("wb-dataset-dir")
        self.output_dir = W.Text(value=str(output_dir), description="output dir", layout=W.Layout(width="520px"))
        self.output_dir.add_class("wb-output-dir")
        self.iters = W.IntText(value=int(epochs_iters), description="iterations", layout=W.Layout(width="200px"))
        self.iters.add_class("wb-iters")
        self.batch_size = W.IntText(value=int(batch_size), description="batch size", layout=W.Layout(width="200px"))
        self.batch_size.add_class("wb-batch-size")
        self.lr = W.FloatText(value=float(learning_rate), description="learning rate", layout=W.Layout(width="220px"))
        self.lr.add_class("wb-lr")
        self.input_size = W.IntText(value=int(input_size), description="input size", layout=W.Layout(width="200px"))
        self.input_size.add_class("wb-input-size")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.start_button.add_class("wb-start")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.stop_button.add_class("wb-stop")
        self.progress = W.IntProgress(value=0, min=0, max=max(1, int(epochs_iters)), description="0 it")
        self.progress.add_class("wb-progress")
        self.status = W.HTML("not started")
        self.status.add_class("wb-status")
        self.loss_out = W.Output()
        self.loss_out.add_class("wb-loss-curve")
        self.metric_out = W.Output()
        self.metric_out.add_class("wb-metric-curve")
        self.device, self.weights = device, weights
        self.train_kwargs, self.model_kwargs = dict(train_kwargs or {}), dict(model_kwargs or {})
        self.poll_interval = float(poll_interval)
        self.process: subprocess.Popen | None = None
        self.records: list[dict] = []
        self.train_result: dict | None = None
        self.state = "idle"  # idle | running | done | failed | stopped
        self._thread: threading.Thread | None = None
        self._t_start = 0.0
        self._stop_requested = False
        super().__init__([self.model, self.dataset_dir, self.output_dir,
                          W.HBox([self.iters, self.batch_size, self.lr, self.input_size]),
                          W.HBox([self.start_button, self.stop_button, self.progress, self.status]),
                          W.HBox([self.loss_out, self.metric_out])], **kwargs)
        self.add_class("wb-training-panel")
        self.start_button.on_click(lambda _b: self._click_start())
        self.stop_button.on_click(lambda _b: self.stop())
        self._draw()

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spec(self) -> dict:
        return {"model_name": self.model.value, "weights": self.weights, "device": self.device,
                "dataset_dir": str(Path(self.dataset_dir.value).resolve()),
                "output_dir": str(Path(self.output_dir.value).resolve()), "model_kwargs": self.model_kwargs,
                "train_kwargs": {"epochs_iters": int(self.iters.value), "batch_size": int(self.batch_size.value),
                                 "learning_rate": float(self.lr.value), "input_size": int(self.input_size.value),
                                 "progress": False, **self.train_kwargs}}

    def _click_start(self) -> None:
        try:
            self.start()
        except Exception as e:
            self.status.value = f"<span style='color:#b00'>cannot start: {html.escape(str(e))}</span>"

    def start(self) -> None:
        if self.running:
            raise RuntimeError("training is already running; stop it first")
        spec = self._spec = self.spec()  # fixed for this run, whatever the fields show later
        out = Path(spec["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.records, self.train_result, self._stop_requested = [], None, False
        self.progress.max = spec["train_kwargs"]["epochs_iters"]
        self.progress.value, self.progress.bar_style = 0, "info"
        self._t_start = time.time()
        self.log_path = out / "training_panel.log"
        log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen([sys.executable, "-m", "workbench.widgets", "train", json.dumps(spec)],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.close()
        self.state = "running"
        self.status.value = f"running (pid {self.process.pid})"
        self.start_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._poll, name="wb-training-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop training: SIGINT to the process group, then SIGTERM, then SIGKILL."""
        import signal

        p = self.process
        if p is None or p.poll() is not None:
            return
        self._stop_requested = True
        self.status.value = "stopping…"
        for sig, wait in ((signal.SIGINT, timeout / 2), (signal.SIGTERM, timeout / 2), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def wait(self, timeout: float | None = None) -> dict | None:
        """Block until training ends; returns ``train_result.json``. Interrupting stops training."""
        try:
            if self._thread is not None:
                self._thread.join(timeout)
        except KeyboardInterrupt:
            self.stop()
            print("training stopped (kernel interrupted)")
        if self.state == "failed":
            raise RuntimeError(f"training failed: {self._failure()}")
        return self.train_result

    def _failure(self) -> str:
        if self.train_result and self.train_result.get("error"):
            return self.train_result["error"]
        try:
            tail = self.log_path.read_text().strip().splitlines()[-15:]
        except OSError:
            tail = []
        return "\n".join(tail) or f"exit code {self.process.returncode if self.process else '?'}"

    # ------------------------------------------------------------------ polling
    def _poll(self) -> None:
        out = Path(self._spec["output_dir"])
        n_seen = -1
        while True:
            alive = self.running
            recs = read_metrics(out / "metrics.jsonl", since=self._t_start - 1)
            if len(recs) != n_seen:
                n_seen = len(recs)
                self.records = recs
                self._draw()
            if not alive:
                break
            time.sleep(self.poll_interval)
        res_path = out / "train_result.json"
        if res_path.is_file() and res_path.stat().st_mtime >= self._t_start - 1:
            try:
                self.train_result = json.loads(res_path.read_text())
            except json.JSONDecodeError:
                self.train_result = None
        code = self.process.returncode
        if self._stop_requested:
            self.state, self.progress.bar_style = "stopped", "warning"
        elif code == 0:
            self.state, self.progress.bar_style = "done", "success"
        else:
            self.state, self.progress.bar_style = "failed", "danger"
        self._draw()
        self.start_button.disabled, self.stop_button.disabled = False, True

    def _draw(self) -> None:
        train = [r for r in self.records if r.get("type") == "train"]
        it = max((r["iter"] for r in self.records if "iter" in r), default=0)
        self.progress.value = min(it, self.progress.max)
        self.progress.description = f"{it} it"
        _set_figure(self.loss_out, loss_figure(self.records))
        _set_figure(self.metric_out, metric_figure(self.records))
        last = train[-1] if train else {}
        evals = [r for r in self.records if r.get("type") == "eval"]
        parts = [self.state]
        if last.get("total_loss") is not None:
            parts.append(f"loss {last['total_loss']:.3f}")
        if evals and evals[-1].get("segm_AP") is not None:
            parts.append(f"val mask AP {evals[-1]['segm_AP']:.3f}")
        if self.state == "failed":
            parts.append(f"<pre style='color:#b00'>{html.escape(self._failure())}</pre>")
        elif self.train_result and self.train_result.get("paths", {}).get("best_model"):
            parts.append(f"best model: <code>{html.escape(self.train_result['paths']['best_model'])}</code>")
        self.status.value = " · ".join(parts)

    def figures(self) -> dict:
        return {"loss": loss_figure(self.records), "metrics": metric_figure(self.records)}

    def static_bundle(self) -> dict:
        return {"text/html": f"<div class='wb-static'><b>{html.escape(self.model.value)}</b>: {self.status.value}</div>"}


# --------------------------------------------------------------------------- evaluation
def predict_split(model, dataset_dir: str | os.PathLike, split: str = "val", threshold: float = 0.05) -> list:
    """``model.predict`` on every image of a split, in the split's order (low threshold: the
    explorers filter the stored results afterwards without running the model again)."""
    from .data.dataset import Dataset

    ds = Dataset.load_paddlex(dataset_dir, split)
    return list(model.predict([str(ds.image_path(im)) for im in ds.images], threshold=threshold))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, H, W) and (M, H, W) bool masks."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    a2 = a.reshape(len(a), -1).astype(np.float32)
    b2 = b.reshape(len(b), -1).astype(np.float32)
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1)


def image_quality(gt_masks: np.ndarray, gt_classes: Sequence[int], result, threshold: float = 0.5,
                  iou: float = 0.5) -> dict:
    """Per-image match of predictions (score >= threshold) to ground truth by mask IoU, greedy by
    score within each class: true/false positives, misses, F1 and mean IoU of matches."""
    r = result.filter(threshold=threshold)
    pm = r.masks if r.has_masks else np.zeros((0, *gt_masks.shape[1:]), bool)
    ious = _mask_iou(pm, gt_masks)
    order = np.argsort(-r.scores)
    used: set[int] = set()
    tp, matched = 0, []
    gt_classes = list(gt_classes)
    for i in order:
        cands = [(ious[i, j], j) for j in range(len(gt_classes))
                 if j not in used and gt_classes[j] == int(r.class_ids[i]) and ious[i, j] >= iou]
        if cands:
            best, j = max(cands)
            used.add(j)
            tp += 1
            matched.append(best)
    fp, fn = len(r) - tp, len(gt_classes) - tp
    f1 = 2 * tp / max(1, 2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "f1": f1, "mean_iou": float(np.mean(matched)) if matched else 0.0}


def pr_curves(dataset, results: Sequence, iou_type: str = "segm") -> dict:
    """Precision/recall curves per class at IoU 0.50, 0.75 and averaged over 0.50:0.95, from the
    model's ``Result`` per image of ``dataset`` (in order): ``{"recall": [...], "curves": {iou_label:
    {class_name: precision list or None}}}`` — the format of ``evaluate_result.json``'s analysis."""
    from .evaluation.analysis import pr_curves as _pr
    from .evaluation.metrics import coco_metrics

    preds = []
    for im, r in zip(dataset.images, results):
        preds.extend(r.to_coco(im.id))
    if not preds:
        return {"recall": np.linspace(0, 1, 101).tolist(), "curves": {}}
    m = coco_metrics(dataset, preds, iou_types=(iou_type,), keep_arrays=True)
    return _pr(m[iou_type], {c.id: c.name for c in dataset.categories})


def pr_figure(pr: dict, iou_label: str = "IoU 0.50"):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, p in pr.get("curves", {}).get(iou_label, {}).items():
        if p is not None:
            fig.add_trace(go.Scatter(x=pr["recall"], y=p, mode="lines", name=name))
    fig.update_layout(title=f"Precision–recall per class ({iou_label}, masks)", xaxis_title="recall",
                      yaxis_title="precision", xaxis_range=[0, 1], yaxis_range=[0, 1.02], template="plotly_white",
                      height=360, margin=dict(l=40, r=20, t=50, b=40))
    return fig


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
    per_class = _table_html(rows, ["class", "box AP", "mask AP"], "wb-ap-table")
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"]
    summ = [(t, *[float("nan") if d.get(k) is None else d.get(k) for k in keys]) for t, d in
            (("box", bbox), ("mask", segm))]
    return per_class + "<br>" + _table_html(summ, ["", *keys], "wb-ap-summary")


class EvaluationExplorer(StaticFallback, W.VBox):
    """AP table per class, PR curves per class and IoU, and the worst images with overlays.

    ``evaluation``: the dict of ``model.evaluate`` or a path to ``evaluate_result.json`` (or its
    folder). ``results``: the model's ``Result`` per image of the split (``predict_split``); with
    them the explorer computes PR curves and ranks images by per-image F1 (mask IoU >= 0.5).
    """

    def __init__(self, evaluation, dataset_dir: str | os.PathLike | None = None, results: Sequence | None = None,
                 split: str | None = None, threshold: float = 0.5, max_side: int | None = 700, **kwargs):
        from .data.dataset import Dataset

        if not isinstance(evaluation, dict):
            p = Path(evaluation)
            evaluation = json.loads((p / "evaluate_result.json" if p.is_dir() else p).read_text())
        self.evaluation = evaluation
        self.split = split or evaluation.get("split", "val")
        dataset_dir = dataset_dir or evaluation.get("dataset_dir")
        self.dataset = Dataset.load_paddlex(dataset_dir, self.split) if dataset_dir else None
        self.results = list(results) if results is not None else None
        if self.results is not None and self.dataset is not None and len(self.results) != len(self.dataset.images):
            raise ValueError(f"{len(self.results)} results for {len(self.dataset.images)} images of the "
                             f"{self.split} split: predict every image of the split, in order (predict_split)")
        self.max_side = max_side
        self.table = W.HTML(ap_table_html(evaluation))
        self.table.add_class("wb-ap")
        stored = evaluation.get("analysis", {}).get("pr_curves")
        self.pr = stored or (pr_curves(self.dataset, self.results) if self.results is not None and self.dataset
                             else None)
        self.iou = W.Dropdown(options=list((self.pr or {}).get("curves", {})) or ["IoU 0.50"], description="PR at")
        self.iou.add_class("wb-pr-iou")
        self.pr_out = W.Output()
        self.pr_out.add_class("wb-pr-curves")
        self.threshold = W.FloatSlider(min=0.0, max=1.0, step=0.05, value=float(threshold), description="score ≥",
                                       continuous_update=False)
        self.threshold.add_class("wb-score-threshold")
        self.worst = W.Dropdown(options=[], description="worst images", layout=W.Layout(width="520px"))
        self.worst.add_class("wb-worst-images")
        self.gt_image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
        self.gt_image.add_class("wb-gt-overlay")
        self.pred_image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
        self.pred_image.add_class("wb-overlay")
        self.info = W.HTML()
        self.info.add_class("wb-image-info")
        self.ranking: list[tuple[int, dict]] = []
        self.pair: np.ndarray | None = None
        children = [W.HTML("<b>Average precision</b>"), self.table]
        if self.pr is not None:
            children += [self.iou, self.pr_out]
        if self.results is not None and self.dataset is not None:
            children += [W.HBox([self.threshold, self.worst]), self.info,
                         W.HBox([W.VBox([W.HTML("ground truth"), self.gt_image]),
                                 W.VBox([W.HTML("prediction"), self.pred_image])])]
        super().__init__(children, **kwargs)
        self.add_class("wb-evaluation-explorer")
        self.iou.observe(lambda _c: self._draw_pr(), "value")
        self.threshold.observe(lambda _c: self._rank(), "value")
        self.worst.observe(lambda _c: self._show(), "value")
        self._gt_cache: dict = {}
        self._draw_pr()
        if self.results is not None and self.dataset is not None:
            self._rank()

    def _draw_pr(self) -> None:
        if self.pr is not None:
            _set_figure(self.pr_out, pr_figure(self.pr, self.iou.value))

    def _gt(self, i: int):
        if i not in self._gt_cache:
            im = self.dataset.images[i]
            insts, masks = self.dataset.masks(im)
            self._gt_cache[i] = (insts, masks)
        return self._gt_cache[i]

    def _rank(self) -> None:
        scores = []
        for i, r in enumerate(self.results):
            insts, masks = self._gt(i)
            q = image_quality(masks, [a.category_id for a in insts], r, threshold=self.threshold.value)
            scores.append((i, q))
        self.ranking = sorted(scores, key=lambda x: (x[1]["f1"], x[1]["mean_iou"]))
        opts = [(f"{Path(self.dataset.images[i].file_name).name}: F1 {q['f1']:.2f} "
                 f"(TP {q['tp']}, FP {q['fp']}, missed {q['fn']})", i) for i, q in self.ranking]
        keep = self.worst.value
        self.worst.options = opts
        self.worst.value = keep if keep in dict(opts).values() else (opts[0][1] if opts else None)
        self._show()

    def _show(self) -> None:
        from .viz import draw_instances, encode_png

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
        gt, pred = _fit(gt, self.max_side), _fit(pred, self.max_side)
        self.gt_image.value, self.pred_image.value = encode_png(gt), encode_png(pred)
        self.gt_image.layout.width = self.pred_image.layout.width = f"{gt.shape[1]}px"
        self.pair = np.concatenate([gt, np.full((gt.shape[0], 8, 3), 255, np.uint8), pred], 1)
        q = dict(self.ranking)[i]
        self.info.value = (f"<b>{html.escape(im.file_name)}</b>: {len(insts)} ground-truth instance(s), "
                           f"{len(r)} prediction(s) with score ≥ {self.threshold.value:.2f}; "
                           f"F1 {q['f1']:.2f} at mask IoU 0.5, mean IoU of matches {q['mean_iou']:.2f}")

    def figures(self) -> dict:
        """The analysis of ``evaluate_result.json`` (confusion matrix, errors by kind, threshold sweep)
        and the PR curves at the chosen IoU."""
        from .evaluation import analysis_figures

        figs = analysis_figures(self.evaluation)
        if self.pr is not None:
            figs["pr_curves"] = pr_figure(self.pr, self.iou.value)
        return figs

    def static_bundle(self) -> dict:
        out = {}
        body = self.table.value
        if self.pair is not None:
            out["image/png"] = png_b64(self.pair)
            body += f"<p>{self.info.value}</p><img src='data:image/png;base64,{out['image/png']}'/>"
        out["text/html"] = f"<div class='wb-static'>{body}</div>"
        return out


def score_histogram(results: Sequence, threshold: float | None = None):
    """Plotly histogram of prediction scores per class (helps choosing the score threshold)."""
    import plotly.graph_objects as go

    by_class: dict[str, list[float]] = {}
    for r in results:
        for n, sc in zip(r.class_names, r.scores):
            by_class.setdefault(n, []).append(float(sc))
    fig = go.Figure([go.Histogram(x=v, name=k, opacity=0.7, xbins=dict(start=0, end=1, size=0.05))
                     for k, v in sorted(by_class.items())])
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(barmode="overlay", title=f"Prediction scores ({sum(map(len, by_class.values()))} detections)",
                      xaxis_title="score", yaxis_title="detections", xaxis_range=[0, 1], template="plotly_white",
                      height=340, margin=dict(l=40, r=20, t=50, b=40))
    return fig


# --------------------------------------------------------------------------- prediction
class PredictionExplorer(StaticFallback, W.VBox):
    """Browse stored predictions; score and mask thresholds re-filter them (no model run).

    ``results``: ``Result`` objects (or paths to ``*_res.json`` files). Predict once with a low
    threshold; the sliders then choose what is shown, counted and saved. Masks are re-thresholded
    from the soft masks when the results have them (``Result.mask_probs``); otherwise the mask
    slider is disabled. "Save JSON" writes the filtered result of the current image to
    ``output_dir``; the link downloads it in the browser.
    """

    def __init__(self, results: Sequence, threshold: float = 0.5, mask_threshold: float = 0.5,
                 output_dir: str | os.PathLike | None = None, max_side: int | None = 900, **kwargs):
        from .engine.result import Result

        self.results = [r if isinstance(r, Result) else Result.from_json(r) for r in results]
        if not self.results:
            raise ValueError("no results to explore")
        self.output_dir = Path(output_dir) if output_dir else None
        self.max_side = max_side
        self.filtered = None
        self.overlay: np.ndarray | None = None
        labels = [f"{i}: {Path(r.input_path).name if r.input_path else 'array'}" for i, r in enumerate(self.results)]
        self.image_dd = W.Dropdown(options=list(zip(labels, range(len(labels)))), value=0, description="image",
                                   layout=W.Layout(width="420px"))
        self.image_dd.add_class("wb-pred-image")
        lo = min(float(threshold), min((r.threshold for r in self.results), default=0.0))
        self.threshold = W.FloatSlider(min=round(lo, 2), max=1.0, step=0.01, value=float(threshold),
                                       description="score ≥", continuous_update=False)
        self.threshold.add_class("wb-score-threshold")
        soft = all(r.mask_probs is not None for r in self.results)
        self.mask_threshold = W.FloatSlider(min=0.05, max=0.95, step=0.05, value=float(mask_threshold),
                                            description="mask ≥", continuous_update=False, disabled=not soft)
        self.mask_threshold.add_class("wb-mask-threshold")
        self.show_boxes = W.Checkbox(value=True, description="boxes", indent=False, layout=W.Layout(width="auto"))
        self.show_boxes.add_class("wb-show-boxes")
        self.show_labels = W.Checkbox(value=True, description="labels", indent=False, layout=W.Layout(width="auto"))
        self.show_labels.add_class("wb-show-labels")
        self.image = W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%"))
        self.image.add_class("wb-overlay")
        self.info = W.HTML()
        self.info.add_class("wb-pred-info")
        self.download = W.HTML()
        self.download.add_class("wb-download")
        self.save_button = W.Button(description="Save JSON", icon="save", disabled=self.output_dir is None)
        self.save_button.add_class("wb-save-json")
        self.saved = W.HTML()
        super().__init__([W.HBox([self.image_dd, self.show_boxes, self.show_labels]),
                          W.HBox([self.threshold, self.mask_threshold]), self.image, self.info,
                          W.HBox([self.download, self.save_button, self.saved])], **kwargs)
        self.add_class("wb-prediction-explorer")
        for w in (self.image_dd, self.threshold, self.mask_threshold, self.show_boxes, self.show_labels):
            w.observe(lambda _c: self.refresh(), "value")
        self.save_button.on_click(lambda _b: self.save_json())
        self.refresh()

    @property
    def count(self) -> int:
        return len(self.filtered) if self.filtered is not None else 0

    def current(self):
        """The current image's Result filtered by the sliders."""
        r = self.results[self.image_dd.value]
        mt = self.mask_threshold.value if not self.mask_threshold.disabled else None
        return r.filter(threshold=self.threshold.value, mask_threshold=mt)

    def refresh(self) -> None:
        from .viz import encode_png

        r = self.results[self.image_dd.value]
        self.filtered = self.current()
        self.overlay = self.filtered.visualize(show_boxes=self.show_boxes.value, show_labels=self.show_labels.value)
        shown = _fit(self.overlay, self.max_side)
        self.image.layout.width = f"{shown.shape[1]}px"
        self.image.value = encode_png(shown)
        counts: dict[str, int] = {}
        for n in self.filtered.class_names:
            counts[n] = counts.get(n, 0) + 1
        per = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items())) or "none"
        self.info.value = (f"<b>{self.count}</b> of {len(r)} instance(s) with score ≥ {self.threshold.value:.2f}"
                           f" (mask threshold {self.filtered.mask_threshold:.2f}) — {per}")
        data = base64.b64encode(json.dumps(self.filtered.to_dict()).encode()).decode("ascii")
        name = (Path(r.input_path).stem if r.input_path else "image") + "_res.json"
        self.download.value = (f"<a download='{html.escape(name)}' href='data:application/json;base64,{data}'>"
                               f"download {html.escape(name)}</a>")

    def save_json(self) -> Path | None:
        if self.output_dir is None:
            return None
        p = self.filtered.save_to_json(self.output_dir)
        self.saved.value = f"saved <code>{html.escape(str(p))}</code>"
        return p

    def static_bundle(self) -> dict:
        out = {}
        if self.overlay is not None:
            out["image/png"] = png_b64(_fit(self.overlay, self.max_side))
        out["text/html"] = (f"<div class='wb-static'>{self.info.value}"
                            + (f"<br><img src='data:image/png;base64,{out['image/png']}'/>" if out else "") + "</div>")
        return out


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "train":
        return _train_worker(json.loads(argv[1]))
    print("usage: python -m workbench.widgets train SPEC_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
