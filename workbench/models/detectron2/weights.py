"""Where weights come from: a local file or folder, or a URL fetched with a short timeout.

Detectron2's own URL handler downloads without a timeout (it hangs when a URL is unreachable);
here a URL is fetched with ``urllib`` and ``timeout`` seconds per socket operation, into
``~/.cache/workbench/weights`` (``WORKBENCH_CACHE`` overrides), and an unreachable URL raises
``WeightsError`` naming the URL at once. ``detectron2://`` is Detectron2's model-zoo prefix.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

D2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"


class WeightsError(RuntimeError):
    """Weights that cannot be found, downloaded or read."""


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "weights"


def is_url(s: str) -> bool:
    return str(s).startswith(("http://", "https://", "detectron2://"))


def resolve_weights(weights: str | os.PathLike, timeout: float = 15.0) -> Path:
    """A local checkpoint file for ``weights`` (file, folder with ``model.pth``/``model_final.pth``, URL)."""
    w = str(weights)
    if is_url(w):
        return download(w, timeout)
    p = Path(w).expanduser()
    if p.is_dir():
        for name in ("model.pth", "model_final.pth", "best_model/model.pth"):
            if (p / name).is_file():
                return p / name
        raise WeightsError(f"{p}: folder holds no model.pth or model_final.pth")
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    if p.suffix not in (".pth", ".pkl", ".pt"):
        raise WeightsError(f"{p}: expected a .pth or .pkl checkpoint")
    return p


def download(url: str, timeout: float = 15.0) -> Path:
    if url.startswith("detectron2://"):
        url = D2_PREFIX + url[len("detectron2://"):]
    name = Path(urllib.request.url2pathname(url.split("?")[0])).name or "weights.pth"
    target = cache_dir() / hashlib.sha1(url.encode()).hexdigest()[:12] / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(resp, f)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise WeightsError(f"cannot download weights from {url}: {reason} (timeout {timeout:g} s). "
                           "Download the file elsewhere and pass its local path.") from e
    return target


def read_checkpoint(path: Path) -> dict:
    """The checkpoint dict (``.pth`` via torch, ``.pkl`` Detectron2/Caffe2 format)."""
    import pickle

    import torch

    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
            return data if isinstance(data, dict) else {"model": data}
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same error for the user
        raise WeightsError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    return data if isinstance(data, dict) and "model" in data else {"model": data}
