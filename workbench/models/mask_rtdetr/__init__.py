"""Mask-RT-DETR (PaddleDetection / PaddleX) ported to PyTorch.

Parts, one concept per file: ``backbone`` (PP-HGNetV2 via timm), ``encoder`` (MaskHybridEncoder),
``decoder`` (MaskRTDETR transformer), ``denoising``, ``matcher``, ``criterion``, ``postprocess``,
``model`` (``build_mask_rtdetr``), ``convert`` (.pdparams -> .pth), ``export`` (ONNX), ``data``,
``engine`` (optimizer, EMA, one epoch), ``solver`` (the trainer), ``facade`` (the model object),
``names`` (PaddleX names, schedule unit, defaults). Importing the package does not import torch.
"""
import importlib

_LAZY = {"MaskRTDETR", "build_mask_rtdetr", "VARIANTS", "EXPECTED_PARAMS", "EXPECTED_STATE_DICT_ENTRIES"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(".model", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
