"""Train / evaluate / predict machinery shared by the model families: the ``Result`` currency,
COCO evaluation and the config-driven pipeline."""

from .result import Result

__all__ = ["Result"]
