"""What every panel shares: the plotly renderer, the static fallback, figure outputs, HTML helpers."""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

try:  # ipywidgets is a dependency, but keep ``import workbench.widgets`` informative without it
    import ipywidgets as W
except ImportError as e:  # pragma: no cover
    raise ImportError("workbench.widgets needs ipywidgets (pip install ipywidgets)") from e

DEFAULT_PLOTLY_RENDERER = "plotly_mimetype+notebook"
BATCH_ENV = "WORKBENCH_BATCH"  # set by ``workbench.notebooks.run_notebook`` for the kernel it starts
BATCH_PLOTLY_RENDERER = "plotly_mimetype+workbench_local"
PLOTLY_JS = "plotly.min.js"  # beside the executed notebook (``workbench.viz.figures.write_plotly_js``)


def batch_mode() -> bool:
    """True in a kernel run headless for a saved copy (``WORKBENCH_BATCH=1``, as ``run_notebook``,
    ``make demo`` and ``workbench run-notebook`` set it). By hand:
    ``WORKBENCH_BATCH=1 jupyter nbconvert --execute --to html NB --output-dir DIR`` gives the same
    outputs; its figures then need ``DIR/plotly.min.js`` (``workbench.viz.figures.write_plotly_js``)."""
    return os.environ.get(BATCH_ENV, "").strip().lower() not in ("", "0", "false", "no")


def setup_notebook(renderer: str | None = None) -> None:
    """Choose the plotly renderer so figures are live in JupyterLab *and* kept in saved outputs.

    ``plotly_mimetype`` is what JupyterLab's plotly extension renders; ``notebook`` adds a
    self-contained HTML copy (plotly.js embedded once per notebook) that nbconvert's HTML keeps.
    ``PLOTLY_RENDERER`` in the environment wins over the default.

    In batch mode (:func:`batch_mode`) the saved copy is meant to be read offline as it is or as
    nbconvert HTML, so: figures get an HTML copy that loads ``plotly.min.js`` from beside the
    notebook instead of embedding its 4.8 MB (``workbench_local``); panels add their static
    picture as plain outputs kept up to date after every cell (:class:`StaticFallback`); and
    ``tqdm.auto`` bars are plain text outputs that end showing their final count
    (:class:`BatchProgressBar`).
    """
    import plotly.io as pio

    pio.renderers["workbench_local"] = local_plotly_renderer()
    batch = batch_mode()
    chosen = renderer or os.environ.get("PLOTLY_RENDERER") or (BATCH_PLOTLY_RENDERER if batch else
                                                                DEFAULT_PLOTLY_RENDERER)
    pio.renderers.default = chosen
    if batch:
        _use_batch_progress_bars()
        _watch_static_outputs()


def local_plotly_renderer(plotly_src: str = PLOTLY_JS):
    """The ``workbench_local`` plotly renderer: ``text/html`` that draws the figure with
    ``<script src="plotly.min.js">`` (a path relative to the notebook; no CDN, no MathJax), for
    nbconvert HTML read offline with the file beside it."""
    from plotly.io.base_renderers import MimetypeRenderer

    class LocalPlotlyRenderer(MimetypeRenderer):
        def to_mimebundle(self, fig_dict) -> dict:
            import plotly.io as pio

            return {"text/html": pio.to_html(fig_dict, include_plotlyjs=plotly_src, include_mathjax=False,
                                             full_html=False, default_width="100%", default_height=525,
                                             validate=False)}

    return LocalPlotlyRenderer()


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
    """Mixin: add a static picture of the current state to the widget's display output.

    Interactive kernels: one output, the widget view plus ``image/png``/``text/html`` of the
    current state (JupyterLab shows the widget; viewers without widgets the picture). In batch
    mode (:func:`batch_mode`) nbconvert's HTML would pick the widget view, which is empty offline,
    so the widget view is followed by the picture as plain outputs (``text/html`` of the summary,
    ``image/png`` of the overlay) that are updated after every cell: the saved copy shows the
    panel's final state.
    """

    def static_bundle(self) -> dict:  # pragma: no cover - overridden
        return {}

    def _safe_static_bundle(self) -> dict:
        try:
            return self.static_bundle()
        except Exception as e:  # noqa: BLE001 - a broken picture must never hide the live widget
            return {"text/html": f"<pre>static view unavailable: {html.escape(repr(e))}</pre>"}

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}  # type: ignore[misc]
        data.update(self._safe_static_bundle())
        return data

    @property
    def _ipython_display_(self):
        """IPython's display hook; only in batch mode (otherwise ``None``: IPython then uses
        ``_repr_mimebundle_``, as for any widget)."""
        return self._display_batch if batch_mode() else None

    def static_outputs(self) -> list[dict]:
        """The static picture as plain display bundles: ``[text/html]`` and, when there is an
        overlay, ``[..., image/png]`` (the image is not repeated inside the HTML; a large one is
        stored with a 256-colour palette, :func:`compact_png_b64`)."""
        return [{**b, "image/png": compact_png_b64(b["image/png"])} if "image/png" in b else b
                for b in static_outputs(self._safe_static_bundle())]

    def _display_batch(self) -> None:
        from IPython.display import display

        view = super()._repr_mimebundle_() or {}  # type: ignore[misc]  # the widget view alone
        display(view, raw=True)
        self._static_sent = self.static_outputs()
        self._static_handles = [display(b, raw=True, display_id=True) for b in self._static_sent]
        _DISPLAYED.add(self)

    def update_static_outputs(self) -> bool:
        """Re-send the static picture when it changed since it was displayed (batch mode)."""
        handles = getattr(self, "_static_handles", None)
        if not handles:
            return False
        now = _fit_outputs(self.static_outputs(), len(handles))
        if now == self._static_sent:
            return False
        for h, b, old in zip(handles, now, self._static_sent):
            if b != old:
                h.update(b, raw=True)
        self._static_sent = now
        return True


