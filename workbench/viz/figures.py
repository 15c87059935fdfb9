"""Figures: plotly builders for notebooks and widgets, matplotlib PNGs for written reports.

Every builder takes plain data (statistics dicts, ``metrics.jsonl`` records, ``Result`` objects, PR
curves as in ``evaluate_result.json``) and returns a figure; nothing here reads files or runs
models. plotly and matplotlib are imported on first use.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MARGIN = {"l": 40, "r": 20, "t": 50, "b": 40}


# --------------------------------------------------------------------------- generic
def bar_figure(counts: dict[str, int | float], title: str, xlabel: str = "class", ylabel: str = "count"):
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(counts.keys()), y=list(counts.values())))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white",
                      height=360, margin=_MARGIN)
    return fig


def grouped_bar_figure(series: dict[str, dict[str, int | float]], title: str, xlabel: str = "class",
                       ylabel: str = "count"):
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(name=name, x=list(c.keys()), y=list(c.values())) for name, c in series.items()])
    fig.update_layout(barmode="group", title=title, xaxis_title=xlabel, yaxis_title=ylabel,
                      template="plotly_white", height=360, margin=_MARGIN)
    return fig


def histogram_figure(values: dict[str, Sequence[float]], title: str, xlabel: str, log_x: bool = False):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, v in values.items():
        v = np.asarray(v, float)
        if log_x:
            v = np.log10(np.maximum(v, 1e-9))
        fig.add_trace(go.Histogram(x=v, name=name, opacity=0.7))
    fig.update_layout(barmode="overlay", title=title, xaxis_title=("log10 " if log_x else "") + xlabel,
                      yaxis_title="count", template="plotly_white", height=360,
                      margin=_MARGIN)
    return fig


# --------------------------------------------------------------------------- dataset statistics
def class_histogram_figure(stats: dict):
    """Grouped bar chart of instances per class and split (``stats``: ``dataset_stats``)."""
    return grouped_bar_figure(stats["instances_per_class"], "Instances per class")


def image_size_figure(sizes: dict[str, Sequence[tuple[int, int]]]):
    """Scatter of image (width, height) per split."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=[w for w, _ in v], y=[h for _, h in v], mode="markers", name=k)
                     for k, v in sizes.items()])
    fig.update_layout(title="Image sizes", xaxis_title="width", yaxis_title="height",
                      template="plotly_white", height=360)
    return fig


def instance_stats_figures(stats: dict) -> dict:
    """The dataset statistics as figures: class histogram, images per class, instances per image,
    mask areas and (when the statistics have them) image sizes."""
    figs = {"class_histogram": class_histogram_figure(stats),
            "images_per_class": grouped_bar_figure(stats["images_per_class"], "Images containing each class",
                                                   ylabel="images"),
            "instances_per_image": histogram_figure(stats["instances_per_image"], "Instances per image",
                                                    "instances"),
            "mask_area": histogram_figure(stats["mask_areas"], "Mask area (pixels)", "area", log_x=True)}
    if "image_sizes" in stats:
        figs["image_sizes"] = image_size_figure(stats["image_sizes"])
    return figs


# --------------------------------------------------------------------------- training curves
def loss_figure(records: list[dict]):
    """Training losses (total and per term) and the validation loss against optimizer iterations
    (``records``: ``metrics.jsonl``)."""
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
                                 mode="lines+markers", name="val_loss", line={"dash": "dash"}))
    fig.update_layout(title="Loss", xaxis_title="iteration", yaxis_title="loss", template="plotly_white",
                      height=340, margin=_MARGIN)
    return fig


def metric_figure(records: list[dict]):
    """Validation AP (box and mask) at each evaluation, against optimizer iterations."""
    import plotly.graph_objects as go

    evals = [r for r in records if r.get("type") == "eval"]
    fig = go.Figure()
    for k in ("segm_AP", "segm_AP50", "bbox_AP", "bbox_AP50"):
        pts = [(r["iter"], r[k]) for r in evals if r.get(k) is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k))
    fig.update_layout(title="Validation AP (best model chosen by segm_AP)", xaxis_title="iteration",
                      yaxis_title="AP", yaxis_range=[0, 1], template="plotly_white", height=340, margin=_MARGIN)
    return fig


