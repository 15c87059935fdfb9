"""Drawing and figures.

``draw``: instances on images (masks, contours, boxes, labels; one colour per class id) and PNG
encoding. ``figures``: plotly builders for notebooks and widgets (dataset statistics, training
curves, PR curves, score histograms) and matplotlib PNGs for written reports. Everything is
re-exported here: ``from workbench.viz import draw_instances``, ``viz.loss_figure(records)``.
"""
from .draw import class_color, draw_instances, encode_png, save_image
from .figures import (
                      bar_figure,
                      class_histogram_figure,
                      grouped_bar_figure,
                      histogram_figure,
                      image_size_figure,
                      instance_stats_figures,
                      loss_figure,
                      metric_figure,
                      pr_figure,
                      save_bar_png,
                      save_hist_png,
                      score_histogram,
)

__all__ = [
                      "bar_figure",
                      "class_color",
                      "class_histogram_figure",
                      "draw_instances",
                      "encode_png",
                      "grouped_bar_figure",
                      "histogram_figure",
                      "image_size_figure",
                      "instance_stats_figures",
                      "loss_figure",
                      "metric_figure",
                      "pr_figure",
                      "save_bar_png",
                      "save_hist_png",
                      "save_image",
                      "score_histogram",
]