_DISPLAYED: weakref.WeakSet = weakref.WeakSet()


def static_outputs(bundle: dict) -> list[dict]:
    """Split a static bundle (``image_bundle``) into plain outputs: the HTML without the image it
    embeds, then the image as ``image/png`` (nbconvert renders it as ``<img src="data:...">``)."""
    png = bundle.get("image/png")
    body = bundle.get("text/html", "")
    if png is None:
        return [{"text/html": body}] if body else []
    for tag in (f"<br><img src='data:image/png;base64,{png}'/>", f"<img src='data:image/png;base64,{png}'/>"):
        body = body.replace(tag, "")
    out = [{"text/html": body}] if re.sub(r"<[^>]*>", "", body).strip() else []
    return [*out, {"image/png": png, "text/plain": "<static picture>"}]


def compact_png_b64(png: str, limit: int = 200_000) -> str:
    """A base64 PNG of more than ``limit`` characters re-encoded with a 256-colour palette (a photo
    overlay shrinks ~5x; the picture of a saved copy, not the live view), else unchanged."""
    if len(png) <= limit:
        return png
    try:
        import io

        from PIL import Image

        img = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")
        buf = io.BytesIO()
        img.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", optimize=True)
    except Exception:  # noqa: BLE001 - no PIL or an odd image: keep the original
        return png
    small = base64.b64encode(buf.getvalue()).decode("ascii")
    return small if len(small) < len(png) else png


def _fit_outputs(bundles: list[dict], n: int) -> list[dict]:
    """``bundles`` as ``n`` outputs (the number displayed first): padded with empty ones, or the
    extra ones merged into the last as HTML (an overlay that appeared after the display)."""
    if len(bundles) <= n:
        return bundles + [{"text/plain": ""}] * (n - len(bundles))
    head, tail = bundles[:n - 1], bundles[n - 1:]
    parts = [b.get("text/html") or (f"<img src='data:image/png;base64,{b['image/png']}'/>" if "image/png" in b else "")
             for b in tail]
    merged = {"text/html": "".join(parts)}
    pngs = [b["image/png"] for b in tail if "image/png" in b]
    if pngs:
        merged["image/png"] = pngs[0]
    return [*head, merged]


def _refresh_static_outputs(*_args) -> None:
    for w in list(_DISPLAYED):
        try:
            w.update_static_outputs()
        except Exception:  # noqa: BLE001, S112 - a picture that cannot be redrawn keeps its last state
            continue


def _watch_static_outputs() -> None:
    """After every cell, bring the displayed panels' static pictures up to date (batch mode)."""
    from IPython import get_ipython

    ip = get_ipython()
    if ip is not None and _refresh_static_outputs not in ip.events.callbacks.get("post_run_cell", []):
        ip.events.register("post_run_cell", _refresh_static_outputs)


class _NullFile:
    """Where a :class:`BatchProgressBar` sends tqdm's terminal text: nowhere."""

    encoding = "utf-8"

    def write(self, _s) -> None:
        pass

    def flush(self) -> None:
        pass


def _batch_bar_class():
    from tqdm.std import tqdm as std_tqdm

    class BatchProgressBar(std_tqdm):
        """A tqdm bar written once, when it closes, as a plain ``text/plain`` output of its final
        state (``leave=False`` too): a saved notebook reads ``... 8/8 [...]`` where a widget bar is
        saved as ``0/8``. Nobody watches a headless run, and a display written only at the end
        also lands in an ``Output`` widget (a panel's log), where later updates would not."""

        def __init__(self, *args, **kwargs):
            kwargs["file"] = _NullFile()
            kwargs["leave"] = True
            for k in ("display", "dynamic_ncols"):  # tqdm.notebook's option; no terminal to fit
                kwargs.pop(k, None)
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            return True  # nothing while running

        def close(self):
            if getattr(self, "disable", True):
                return
            super().close()
            from IPython.display import display

            display({"text/plain": self.format_meter(**self.format_dict)}, raw=True)

    return BatchProgressBar


def _use_batch_progress_bars() -> None:
    """``tqdm.auto.tqdm`` is :class:`BatchProgressBar` from now on in this kernel (batch mode): the
    workbench's bars import it when they start, so each is saved showing its final count."""
    import tqdm.auto

    if getattr(tqdm.auto.tqdm, "__name__", "") != "BatchProgressBar":
        bar = _batch_bar_class()
        tqdm.auto.tqdm = bar
        tqdm.auto.trange = lambda *a, **k: bar(range(*a), **k)


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
