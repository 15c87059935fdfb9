"""Where weights come from, for every model family: a local file or folder, a URL, the cache.

``resolve_weights(w)`` gives a local file: a file as it is; a folder holding ``model.pth``,
``model_final.pth``, ``best_model/model.pth`` or a single ``.pdparams``; a URL (``http(s)://`` or
Detectron2's ``detectron2://`` model-zoo prefix) downloaded once into the cache,
``~/.cache/workbench/weights`` (``WORKBENCH_CACHE`` overrides). Downloads go to a ``.part`` file
that is renamed only when complete, with ``timeout`` seconds per socket operation; an unreachable
URL is a ``WeightsError`` naming it. ``read_weights_file(path)`` dispatches on the format:
``.pth``/``.pt`` (torch, tensors only), ``.pkl`` (Detectron2/Caffe2 pickles) and ``.pdparams``
(Paddle, read without Paddle into numpy arrays).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import WeightsError

D2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
FOLDER_NAMES = ("model.pth", "model_final.pth", "best_model/model.pth", "model.pdparams")
SUFFIXES = (".pth", ".pt", ".pkl", ".pdparams")
PADDLE_META_KEY = "StructuredToParameterName@@"


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "weights"


def is_url(s: str | os.PathLike) -> bool:
    return str(s).startswith(("http://", "https://", "detectron2://"))


def download(url: str, timeout: float = 15.0, progress: bool = True) -> Path:
    """Fetch ``url`` into the cache (reused when already there); atomic, with a progress bar."""
    if url.startswith("detectron2://"):
        url = D2_PREFIX + url[len("detectron2://") :]
    name = Path(urllib.request.url2pathname(url.split("?")[0])).name or "weights.pth"
    target = cache_dir() / hashlib.sha1(url.encode()).hexdigest()[:12] / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            from tqdm.auto import tqdm

            total = int(resp.headers.get("Content-Length") or 0) or None
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
            with (
                os.fdopen(fd, "wb") as f,
                tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", disable=not progress) as bar,
            ):
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and os.path.getsize(tmp) != total:
                raise OSError(f"incomplete download ({os.path.getsize(tmp)} of {total} bytes)")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        reason = getattr(e, "reason", e)
        raise WeightsError(
            f"cannot download weights from {url}: {reason} (timeout {timeout:g} s). "
            "Download the file elsewhere and pass its local path."
        ) from e
    return target


def resolve_weights(weights: str | os.PathLike, timeout: float = 15.0, suffixes: tuple[str, ...] = SUFFIXES) -> Path:
    """A local weights file for ``weights`` (file, folder or URL); ``WeightsError`` if there is none."""
    w = str(weights)
    if is_url(w):
        return download(w, timeout)
    p = Path(w).expanduser()
    if p.is_dir():
        for name in FOLDER_NAMES:
            if (p / name).is_file() and (p / name).suffix in suffixes:
                return p / name
        pd = sorted(p.glob("*.pdparams")) if ".pdparams" in suffixes else []
        if len(pd) == 1:
            return pd[0]
        raise WeightsError(
            f"{p}: folder holds no model.pth or model_final.pth"
            + (" or single .pdparams file" if ".pdparams" in suffixes else "")
        )
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    if p.suffix not in suffixes:
        raise WeightsError(f"{p}: expected a weights file ending in {', '.join(suffixes)}")
    return p


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only (a .pdparams file holds nothing else)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a .pdparams file")


def read_pdparams(path: str | os.PathLike) -> dict:
    """A ``.pdparams`` file as ``{name: np.ndarray}`` (Paddle's ``@@`` bookkeeping key dropped)."""
    import numpy as np

    with open(path, "rb") as f:
        obj = _RestrictedUnpickler(io.BytesIO(f.read())).load()
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if k == PADDLE_META_KEY:
            continue
        if not isinstance(v, np.ndarray):
            raise WeightsError(f"{path}: entry {k!r} is {type(v).__name__}, not a numpy array")
        out[k] = v
    return out


def write_pdparams(params: dict, path: str | os.PathLike) -> None:
    """Write ``{name: array}`` in the ``.pdparams`` layout (protocol 4, with the ``@@`` key)."""
    import numpy as np

    d = {k: np.ascontiguousarray(v) for k, v in params.items()}
    d[PADDLE_META_KEY] = {k: k for k in params}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)


def read_weights_file(path: str | os.PathLike) -> dict:
    """The checkpoint as a dict with ``"model"`` (a state dict); ``.pdparams`` gives numpy arrays
    under ``"model"`` and ``"format": "pdparams"``. Any failure to read is a ``WeightsError``."""
    path = Path(path)
    try:
        if path.suffix == ".pdparams":
            return {"model": read_pdparams(path), "format": "pdparams"}
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        else:
            import torch

            data = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read is the same error for the user
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: not a checkpoint dict")
    data = dict(data) if "model" in data else {"model": data}
    data.setdefault("format", "pkl" if path.suffix == ".pkl" else "torch")
    return data


def checkpoint_meta(ck: dict) -> dict | None:
    """The workbench metadata of a checkpoint (model name, classes …), wherever it was stored."""
    if isinstance(ck.get("workbench"), dict):
        return ck["workbench"]
    extra = ck.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get("workbench"), dict):
        return extra["workbench"]
    return None


def save_weights_file(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (a hidden temp file, then a rename)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


__all__ = [
    "cache_dir",
    "is_url",
    "download",
    "resolve_weights",
    "read_weights_file",
    "read_pdparams",
    "write_pdparams",
    "checkpoint_meta",
    "save_weights_file",
]
