"""The prediction screen: stored results re-filtered by score and mask thresholds (no model run)."""
from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import StaticFallback, W, checkbox, image_bundle, show_image, styled


class PredictionExplorer(StaticFallback, W.VBox):
    """Browse stored predictions; score and mask thresholds re-filter them (no model run).

    ``results``: ``Result`` objects (or paths to ``*_res.json`` files). Predict once with a low
    threshold; the sliders then choose what is shown, counted and saved. Masks are re-thresholded
    from the soft masks when the results have them (``Result.soft_masks``); otherwise the mask
    slider is disabled. "Save JSON" writes the filtered result of the current image to a new file
    of ``output_dir`` named by the thresholds shown, ``<stem>_res_t0.85_m0.50.json`` (``_t0.85``
    alone without soft masks): never over the ``<stem>_res.json`` the notebook saved at its own
    threshold, so that file and its PNG keep matching. The link downloads the same result.
    """

    def __init__(self, results: Sequence, threshold: float = 0.5, mask_threshold: float = 0.5,
                 output_dir: str | os.PathLike | None = None, max_side: int | None = 900, **kwargs):
        from ..engine.result import Result

        self.results = [r if isinstance(r, Result) else Result.from_json(r) for r in results]
        if not self.results:
            raise ValueError("no results to explore")
        self.output_dir = Path(output_dir) if output_dir else None
        self.max_side = max_side
        self.filtered = None
        self.overlay: np.ndarray | None = None
        labels = [f"{i}: {Path(r.input_path).name if r.input_path else 'array'}" for i, r in enumerate(self.results)]
        self.image_dd = styled(W.Dropdown(options=list(zip(labels, range(len(labels)))), value=0,
                                          description="image", layout=W.Layout(width="420px")), "wb-pred-image")
        lo = min(float(threshold), min((r.threshold for r in self.results), default=0.0))
        self.threshold = styled(W.FloatSlider(min=round(lo, 2), max=1.0, step=0.01, value=float(threshold),
                                              description="score ≥", continuous_update=False), "wb-score-threshold")
        soft = all(r.soft_masks is not None for r in self.results)
        self.mask_threshold = styled(W.FloatSlider(min=0.05, max=0.95, step=0.05, value=float(mask_threshold),
                                                   description="mask ≥", continuous_update=False, disabled=not soft),
                                     "wb-mask-threshold")
        self.show_boxes = checkbox("boxes", "wb-show-boxes")
        self.show_labels = checkbox("labels", "wb-show-labels")
        self.image = styled(W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%")),
                            "wb-overlay")
        self.info = styled(W.HTML(), "wb-pred-info")
        self.download = styled(W.HTML(), "wb-download")
        self.save_button = styled(W.Button(description="Save JSON", icon="save", disabled=self.output_dir is None),
                                  "wb-save-json")
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

    def thresholds(self) -> tuple[float, float | None]:
        """The score and mask thresholds as the sliders show them (rounded to their 2 decimals, not
        the float sum a slider step leaves, 0.8500000000000001); mask ``None`` when it is disabled."""
        mt = None if self.mask_threshold.disabled else round(float(self.mask_threshold.value), 2)
        return round(float(self.threshold.value), 2), mt

    def current(self):
        """The current image's Result filtered by the sliders."""
        r = self.results[self.image_dd.value]
        t, mt = self.thresholds()
        return r.filter(threshold=t, mask_threshold=mt)

    def save_path(self) -> Path | None:
        """Where Save writes the current result: ``<stem>_res_t<score>[_m<mask>].json`` in ``output_dir``."""
        if self.output_dir is None:
            return None
        t, mt = self.thresholds()
        plain = self.filtered._target(self.output_dir, ".json")  # <stem>_res.json, the notebook's file
        return plain.with_name(f"{plain.stem}_t{t:.2f}" + (f"_m{mt:.2f}" if mt is not None else "") + ".json")

    def refresh(self) -> None:
        r = self.results[self.image_dd.value]
        self.filtered = self.current()
        self.overlay = self.filtered.visualize(show_boxes=self.show_boxes.value, show_labels=self.show_labels.value)
        show_image(self.image, self.overlay, self.max_side)
        counts: dict[str, int] = {}
        for n in self.filtered.class_names:
            counts[n] = counts.get(n, 0) + 1
        per = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items())) or "none"
        self.info.value = (f"<b>{self.count}</b> of {len(r)} instance(s) with score ≥ {self.threshold.value:.2f}"
                           f" (mask threshold {self.filtered.mask_threshold:.2f}) — {per}")
        data = base64.b64encode(json.dumps(self.filtered.to_dict()).encode()).decode("ascii")
        t, mt = self.thresholds()
        name = ((Path(r.input_path).stem if r.input_path else "image") + f"_res_t{t:.2f}"
                + (f"_m{mt:.2f}" if mt is not None else "") + ".json")
        self.download.value = (f"<a download='{html.escape(name)}' href='data:application/json;base64,{data}'>"
                               f"download {html.escape(name)}</a>")

    def save_json(self) -> Path | None:
        """Write the current filtered result to ``save_path()`` (a new file; shown below the image)."""
        p = self.save_path()
        if p is None:
            return None
        p.parent.mkdir(parents=True, exist_ok=True)
        self.filtered.save_to_json(p)
        self.saved.value = f"saved <code>{html.escape(str(p))}</code>"
        return p

    def static_bundle(self) -> dict:
        return image_bundle(self.info.value, self.overlay, self.max_side)
