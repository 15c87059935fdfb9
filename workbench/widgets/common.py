"""What every panel shares: the plotly renderer, the static fallback, figure outputs, HTML helpers."""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

try:  # ipywidgets is a dependency, but keep ``import workbench.widgets`` informative without it
    import ipywidgets as W
except ImportError as e:  # pragma: no cover
    raise ImportError("workbench.widgets needs ipywidgets (pip install ipywidgets)") from e

DEFAULT_PLOTLY_RENDERER = "plotly_mimetype+notebook"


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
    from ..viz import encode_png

    return base64.b64encode(encode_png(image)).decode("ascii")


def fit(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale for display only (never upscales)."""
    if not max_side or max(image.shape[:2]) <= max_side:
        return image
    import cv2

    s = max_side / max(image.shape[:2])
    return cv2.resize(image, (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s))),
                      interpolation=cv2.INTER_AREA)


def show_image(widget: W.Image, image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Put ``image`` (downscaled to ``max_side``) in an ``Image`` widget at its natural width."""
    from ..viz import encode_png

    shown = fit(image, max_side)
    widget.layout.width = f"{shown.shape[1]}px"  # natural size, not stretched to the cell
    widget.value = encode_png(shown)
    return shown


def figure_bundle(fig) -> dict:
    """A display_data output for an ``Output`` widget's ``outputs`` (thread-safe to assign)."""
    import plotly.io as pio

    return {"output_type": "display_data",
            "data": {"application/vnd.plotly.v1+json": json.loads(pio.to_json(fig, validate=False)),
                     "text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"},
            "metadata": {}}


def set_figure(out: W.Output, fig) -> None:
    out.outputs = (figure_bundle(fig),)


def fmt(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:.3f}"
    return str(x)


def table_html(rows: Sequence[Sequence[Any]], header: Sequence[str], cls: str = "wb-table") -> str:
    h = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(fmt(x))}</td>" for x in r)
                   + "</tr>" for r in rows)
    return (f"<table class='{cls}' style='border-collapse:collapse'><thead><tr>{h}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def error_html(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(text)}</span>"


def checkbox(description: str, css: str, value: bool = True) -> W.Checkbox:
    cb = W.Checkbox(value=value, description=description, indent=False, layout=W.Layout(width="auto"))
    cb.add_class(css)
    return cb


def styled(widget, css: str):
    """``widget`` with the CSS class ``css`` (stable selectors for browser tests)."""
    widget.add_class(css)
    return widget


def wrapping_row(children, css: str | None = None, **layout) -> W.Box:
    """A row that wraps its children onto the next line when the notebook is too narrow for them
    (side by side on a wide screen, stacked at 1400 px with the file browser open)."""
    layout = {"display": "flex", "flex_flow": "row wrap", "align_items": "flex-start", "width": "100%", **layout}
    box = W.Box(list(children), layout=W.Layout(**layout))
    return styled(box, css) if css else box


def chart_output(css: str) -> W.Output:
    """An ``Output`` for a plotly chart in a ``wrapping_row``: grows to share the row, never narrower
    than ``min_width`` (below that it moves to its own line); plotly autosizes to its width."""
    return styled(W.Output(layout=W.Layout(flex="1 1 460px", min_width="340px", max_width="100%")), css)


class StaticFallback:
    """Mixin: add a static picture of the current state to the widget's display output."""

    def static_bundle(self) -> dict:  # pragma: no cover - overridden
        return {}

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}  # type: ignore[misc]
        try:
            extra = self.static_bundle()
        except Exception as e:  # noqa: BLE001 - a broken picture must never hide the live widget
            extra = {"text/html": f"<pre>static view unavailable: {html.escape(repr(e))}</pre>"}
        data.update(extra)
        return data


def image_bundle(html_body: str, image: np.ndarray | None, max_side: int | None = None) -> dict:
    """A static bundle: ``image/png`` of ``image`` and ``text/html`` of ``html_body`` with the image."""
    out = {}
    if image is not None:
        out["image/png"] = png_b64(fit(image, max_side))
        html_body += f"<br><img src='data:image/png;base64,{out['image/png']}'/>"
    out["text/html"] = f"<div class='wb-static'>{html_body}</div>"
    return out


def show_figures(figures: dict | Iterable) -> None:
    """Display plotly figures as ordinary outputs (live in JupyterLab, kept in saved notebooks)."""
    from IPython.display import display

    for fig in (figures.values() if isinstance(figures, dict) else figures):
        display(fig)
