"""Where weights come from, for every model family: a local file or folder, a URL, the cache,
official pretrained weights by name; and loading them into a network with a report.

``resolve_weights(w)`` gives a local file: a file as it is; a folder holding ``model.pth``,
``model_final.pth``, ``best_model/model.pth`` or a single ``.pdparams`` (a training run folder
``runs/x/train`` stands for the latest run of its series, ``train``, ``train-2`` …, and
``runs/x/latest`` for the run ``runs/x/latest.json`` names: ``run_dir.latest_run``; weights a run
should have written but did not are ``NoTrainedModelError``: "train first"); a URL (``http(s)://`` or
Detectron2's ``detectron2://`` model-zoo prefix) downloaded once into the cache,
``~/.cache/workbench/weights`` (``WORKBENCH_CACHE`` overrides). ``weights="coco"`` is resolved by
the registry (``models.registry.resolve_model_weights``) to the official checkpoint of the model
name (``PretrainedWeights``, declared by each family in its ``names.py``).

Downloads (``download``) go to a ``.part`` file that is renamed only when complete (its size
checked against ``Content-Length`` and against the published size/sha256 when there is one), with
``timeout`` seconds per socket operation and a progress bar. Next to the file a ``<file>.json``
records its size and sha256; a cache hit checks the file against it, and a truncated or corrupt
cached file is deleted and downloaded again (with a warning). ``WORKBENCH_WEIGHTS_MIRROR``
(e.g. ``http://mirror.local:8000/``) replaces the scheme and host of the official weights hosts
(``OFFICIAL_HOSTS``), like ``HF_ENDPOINT`` does for the Hugging Face hub. An unreachable URL is
a one-line ``WeightsError`` naming it and saying how to pass a local file instead.

``read_weights_file(path)`` dispatches on the format: ``.pth``/``.pt`` (torch, tensors only),
``.pkl`` (Detectron2/Caffe2 pickles) and ``.pdparams`` (Paddle, read without Paddle into numpy
arrays). ``load_matching(net, state_dict, class_specific, ...)`` loads every tensor whose name and
shape match, re-initialises the class-specific ones when the classes differ, and returns a
``LoadReport`` (loaded / skipped with the reason / missing / unexpected) that it logs: the one way
every family loads initial weights.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import pickle
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.io import file_sha256
from .errors import NoTrainedModelError, WeightsError
from .run_dir import RunDir, latest_run, no_trained_model

logger = logging.getLogger("workbench.weights")

D2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
FOLDER_NAMES = ("model.pth", "model_final.pth", "best_model/model.pth", "model.pdparams")
SUFFIXES = (".pth", ".pt", ".pkl", ".pdparams")
PADDLE_META_KEY = "StructuredToParameterName@@"
COCO = "coco"
MIRROR_ENV = "WORKBENCH_WEIGHTS_MIRROR"
# the hosts of the official weights (Detectron2's model zoo, PaddleX/PaddleDetection's buckets):
# WORKBENCH_WEIGHTS_MIRROR replaces these, and only these
OFFICIAL_HOSTS = (
    "dl.fbaipublicfiles.com",
    "paddle-model-ecology.bj.bcebos.com",
    "paddledet.bj.bcebos.com",
    "bj.bcebos.com",
)
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class PretrainedWeights:
    """The official pretrained weights of one model name: where they are published, by whom, and
    what they hold. ``size``/``sha256`` are checked when the source publishes them (``None``: it
    publishes none; the download is then checked against ``Content-Length`` and recorded)."""

    url: str
    source: str  # who publishes them (and where the URL is listed)
    classes: str = COCO  # the classes they predict: COCO's 80 (engine.classes.COCO_NAMES / COCO_CATEGORY_IDS)
    size: int | None = None
    sha256: str | None = None
    note: str = ""  # what they are (the upstream config, its published COCO AP)

    @property
    def filename(self) -> str:
        return self.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def is_coco(weights: Any) -> bool:
    """Whether ``weights`` asks for the official COCO weights of the model (``"coco"``)."""
    return isinstance(weights, str) and weights.strip().lower() == COCO


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "weights"


def is_url(s: str | os.PathLike) -> bool:
    return str(s).startswith(("http://", "https://", "detectron2://"))


def mirrored(url: str) -> str:
    """``url`` fetched through ``WORKBENCH_WEIGHTS_MIRROR`` when it is set and ``url`` is on an
    official host: the mirror's scheme, host (and path prefix) replace the URL's scheme and host."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    parts = urllib.parse.urlsplit(url)
    if not mirror or parts.hostname not in OFFICIAL_HOSTS:
        return url
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _local_hint(url: str, name: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or url
    return (
        f"Download {url} elsewhere and pass the local file instead: weights='/path/to/{name}' "
        f"(command line: -o Train.pretrain_weight_path=/path/to/{name}, or Predict.model_dir / "
        f"Evaluate.weight_path), or set {MIRROR_ENV} to a mirror of {host}"
    )


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + SIDECAR_SUFFIX)


