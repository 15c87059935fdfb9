"""The dataset screens: the statistics figures and the image browser with ground-truth overlays."""
from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .common import (
    StaticFallback,
    W,
    checkbox,
    error_html,
    image_bundle,
    set_figure,
    show_figures,
    show_image,
    slug,
    styled,
)


def load_splits(source) -> dict:
    """``{split: Dataset}`` from a dataset dir, a Dataset, a dict of them or a CheckResult."""
    from ..data.check import CheckResult
    from ..data.dataset import ANNOTATION_FILES, SPLITS, Dataset

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
    """The check's statistics (instances/images per class, instances per image, mask areas, sizes)."""
    from ..data.check import CheckResult
    from ..data.check import dataset_stats as _split_stats

    if isinstance(source, CheckResult):
        return source.stats
    return _split_stats(load_splits(source))


def class_histogram(source):
    """Plotly grouped bar chart: instances per class and split (``source``: see ``load_splits``)."""
    from ..viz import class_histogram_figure

    return class_histogram_figure(dataset_stats(source))


def instance_stats_figures(source) -> dict:
    """Plotly figures: class histogram, images per class, instances per image, mask areas, sizes."""
    from ..viz import instance_stats_figures as _figures

    return _figures(dataset_stats(source))


def show_stats(source) -> None:
    """Display the class histogram and the instance statistics as plotly figures."""
    show_figures(instance_stats_figures(source))


class StatsPanel(W.VBox):
    """The statistics figures in tabs (one ``Output`` per figure)."""

    def __init__(self, source, **kwargs):
        self.figures = instance_stats_figures(source)
        outs = []
        for name, fig in self.figures.items():
            o = styled(W.Output(), f"wb-stats-{slug(name)}")
            set_figure(o, fig)
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
        from ..data.check import CheckResult

        if check is None and isinstance(dataset, CheckResult):
            check = dataset
        self.check = check
        self.datasets = load_splits(dataset)
        self.max_side = max_side
        self._cache: dict = {}
        self.overlay: np.ndarray | None = None
        self.drawn_instances = 0
        splits = list(self.datasets)
        split = split if split in self.datasets else splits[0]
        first = self.datasets[split]

        self.split_dd = styled(W.Dropdown(options=splits, value=split, description="split"), "wb-split")
        self.slider = styled(W.IntSlider(min=0, max=max(0, len(first.images) - 1), value=0, description="image",
                                         continuous_update=False), "wb-image-slider")
        self.image_dd = styled(W.Dropdown(options=self._image_options(split), description="file",
                                          layout=W.Layout(width="340px")), "wb-image-dropdown")
        self.class_boxes = {}
        for n in self._all_category_names():
            self.class_boxes[n] = styled(checkbox(n, "wb-class-filter"), f"wb-class-{slug(n)}")
        self.show_masks = checkbox("masks", "wb-show-masks")
        self.show_boxes = checkbox("boxes", "wb-show-boxes")
        self.show_labels = checkbox("labels", "wb-show-labels")
        self.opacity = styled(W.FloatSlider(min=0.0, max=1.0, step=0.05, value=0.45, description="opacity",
                                            continuous_update=False), "wb-opacity")
        self.image = styled(W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%")),
                            "wb-overlay")
        self.info = styled(W.HTML(), "wb-image-info")
        self.problems = styled(W.HTML(), "wb-problems")

        filters = styled(W.HBox(list(self.class_boxes.values()), layout=W.Layout(flex_flow="row wrap")),
                         "wb-class-filters")
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
        """The classes, then one ``<id N>`` entry per category id that instances use but no
        category defines (``check`` reports them; here they get a checkbox like any class)."""
        names: list[str] = []
        for ds in self.datasets.values():
            names += [c.name for c in ds.categories if c.name not in names]
        for ds in self.datasets.values():
            known = {c.id for c in ds.categories}
            for cid in sorted({a.category_id for a in ds.instances} - known):
                if _unknown_label(cid) not in names:
                    names.append(_unknown_label(cid))
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
            h, w = img.shape[:2]
            drawable, masks, failed = [], [], []
            for a in ds.instances_by_image().get(im.id, []):
                try:
                    m = a.mask(h, w)
                except Exception as e:  # noqa: BLE001 - broken geometry: reported, not drawn
                    failed.append((a, str(e)))
                    continue
                drawable.append(a)
                masks.append(m)
            labels = [names[a.category_id].name if a.category_id in names else _unknown_label(a.category_id)
                      for a in drawable]
            self._cache = {key: (img, drawable, np.stack(masks) if masks else np.zeros((0, h, w), bool),
                                 labels, failed)}  # keep one image: browsing large datasets stays light
        return self._cache[key]

    def render(self) -> np.ndarray | None:
        """The overlay of the current image with the current settings (RGB uint8)."""
        from ..viz import draw_instances

        im = self.current_image
        if im is None:
            return None
        img, insts, masks, labels, _ = self._load(self.split_dd.value, im)
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
            self.info.value = f"<b>{html.escape(im.file_name)}</b>: {error_html(str(e))}"
            self.problems.value = self._problems_html(im, [])
            return
        show_image(self.image, self.overlay, self.max_side)
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
        return image_bundle(f"{self.info.value}{self.problems.value}", self.overlay, self.max_side)


def _unknown_label(category_id: int) -> str:
    """How an instance of a category id the dataset does not define is labelled and filtered."""
    return f"<id {category_id}>"
