"""Reading PP-YOLOE_seg weights: a workbench checkpoint, a ``convert.py`` ``.pth`` or a Paddle
``.pdparams`` (converted on the fly). Finding, downloading and reading the file is
``engine.weights``; this module knows the family's tensors."""

from __future__ import annotations

from pathlib import Path

from ...engine.errors import WeightsError
from ...engine.weights import checkpoint_meta, read_weights_file

_CLS_KEY = "yolo_head.pred_cls.0.bias"


def read_weights(path: Path, variant: str) -> dict:
    """``{"state_dict", "num_classes", "overrides", "meta"}`` from a .pdparams / .pth file."""
    ck = read_weights_file(path)
    if ck.get("format") == "pdparams":
        from . import convert

        params = ck["model"]
        try:
            n = convert.infer_num_classes(params)
            other = convert.infer_variant(params)
        except (ValueError, KeyError) as e:
            raise WeightsError(f"{path}: not PP-YOLOE_seg weights ({e})") from None
        if other != variant:
            raise WeightsError(f"{path} holds PP-YOLOE_seg-{other} weights, not PP-YOLOE_seg-{variant}")
        try:
            sd = convert.convert_state_dict(params, convert.reference_state_dict(variant, n))
        except ValueError as e:
            raise WeightsError(f"{path}: cannot convert to PP-YOLOE_seg-{variant}: {e}") from None
        return {"state_dict": sd, "num_classes": n, "overrides": {}, "meta": None}
    sd = ck["model"]
    meta = checkpoint_meta(ck)
    file_variant = (meta or {}).get("variant") or ck.get("variant")
    if file_variant and str(file_variant).upper() != variant:
        raise WeightsError(f"{path} holds PP-YOLOE_seg-{str(file_variant).upper()} weights, "
                           f"not PP-YOLOE_seg-{variant}")
    if _CLS_KEY not in sd:
        raise WeightsError(f"{path}: not a PP-YOLOE_seg checkpoint (no {_CLS_KEY})")
    n = int(sd[_CLS_KEY].shape[0])
    overrides = dict((meta or {}).get("overrides") or {})
    return {"state_dict": sd, "num_classes": n, "overrides": overrides, "meta": meta}