def _cached_problem(target: Path, size: int | None, sha256: str | None) -> str | None:
    """Why the cached ``target`` cannot be used (``None``: it is what was downloaded)."""
    actual = target.stat().st_size
    try:
        rec = json.loads(_sidecar(target).read_text())
    except FileNotFoundError:
        rec = None
    except (OSError, ValueError):
        return f"unverifiable (unreadable record {_sidecar(target).name})"
    want_size = size if size is not None else (rec or {}).get("size")
    if want_size is not None and actual != int(want_size):
        return f"truncated or changed ({actual} bytes, {int(want_size)} expected)"
    want_sha = sha256 or (rec or {}).get("sha256")
    if want_sha is None:
        # a file without a record was written by an older version, which also renamed it into
        # place only when complete: record what it is now, so later hits are checked
        _write_sidecar(target, None, actual, file_sha256(target))
        logger.info("recorded the size and sha256 of the cached weights %s", target)
        return None
    digest = file_sha256(target)
    if digest != want_sha.lower():
        return f"corrupt (sha256 {digest[:12]}…, {want_sha[:12]}… expected)"
    return None


def _write_sidecar(target: Path, url: str | None, size: int, digest: str) -> None:
    from ..utils.io import atomic_write_json

    atomic_write_json(
        _sidecar(target), {"url": url, "size": size, "sha256": digest, "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S")}
    )


def download(
    url: str,
    timeout: float = 15.0,
    progress: bool = True,
    *,
    size: int | None = None,
    sha256: str | None = None,
    cache: Path | None = None,
    what: str = "weights",
    hint: str | None = None,
    error: type[Exception] = WeightsError,
) -> Path:
    """Fetch ``url`` into the cache (reused when already there and intact); atomic, with a progress bar.

    ``size``/``sha256``: what the source publishes, checked when given. The cache path depends on
    ``url`` only, so a mirror (``WORKBENCH_WEIGHTS_MIRROR``) fills the same cache. ``cache`` (default
    ``cache_dir()``), ``what``, ``hint`` and ``error`` let other downloads (``predict``'s image URLs)
    share this one: what the error names, how to do without, and its class."""
    if url.startswith("detectron2://"):
        url = D2_PREFIX + url[len("detectron2://") :]
    fetch = mirrored(url)
    via = f" (mirror of {url})" if fetch != url else ""
    name = Path(urllib.request.url2pathname(url.split("?")[0])).name or "weights.pth"
    target = (cache or cache_dir()) / hashlib.sha1(url.encode()).hexdigest()[:12] / name
    if target.is_file():
        problem = _cached_problem(target, size, sha256)
        if problem is None:
            return target
        logger.warning("the cached %s %s: %s; deleting it and downloading %s again", what, target, problem, fetch)
        target.unlink()
        _sidecar(target).unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with urllib.request.urlopen(fetch, timeout=timeout) as resp:
            from tqdm.auto import tqdm

            total = int(resp.headers.get("Content-Length") or 0) or None
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
            h = hashlib.sha256()
            with (
                os.fdopen(fd, "wb") as f,
                tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", disable=not progress) as bar,
            ):
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            got = os.path.getsize(tmp)
            if total is not None and got != total:
                raise OSError(f"incomplete download ({got} of {total} bytes, the Content-Length)")
            if size is not None and got != size:
                raise OSError(f"wrong size ({got} bytes, the source publishes {size})")
            digest = h.hexdigest()
            if sha256 is not None and digest != sha256.lower():
                raise OSError(f"sha256 mismatch ({digest[:12]}…, the source publishes {sha256[:12]}…)")
        _write_sidecar(target, url, got, digest)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        _sidecar(target).unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise error(
            f"cannot download {what} from {fetch}{via}: {reason} (timeout {timeout:g} s); nothing was kept in "
            f"the cache. {hint or _local_hint(url, name)}."
        ) from e
    return target


def fetch_pretrained(entry: PretrainedWeights, timeout: float = 15.0, progress: bool = True) -> Path:
    """The local file of official pretrained weights (downloaded into the cache once)."""
    return download(entry.url, timeout, progress, size=entry.size, sha256=entry.sha256)


def resolve_weights(weights: str | os.PathLike, timeout: float = 15.0, suffixes: tuple[str, ...] = SUFFIXES) -> Path:
    """A local weights file for ``weights`` (file, folder or URL); ``WeightsError`` if there is none."""
    w = str(weights)
    if is_url(w):
        return download(w, timeout)
    p = latest_run(Path(w).expanduser())  # a run folder of a series: its latest run (run_dir.latest_run)
    run = RunDir(p)
    if run.train_result.is_file() and run.has_weights():
        return run.eval_weights()  # a training run: its best model, else its final weights
    if p.is_dir():
        for name in FOLDER_NAMES:
            if (p / name).is_file() and (p / name).suffix in suffixes:
                return p / name
        pd = sorted(p.glob("*.pdparams")) if ".pdparams" in suffixes else []
        if len(pd) == 1:
            return pd[0]
        if (p / RunDir.TRAIN_RESULT).is_file() or p.name == RunDir.BEST_DIR:
            raise NoTrainedModelError(no_trained_model(p))  # a run without weights (yet)
        raise WeightsError(
            f"{p}: folder holds no model.pth or model_final.pth"
            + (" or single .pdparams file" if ".pdparams" in suffixes else "")
        )
    if not p.is_file():
        if p.suffix not in SUFFIXES or p.name in (RunDir.BEST_WEIGHTS, RunDir.FINAL):
            raise NoTrainedModelError(no_trained_model(p))  # what a training run writes, not written
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


