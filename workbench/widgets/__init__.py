"""ipywidgets panels for the step notebooks, one module per screen.

Each panel is an ``ipywidgets.VBox`` usable on its own::

    from workbench import widgets as wbw
    wbw.setup_notebook()                      # plotly renderer that keeps figures in saved outputs
    wbw.DatasetBrowser("dataset_dir", check=result)
    wbw.show_stats(result)                    # class histogram + instance statistics (plotly)
    wbw.ConvertPanel("labelme_dir", "dataset_dir")
    wbw.SplitPanel("dataset_dir")
    wbw.TrainingPanel("dataset_dir", "runs/train")
    wbw.EvaluationExplorer("runs/train/evaluate", "dataset_dir", wbw.predict_split(model, "dataset_dir"))
    wbw.PredictionExplorer(results)

Modules: ``common`` (renderer, static fallback, figure outputs, HTML helpers), ``dataset``
(statistics, browser), ``panels`` (convert, split), ``training``, ``evaluation``, ``prediction``.
The panels only show things: figures come from ``workbench.viz``, matching and ranking from
``workbench.evaluation.explore``, predicting a split from ``workbench.evaluation.predict_split``.

Static fallback: when a panel is displayed, its output carries a static picture of its current
state (``image/png`` of the overlay and/or ``text/html`` of the summary) beside the live widget
view. JupyterLab shows the live widget; viewers without a widget frontend (GitHub, an untrusted
notebook) show the picture. nbconvert's HTML prefers the widget view (empty offline), so in batch
mode (``WORKBENCH_BATCH=1``, as ``workbench.notebooks.run_notebook`` runs the kernel) the picture
follows the widget view as plain outputs, brought up to date after every cell (``setup_notebook``).

Every control has a CSS class (``wb-...``) for stable selectors in browser tests.
"""
from __future__ import annotations

from ..viz import loss_figure, metric_figure, pr_figure, score_histogram
from .common import DEFAULT_PLOTLY_RENDERER, StaticFallback, figure_bundle, png_b64, setup_notebook, show_figures, slug
from .dataset import (
    DatasetBrowser,
    StatsPanel,
    class_histogram,
    dataset_stats,
    instance_stats_figures,
    load_splits,
    show_stats,
)
from .evaluation import EvaluationExplorer, ap_table_html
from .panels import ConvertPanel, SplitPanel, conversion_summary_html, split_summary_html
from .prediction import PredictionExplorer
from .training import TrainingPanel, progress_of, read_metrics, train_worker_main

__all__ = [
    "DEFAULT_PLOTLY_RENDERER",
    "ConvertPanel",
    "DatasetBrowser",
    "EvaluationExplorer",
    "PredictionExplorer",
    "SplitPanel",
    "StaticFallback",
    "StatsPanel",
    "TrainingPanel",
    "ap_table_html",
    "class_histogram",
    "conversion_summary_html",
    "dataset_stats",
    "figure_bundle",
    "instance_stats_figures",
    "load_splits",
    "loss_figure",
    "metric_figure",
    "png_b64",
    "pr_figure",
    "predict_split",
    "progress_of",
    "read_metrics",
    "score_histogram",
    "setup_notebook",
    "show_figures",
    "show_stats",
    "slug",
    "split_summary_html",
    "train_worker_main",
]


def __getattr__(name: str):
    if name == "predict_split":  # the shared one (workbench.evaluation), imported on first use
        from ..evaluation.predict import predict_split

        return predict_split
    raise AttributeError(f"module 'workbench.widgets' has no attribute {name!r}")
