"""Import Detectron2 (v0.6) on a current Pillow.

Detectron2 v0.6 uses ``PIL.Image.LINEAR``, removed in Pillow 10; it is the same filter as
``PIL.Image.BILINEAR``. ``import_detectron2()`` sets the alias before the first Detectron2 import
and silences the ``pkg_resources`` deprecation warning of ``detectron2.model_zoo``. Every module
of this package imports Detectron2 through it.
"""
from __future__ import annotations

import warnings


def patch_pillow() -> None:
    """``PIL.Image.LINEAR`` (removed in Pillow 10) as the same filter, ``BILINEAR``, for Detectron2 v0.6."""
    import PIL.Image

    if not hasattr(PIL.Image, "LINEAR"):
        PIL.Image.LINEAR = PIL.Image.BILINEAR


def import_detectron2():
    patch_pillow()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            import detectron2  # noqa: F401
            import detectron2.modeling  # noqa: F401  (registries)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "Detectron2 is not importable; install it with `python tools/install_detectron2.py` "
                f"({e})") from e
    return detectron2
