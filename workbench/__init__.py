"""Instance Segmentation Workbench: from annotated images to a trained, evaluated model.

The facade (names resolve lazily so ``import workbench`` stays fast)::

    import workbench as wb
    wb.check_dataset("dataset_dir")                 # PaddleX COCO layout check + stats + plots
    wb.convert_labelme("labelme_dir", "dataset_dir")
    wb.split_dataset("dataset_dir", 80, 20, seed=0)
    wb.evaluate(results, "dataset_dir", output_dir="eval")   # Results or a COCO results JSON
    model = wb.create_model("MaskRCNN-ResNet50-FPN")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Dataset": "workbench.data.dataset",
    "check_dataset": "workbench.data.check",
    "convert_labelme": "workbench.data.labelme",
    "split_dataset": "workbench.data.split",
    "make_shapes_dataset": "workbench.data.synthetic",
    "load_config": "workbench.config",
    "evaluate": "workbench.evaluation",
    "create_model": "workbench.models",
    "Result": "workbench.engine.result",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
