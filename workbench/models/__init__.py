"""Models by PaddleX name: ``create_model(name, weights=None, device=None, **overrides)``.

Families register their names in ``registry``; each factory is imported on first use.
"""
from .registry import (UnknownModelError, available_models, check_name, create_model, family_of,
                       register_family)
from .detectron2.names import DETECTRON2_MODELS

register_family(list(DETECTRON2_MODELS), "workbench.models.detectron2.model:create_model", family="detectron2")
MASK_RTDETR_MODELS = ("Mask-RT-DETR-S", "Mask-RT-DETR-M", "Mask-RT-DETR-L", "Mask-RT-DETR-X", "Mask-RT-DETR-H")
register_family(list(MASK_RTDETR_MODELS), "workbench.models.mask_rtdetr.facade:create_model", family="mask_rtdetr")

__all__ = ["create_model", "available_models", "register_family", "check_name", "family_of",
           "UnknownModelError", "DETECTRON2_MODELS", "MASK_RTDETR_MODELS"]
