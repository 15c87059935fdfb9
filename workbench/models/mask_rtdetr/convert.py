"""Convert PaddleDetection/PaddleX Mask-RT-DETR ``.pdparams`` to a PyTorch checkpoint (and back).

A ``.pdparams`` file is a pickle (protocol 4) of a flat ``{name: float32 numpy array}`` plus the
bookkeeping key ``StructuredToParameterName@@``. It is read with a restricted unpickler that only
admits what such a file needs (numpy array reconstruction and plain containers), so no Paddle
install is required and no arbitrary code runs.

Name mapping (module names in this port mirror Paddle's):
  * ``backbone.stages.N.`` -> ``backbone.stages_N.`` (timm's flattened feature wrapper);
  * ``aggregation_squeeze_conv`` / ``aggregation_excitation_conv`` -> ``aggregation.0`` / ``.1``;
  * BN ``_mean`` / ``_variance`` -> ``running_mean`` / ``running_var``.
Paddle stores Linear weights as [in, out]; every 2-D tensor is transposed except the
``transformer.denoising_class_embed.weight`` embedding table.

CLI: ``python -m workbench.models.mask_rtdetr.convert in.pdparams out.pth [--variant S]``
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch

from ...engine.weights import PADDLE_META_KEY, read_pdparams, write_pdparams

# the .pdparams reader and writer live in engine.weights (every family reads weights there)
load_pdparams, save_pdparams = read_pdparams, write_pdparams
__all__ = ["PADDLE_META_KEY", "load_pdparams", "save_pdparams", "convert_state_dict", "convert_pdparams",
           "infer_num_classes", "infer_variant", "reference_state_dict"]

NO_TRANSPOSE = {"transformer.denoising_class_embed.weight"}


_STAGE = re.compile(r"^backbone\.stages\.(\d+)\.")
_STAGE_T = re.compile(r"^backbone\.stages_(\d+)\.")


def paddle_to_torch_name(name: str) -> str:
    n = _STAGE.sub(r"backbone.stages_\1.", name)
    n = n.replace(".aggregation_squeeze_conv.", ".aggregation.0.").replace(".aggregation_excitation_conv.", ".aggregation.1.")
    if n.endswith("._mean"):
        n = n[: -len("._mean")] + ".running_mean"
    elif n.endswith("._variance"):
        n = n[: -len("._variance")] + ".running_var"
    return n


def torch_to_paddle_name(name: str) -> str:
    n = _STAGE_T.sub(r"backbone.stages.\1.", name)
    n = n.replace(".aggregation.0.", ".aggregation_squeeze_conv.").replace(".aggregation.1.", ".aggregation_excitation_conv.")
    if n.endswith(".running_mean"):
        n = n[: -len(".running_mean")] + "._mean"
    elif n.endswith(".running_var"):
        n = n[: -len(".running_var")] + "._variance"
    return n


def _needs_transpose(torch_name: str, ndim: int) -> bool:
    return ndim == 2 and torch_name not in NO_TRANSPOSE


def convert_state_dict(params: dict[str, np.ndarray], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map Paddle arrays onto the names/shapes of ``reference`` (a PyTorch state dict).

    Raises ``ValueError`` listing every Paddle name that maps to nothing, every reference entry
    left without a value, and every shape mismatch.
    """
    out: dict[str, torch.Tensor] = {}
    unmapped, bad_shape, bad_names = [], [], set()
    for pname, arr in params.items():
        tname = paddle_to_torch_name(pname)
        if tname not in reference:
            unmapped.append(pname)
            continue
        t = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
        if _needs_transpose(tname, t.ndim):
            t = t.t().contiguous()
        if tuple(t.shape) != tuple(reference[tname].shape):
            bad_shape.append(f"{pname}: {tuple(arr.shape)} -> expected {tuple(reference[tname].shape)}")
            bad_names.add(tname)
            continue
        out[tname] = t.to(reference[tname].dtype)
    missing = [k for k in reference if k not in out and k not in bad_names]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} Paddle name(s) map to no PyTorch parameter: {unmapped}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatch(es): {bad_shape}")
    if missing:
        problems.append(f"{len(missing)} PyTorch entr(y/ies) missing from the Paddle file: {missing}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def torch_to_paddle(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Inverse of :func:`convert_state_dict`: Paddle names, Linear weights back to [in, out]."""
    out = {}
    for k, v in state_dict.items():
        a = v.detach().cpu().float()
        if _needs_transpose(k, a.ndim):
            a = a.t()
        out[torch_to_paddle_name(k)] = a.contiguous().numpy()
    return out


def infer_num_classes(params: dict[str, np.ndarray]) -> int:
    key = "transformer.score_head.bias"
    if key not in params:
        raise ValueError(f"cannot infer num_classes: {key} is missing")
    return int(params[key].shape[0])


def reference_state_dict(variant: str, num_classes: int) -> dict[str, torch.Tensor]:
    """Names and shapes of a variant's state dict, built on the meta device (no memory)."""
    from .model import build_mask_rtdetr

    with torch.device("meta"):
        model = build_mask_rtdetr(variant, num_classes)
    return model.state_dict()


def infer_variant(params: dict[str, np.ndarray], num_classes: int) -> str:
    from .model import VARIANTS

    want = {paddle_to_torch_name(k): tuple(v.shape if v.ndim != 2 or paddle_to_torch_name(k) in NO_TRANSPOSE
                                           else v.shape[::-1]) for k, v in params.items()}
    for v in VARIANTS:
        ref = reference_state_dict(v, num_classes)
        if {k: tuple(t.shape) for k, t in ref.items()} == want:
            return v
    raise ValueError("the parameter names/shapes match none of the variants S/M/L/X/H; pass --variant to see "
                     "which names do not map")


def convert_pdparams(src: str | Path, dst: str | Path | None = None, variant: str | None = None) -> dict:
    """Convert a ``.pdparams`` file; returns (and, if ``dst`` is given, saves) a checkpoint dict
    ``{'model': state_dict, 'variant': ..., 'num_classes': ...}`` loadable with
    :func:`workbench.models.mask_rtdetr.engine.load_checkpoint`."""
    params = load_pdparams(src)
    num_classes = infer_num_classes(params)
    variant = variant.upper() if variant else infer_variant(params, num_classes)
    sd = convert_state_dict(params, reference_state_dict(variant, num_classes))
    ckpt = {"model": sd, "variant": variant, "num_classes": num_classes, "source": str(src)}
    if dst is not None:
        torch.save(ckpt, dst)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.models.mask_rtdetr.convert",
                                 description="Convert a Mask-RT-DETR .pdparams file to a PyTorch checkpoint.")
    ap.add_argument("src", help="input .pdparams (PaddleDetection / PaddleX)")
    ap.add_argument("dst", help="output .pth")
    ap.add_argument("--variant", choices=["S", "M", "L", "X", "H", "s", "m", "l", "x", "h"],
                    help="model variant (inferred from the parameter shapes when omitted)")
    args = ap.parse_args(argv)
    try:
        ckpt = convert_pdparams(args.src, args.dst, args.variant)
    except (ValueError, RuntimeError, pickle.UnpicklingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: Mask-RT-DETR-{ckpt['variant']}, {ckpt['num_classes']} classes, "
          f"{len(ckpt['model'])} tensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