def _shape(v) -> tuple[int, ...]:
    return tuple(int(x) for x in getattr(v, "shape", ()))


@dataclass
class LoadReport:
    """What ``load_matching`` did: the tensors loaded, those skipped (name -> why), the model's
    tensors the checkpoint lacks (``missing``), the checkpoint's the model does not have
    (``unexpected``), and those dropped on purpose (``ignored``: name -> why)."""

    source: str = ""
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    class_specific_reinitialised: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every tensor of the model came from the checkpoint and the checkpoint had nothing else."""
        return not (self.skipped or self.missing or self.unexpected)

    def summary(self) -> str:
        n_cls = len(self.class_specific_reinitialised)
        return (
            f"weights {self.source}: {len(self.loaded)} tensors loaded, {n_cls} re-initialised "
            f"(class-specific), {len(self.skipped) - n_cls} skipped (shape differs), {len(self.missing)} "
            f"missing from the checkpoint, {len(self.unexpected)} unexpected in it"
            + (f", {len(self.ignored)} ignored" if self.ignored else "")
        )

    def log(self, log: logging.Logger | None = None) -> None:
        """The summary, then one line per skipped tensor and the missing/unexpected names."""
        log = log or logger
        log.info("%s", self.summary())
        for k, why in self.skipped.items():
            (log.info if k in self.class_specific_reinitialised else log.warning)("  %s: %s", k, why)
        if self.missing:
            log.warning("  missing from the checkpoint (left as initialised): %s", ", ".join(self.missing))
        if self.unexpected:
            log.warning("  unexpected in the checkpoint (not used): %s", ", ".join(self.unexpected))
        for k, why in self.ignored.items():
            log.info("  %s: %s", k, why)

    def to_dict(self) -> dict:
        """For ``train_result.json``: counts of what was loaded, every name that was not."""
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "skipped": dict(self.skipped),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "ignored": dict(self.ignored),
        }


def load_matching(
    net,
    state_dict: Mapping[str, Any],
    class_specific: Iterable[str] = (),
    *,
    same_classes: bool = True,
    ignore: Mapping[str, str] | None = None,
    source: str = "",
    log: logging.Logger | None = None,
) -> LoadReport:
    """Load into ``net`` every tensor of ``state_dict`` whose name and shape match the model's.

    ``class_specific``: name prefixes of the class-specific tensors (score heads, class
    embeddings …); they are re-initialised (left as built) when ``same_classes`` is false, and
    when their shape differs. Any other tensor whose shape differs is skipped with the two shapes
    as the reason. ``ignore``: name substring -> why, for checkpoint entries that are known not to
    be parameters here (e.g. old Detectron2 buffers). Values may be tensors or numpy arrays; a
    ``module.`` prefix (DistributedDataParallel) is stripped. The report is logged (``log``,
    default ``workbench.weights``) and returned."""
    import torch

    prefixes = tuple(class_specific)
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    own = net.state_dict()
    rep = LoadReport(source=str(source))
    keep = {}
    for k in sd:
        if k in own:
            continue
        why = next((w for pat, w in (ignore or {}).items() if pat in k), None)
        if why is not None:
            rep.ignored[k] = why
        else:
            rep.unexpected.append(k)
    for k, mine in own.items():
        if k not in sd:
            rep.missing.append(k)
            continue
        v = sd[k]
        cls = k.startswith(prefixes) if prefixes else False
        theirs, want = _shape(v), _shape(mine)
        if theirs != want:
            reason = f"checkpoint {theirs} vs model {want}"
            rep.skipped[k] = reason + (
                ", class-specific: re-initialised" if cls else ", shape differs: left as initialised"
            )
            if cls:
                rep.class_specific_reinitialised.append(k)
            continue
        if cls and not same_classes:
            rep.skipped[k] = (
                f"checkpoint {theirs} vs model {want}, class-specific and the classes differ: re-initialised"
            )
            rep.class_specific_reinitialised.append(k)
            continue
        keep[k] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        rep.loaded.append(k)
    net.load_state_dict(keep, strict=False)
    rep.log(log)
    return rep


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
    "COCO",
    "MIRROR_ENV",
    "PretrainedWeights",
    "LoadReport",
    "load_matching",
    "is_coco",
    "mirrored",
    "fetch_pretrained",
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
