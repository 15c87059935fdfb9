"""The Detectron2 family: Mask R-CNN and Cascade Mask R-CNN with ResNet / ResNet-vd backbones.

Detectron2 is used as a library: its model-zoo configs, model builder, data loader, trainer
loop and checkpointer; our ResNet-vd backbone is registered in its ``BACKBONE_REGISTRY``.
Importing this package does not import Detectron2 (see ``model.create_model``); it sets Pillow's
``LINEAR`` alias that Detectron2 v0.6 needs, so Detectron2 imports work in any import order.
"""
from ._compat import patch_pillow
from .names import DETECTRON2_MODELS

patch_pillow()

__all__ = ["DETECTRON2_MODELS"]
