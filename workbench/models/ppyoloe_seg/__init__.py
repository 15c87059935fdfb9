"""PP-YOLOE_seg (PaddleDetection / PaddleX) ported to PyTorch.

Parts, one concept per file: ``layers`` (conv-BN, RepVGG, BasicBlock, effective SE), ``backbone``
(CSPResNet), ``neck`` (CustomCSPPAN), ``head`` (PPYOLOEInsHead with its prototype mask branch),
``assigner`` (TaskAlignedAssigner), ``loss`` (varifocal + GIoU + DFL + mask), ``postprocess``
(multi-class NMS, masks), ``model`` (``build_ppyoloe_seg``), ``convert`` (.pdparams -> .pth),
``export`` (ONNX), ``data`` (batches and augmentation), ``engine`` (SGD, warmup + cosine, EMA),
``solver`` (the trainer), ``facade`` (the model object), ``names`` (PaddleX name, schedule unit,
defaults). Importing the package does not import torch.
"""
import importlib

_LAZY = {"PPYOLOESeg", "build_ppyoloe_seg", "VARIANTS", "EXPECTED_PARAMS"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(".model", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