# --------------------------------------------------------------------------- predictions
def pr_figure(pr: dict, iou_label: str = "IoU 0.50"):
    """Precision-recall per class at one IoU (``pr``: the ``pr_curves`` of ``evaluate_result.json``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, p in pr.get("curves", {}).get(iou_label, {}).items():
        if p is not None:
            fig.add_trace(go.Scatter(x=pr["recall"], y=p, mode="lines", name=name))
    fig.update_layout(title=f"Precision–recall per class ({iou_label}, masks)", xaxis_title="recall",
                      yaxis_title="precision", xaxis_range=[0, 1], yaxis_range=[0, 1.02], template="plotly_white",
                      height=360, margin=_MARGIN)
    return fig


def score_histogram(results: Sequence, threshold: float | None = None):
    """Histogram of prediction scores per class (helps choosing the score threshold)."""
    import plotly.graph_objects as go

    by_class: dict[str, list[float]] = {}
    for r in results:
        for n, sc in zip(r.class_names, r.scores):
            by_class.setdefault(n, []).append(float(sc))
    fig = go.Figure([go.Histogram(x=v, name=k, opacity=0.7, xbins={"start": 0, "end": 1, "size": 0.05})
                     for k, v in sorted(by_class.items())])
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(barmode="overlay", title=f"Prediction scores ({sum(map(len, by_class.values()))} detections)",
                      xaxis_title="score", yaxis_title="detections", xaxis_range=[0, 1], template="plotly_white",
                      height=340, margin=_MARGIN)
    return fig


# --------------------------------------------------------------------------- evaluation (plain specs)
def evaluation_figure_specs(result: dict) -> dict[str, dict]:
    """The analysis of an ``evaluate_result.json`` (its dict) as plain plotly figure specs
    (``{"data": [...], "layout": {...}}``, JSON-ready, no plotly import): PR curves per class and
    IoU, the mask confusion matrix, errors by kind and the score-threshold sweep.

    ``go.Figure(spec)`` makes the notebook figure (``evaluation.analysis_figures``); the report's
    HTML hands the same specs to plotly.js (``evaluation_html``), so both show the same plots."""
    a = result.get("analysis") or {}
    figs: dict[str, dict] = {}

    def layout(title, height, **kw):
        return {"title": {"text": title}, "template": "plotly_white", "height": height, **kw}

    def axis(title=None, **kw):
        return {**({"title": {"text": title}} if title else {}), **kw}

    pr = a.get("pr_curves")
    if pr:
        data = [{"type": "scatter", "x": pr["recall"], "y": p, "mode": "lines", "name": f"{cname} @ {label}",
                 "visible": True if label == "IoU 0.50" else "legendonly"}
                for label, per_class in pr["curves"].items() for cname, p in per_class.items() if p is not None]
        figs["pr_curves"] = {"data": data, "layout": layout(
            "Precision-recall per class (mask)", 420, xaxis=axis("recall", range=[0, 1]),
            yaxis=axis("precision", range=[0, 1.02]))}
    cm = a.get("confusion_matrix")
    if cm:
        z, labels = cm["matrix"], cm["labels"]
        figs["confusion_matrix"] = {
            "data": [{"type": "heatmap", "z": z, "x": labels, "y": labels, "colorscale": "Blues", "text": z,
                      "texttemplate": "%{text}", "hovertemplate": "GT %{y} → pred %{x}: %{z}"}],
            "layout": layout(f"Mask confusion matrix at score ≥ {a.get('score_threshold')} (rows: ground truth, "
                             "columns: prediction)", 420, xaxis=axis("predicted"),
                             yaxis=axis("ground truth", autorange="reversed"))}
    if a.get("errors"):
        errs = {k: v for k, v in a["errors"].items() if k != "tp"}
        figs["error_breakdown"] = {
            "data": [{"type": "bar", "x": list(errs), "y": list(errs.values())}],
            "layout": layout(f"Errors by kind, all images (correct matches: {a['errors'].get('tp', 0)})", 360)}
    sw = a.get("threshold_sweep")
    if sw and sw.get("thresholds"):
        figs["threshold_sweep"] = {
            "data": [{"type": "scatter", "x": sw["thresholds"], "y": sw[k], "name": k, "mode": "lines+markers"}
                     for k in ("precision", "recall", "f1")],
            "layout": layout(f"Score threshold sweep (best F1 {sw['best_f1']:.3f} at {sw['best_threshold']})", 360,
                             xaxis=axis("score threshold"), yaxis=axis(range=[0, 1.02]))}
    return figs


def plotly_js_path():
    """The plotly.js bundled with the plotly package (found without importing plotly), or None."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return p if p.is_file() else None


