"""PaddleDetection / PaddleX ``.pdparams`` of PP-YOLOE_seg -> this port's state dict (no Paddle
needed: ``engine.weights`` reads the pickle).

Module names are Paddle's (``backbone.stem.conv1.conv.weight``, ``neck.fpn_stages.0.0.convs.spp.conv``,
``yolo_head.pred_cls.0.weight``, ``yolo_head.proto.upsample.weight`` …), so the mapping is:
BatchNorm ``_mean`` -> ``running_mean``, ``_variance`` -> ``running_var``; torch's
``num_batches_tracked`` (not in Paddle) is filled in. Conv, transposed-conv ([in, out, k, k] in both)
and ``alpha`` tensors keep their layout. Every tensor is checked against the model's shape.

Command line: ``python -m workbench.models.ppyoloe_seg.convert in.pdparams out.pth``."""
from __future__ import annotations

import sys

import numpy as np
import torch

_RENAME = (("._mean", ".running_mean"), ("._variance", ".running_var"))


def torch_key(key: str) -> str:
    for a, b in _RENAME:
        if key.endswith(a):
            return key[: -len(a)] + b
    return key


def infer_num_classes(params: dict) -> int:
    key = "yolo_head.pred_cls.0.bias"
    if key not in params:
        raise ValueError(f"not PP-YOLOE_seg weights: no {key}")
    return int(np.asarray(params[key]).shape[0])


def infer_variant(params: dict) -> str:
    """The variant of the file, from its stem width (S: 16 channels in ``stem.conv1``)."""
    from .model import VARIANTS

    c = int(np.asarray(params["backbone.stem.conv1.conv.weight"]).shape[0])
    for v, (_, w) in VARIANTS.items():
        if max(round(64 * w), 1) // 2 == c:
            return v
    raise ValueError(f"no PP-YOLOE_seg variant has a {c}-channel stem")


def reference_state_dict(variant: str, num_classes: int) -> dict:
    from .model import build_ppyoloe_seg

    with torch.device("meta"):
        return build_ppyoloe_seg(variant, num_classes).state_dict()


def convert_state_dict(params: dict, reference: dict) -> dict:
    """Paddle tensors (numpy) -> a state dict with exactly ``reference``'s keys and shapes."""
    out, unexpected = {}, []
    for k, v in params.items():
        tk = torch_key(k)
        if tk not in reference:
            unexpected.append(k)
            continue
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(v))).to(reference[tk].dtype)
        if tuple(t.shape) != tuple(reference[tk].shape):
            raise ValueError(f"{k}: shape {tuple(t.shape)}, the model has {tuple(reference[tk].shape)}")
        out[tk] = t
    for k, ref in reference.items():
        if k not in out and k.endswith("num_batches_tracked"):
            out[k] = torch.zeros((), dtype=ref.dtype)
    missing = [k for k in reference if k not in out]
    if missing or unexpected:
        raise ValueError(f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}) tensors")
    return out


def convert_file(src, dst) -> dict:
    from ...engine.weights import read_weights_file

    ck = read_weights_file(src)
    params = ck["model"]
    n = infer_num_classes(params)
    variant = infer_variant(params)
    sd = convert_state_dict(params, reference_state_dict(variant, n))
    from .model import variant_config

    torch.save({"model": sd, "config": variant_config(variant, n), "variant": variant, "num_classes": n}, dst)
    return {"variant": variant, "num_classes": n, "tensors": len(sd)}


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 3:
        sys.exit("usage: python -m workbench.models.ppyoloe_seg.convert in.pdparams out.pth")
    print(convert_file(sys.argv[1], sys.argv[2]))
