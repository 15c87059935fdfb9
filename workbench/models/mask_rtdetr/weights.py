"""Reading Mask-RT-DETR weights: a workbench checkpoint, a ``convert.py`` ``.pth`` or a Paddle
``.pdparams`` (converted on the fly), checked against the variant asked for. Finding, downloading
and reading the file is ``engine.weights``; this module knows the family's tensors."""

from __future__ import annotations

from pathlib import Path

from ...engine.errors import WeightsError
from ...engine.weights import checkpoint_meta, read_weights_file


def arch_overrides(cfg: dict) -> dict:
    """The entries of a full model config that differ from the variant's defaults."""
    from .model import variant_config

    base = variant_config(cfg["variant"], cfg["num_classes"])

    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    return {
        k: norm(v)
        for k, v in cfg.items()
        if k not in ("variant", "num_classes") and (k not in base or norm(v) != norm(base.get(k)))
    }


def _from_pdparams(path: Path, params: dict, variant: str) -> dict:
    from . import convert

    n = convert.infer_num_classes(params)
    try:
        sd = convert.convert_state_dict(params, convert.reference_state_dict(variant, n))
    except ValueError as e:
        try:
            other = convert.infer_variant(params, n)
        except ValueError:
            other = None
        if other and other != variant:
            raise WeightsError(f"{path} holds Mask-RT-DETR-{other} weights, not Mask-RT-DETR-{variant}") from None
        raise WeightsError(f"{path}: cannot convert to Mask-RT-DETR-{variant}: {e}") from None
    return {"state_dict": sd, "num_classes": n, "overrides": {}, "meta": None}


def read_weights(path: Path, variant: str) -> dict:
    """``{"state_dict", "num_classes", "overrides", "meta"}`` from a .pdparams / .pth file."""
    ck = read_weights_file(path)
    if ck.get("format") == "pdparams":
        return _from_pdparams(path, ck["model"], variant)
    sd = ck["model"]
    meta = checkpoint_meta(ck)
    file_variant = (meta or {}).get("variant") or ck.get("variant") or (ck.get("config") or {}).get("variant")
    if file_variant and str(file_variant).upper() != variant:
        raise WeightsError(f"{path} holds Mask-RT-DETR-{str(file_variant).upper()} weights, not Mask-RT-DETR-{variant}")
    if "transformer.score_head.bias" not in sd:
        raise WeightsError(f"{path}: not a Mask-RT-DETR checkpoint (no transformer.score_head.bias)")
    n = int(sd["transformer.score_head.bias"].shape[0])
    if meta and "overrides" in meta:
        overrides = dict(meta["overrides"])
    elif ck.get("config"):
        cfg = {"variant": variant, "num_classes": n, **dict(ck["config"])}
        overrides = arch_overrides(cfg)
    else:
        overrides = {}
    return {"state_dict": sd, "num_classes": n, "overrides": overrides, "meta": meta}
