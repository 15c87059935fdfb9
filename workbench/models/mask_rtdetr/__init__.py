"""Mask-RT-DETR (PaddleDetection / PaddleX) ported to PyTorch.

Parts: ``backbone`` (PP-HGNetV2 via timm), ``encoder`` (MaskHybridEncoder), ``decoder``
(MaskRTDETR transformer), ``denoising``, ``matcher``, ``criterion``, ``postprocess``, ``model``
(``build_mask_rtdetr``), ``convert`` (.pdparams -> .pth), ``export`` (ONNX), ``data``, ``engine``.
"""
from .model import EXPECTED_PARAMS, EXPECTED_STATE_DICT_ENTRIES, VARIANTS, MaskRTDETR, build_mask_rtdetr

__all__ = ["MaskRTDETR", "build_mask_rtdetr", "VARIANTS", "EXPECTED_PARAMS", "EXPECTED_STATE_DICT_ENTRIES"]