def write_plotly_js(out) -> bool:
    """``out/plotly.min.js`` from the plotly package, unless a copy of the same size and mtime is
    already there (written once per output folder), for pages and saved notebooks that load it by
    the relative path ``plotly.min.js``. False when plotly is not installed."""
    import os
    import shutil
    from pathlib import Path

    src = plotly_js_path()
    if src is None:
        return False
    dst = Path(out) / "plotly.min.js"
    s = src.stat()
    if dst.is_file() and (dst.stat().st_size, dst.stat().st_mtime_ns) == (s.st_size, s.st_mtime_ns):
        return True
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(src, tmp)  # keeps the mtime: the check above
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _template(name: str) -> dict | None:
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "templates" / f"{name}.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def figures_html(specs: dict[str, dict], plotly_src: str = "plotly.min.js") -> str:
    """HTML that draws ``specs`` (``evaluation_figure_specs``) with plotly.js loaded from
    ``plotly_src`` (a path relative to the page: no network needed). Templates named in a layout
    are inlined from the plotly package's data files, once each."""
    import html
    import json

    if not specs:
        return ""
    templates: dict[str, dict | None] = {}
    figs = []
    for name, spec in specs.items():
        lay = dict(spec.get("layout", {}))
        t = lay.pop("template", None)
        if isinstance(t, str) and t not in templates:
            templates[t] = _template(t)
        figs.append({"id": f"fig-{name}", "data": spec.get("data", []), "layout": lay,
                     "template": t if isinstance(t, str) else None})
    divs = "\n".join(f'<div id="{html.escape(f["id"])}" style="width:100%;height:{int(f["layout"].get("height", 400))}px">'
                     "</div>" for f in figs)
    payload = json.dumps({"templates": templates, "figures": figs}, ensure_ascii=False).replace("</", "<\\/")
    return (f'{divs}\n<script src="{html.escape(plotly_src)}" charset="utf-8"></script>\n<script>\n'
            f"(function () {{ var P = {payload};\n"
            "  if (typeof Plotly === 'undefined') { return; }\n"
            "  P.figures.forEach(function (f) {\n"
            "    if (f.template && P.templates[f.template]) { f.layout.template = P.templates[f.template]; }\n"
            "    Plotly.newPlot(f.id, f.data, f.layout, {responsive: true});\n"
            "  });\n})();\n</script>")


# --------------------------------------------------------------------------- PNG (matplotlib)
def save_bar_png(path, series: dict[str, dict[str, int | float]], title: str, ylabel: str = "count") -> None:
    """A grouped bar chart as PNG (matplotlib, no browser needed)."""

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    names = list(dict.fromkeys(k for s in series.values() for k in s))
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.6), dpi=110)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(names))
    for i, (label, s) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [s.get(n, 0) for n in names], width, label=label)
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    _save_png(fig, path)


def save_hist_png(path, values: dict[str, Sequence[float]], title: str, xlabel: str, log_x: bool = False) -> None:

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for name, v in values.items():
        v = np.asarray(v, float)
        if len(v) == 0:
            continue
        if log_x:
            v = np.log10(np.maximum(v, 1e-9))
        ax.hist(v, bins=20, alpha=0.6, label=name)
    ax.set_xlabel(("log10 " if log_x else "") + xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    _save_png(fig, path)


def _save_png(fig, path) -> None:
    """Write a matplotlib figure to ``path`` as PNG (atomically) and close it."""
    import io

    import matplotlib.pyplot as plt

    from ..utils.io import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
