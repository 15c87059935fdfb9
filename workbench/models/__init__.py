"""Models by PaddleX name: ``create_model(name, weights=None, device=None, **overrides)``.

Families register their names, schedule unit and training defaults in ``registry``; each
factory is imported on first use.
"""
from .detectron2 import names as _d2
from .mask_rtdetr import names as _rtdetr
from .ppyoloe_seg import names as _ppyoloe_seg
from .registry import (
                       FamilyInfo,
                       UnknownModelError,
                       available_models,
                       check_name,
                       coco_weights,
                       create_model,
                       families,
                       family_info,
                       family_of,
                       pretrained_table,
                       register_family,
                       resolve_model_weights,
)

DETECTRON2_MODELS = _d2.DETECTRON2_MODELS
MASK_RTDETR_MODELS = tuple(_rtdetr.MODEL_NAMES)
PPYOLOE_SEG_MODELS = tuple(_ppyoloe_seg.MODEL_NAMES)

register_family(list(DETECTRON2_MODELS), "workbench.models.detectron2.model:create_model", family="detectron2",
                unit=_d2.UNIT, train_defaults=_d2.TRAIN_DEFAULTS, train_options=_d2.TRAIN_OPTIONS, smoke=_d2.SMOKE,
                pretrained=_d2.COCO_WEIGHTS, no_pretrained=_d2.NO_COCO_WEIGHTS)
register_family(list(MASK_RTDETR_MODELS), "workbench.models.mask_rtdetr.facade:create_model", family="mask_rtdetr",
                unit=_rtdetr.UNIT, train_defaults=_rtdetr.TRAIN_DEFAULTS, train_options=_rtdetr.TRAIN_OPTIONS,
                smoke=_rtdetr.SMOKE, pretrained=_rtdetr.COCO_WEIGHTS)
register_family(list(PPYOLOE_SEG_MODELS), "workbench.models.ppyoloe_seg.facade:create_model", family="ppyoloe_seg",
                unit=_ppyoloe_seg.UNIT, train_defaults=_ppyoloe_seg.TRAIN_DEFAULTS,
                train_options=_ppyoloe_seg.TRAIN_OPTIONS, smoke=_ppyoloe_seg.SMOKE,
                no_pretrained=_ppyoloe_seg.NO_COCO_WEIGHTS)

__all__ = ["create_model", "available_models", "register_family", "check_name", "family_of", "family_info",
           "families", "FamilyInfo", "UnknownModelError", "DETECTRON2_MODELS", "MASK_RTDETR_MODELS",
           "PPYOLOE_SEG_MODELS",
           "pretrained_table", "coco_weights", "resolve_model_weights"]
