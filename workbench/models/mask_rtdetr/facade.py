"""The Mask-RT-DETR family's model object: ``create_model(name, ...)`` -> ``MaskRTDETRModel``.

Same API as the Detectron2 family (``workbench.models.detectron2.model``): ``.train(...)``,
``.evaluate(...)`` and ``.predict(...)`` yielding ``workbench.engine.result.Result``, plus
``.export_onnx(path)``. Differences: ``epochs_iters`` counts **epochs** (as PaddleX does for this
family), ``eval_interval``/``save_interval`` count epochs too.

Weights (``create_model(weights=...)``):

* a checkpoint written by this facade's training (``model_final.pth``, ``best_model/`` or
  ``best_model/model.pth``, ``model_last.pth``): the variant, the small-config overrides, the input
  size and the classes (names and dataset category ids) are stored in it;
* a PaddleDetection/PaddleX ``.pdparams`` (converted on the fly, no Paddle needed) or a ``.pth``
  written by ``convert.py``: the number of classes comes from the weights; the class names are
  unknown unless given (``class_names=``); 80 classes are taken to be COCO's (names and ids);
* a URL: downloaded with ``url_timeout`` seconds per socket operation into
  ``~/.cache/workbench/weights`` (``WORKBENCH_CACHE``); an unreachable URL raises ``WeightsError``.

Training follows PaddleDetection's recipe (``engine.py``): AdamW (weight decay 1e-4), backbone lr
multipliers, linear warmup, global-norm clipping 0.1, EMA (0.9999, warmup 2000 updates) — the EMA
weights are the ones evaluated and saved as ``model_final.pth`` / ``best_model/model.pth``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ...data.dataset import Dataset
from ...engine.inputs import expand_inputs as _expand_inputs, is_folder_input as _is_folder_input, \
    load_input as _load
from ...engine.result import Result
from ...utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger("workbench.mask_rtdetr")

MODEL_NAMES = {f"Mask-RT-DETR-{v}": v for v in ("S", "M", "L", "X", "H")}
# PaddleDetection's BatchRandomResize sizes for 640 px training (scaled for other input sizes).
MULTI_SCALE_640 = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)
# Weights that hold the class-specific layers (re-initialised when fine-tuning on other classes).
# (one score head is shared by the encoder and decoder in this port)
CLASS_SPECIFIC = ("transformer.score_head.", "transformer.denoising_class_embed.")

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush"]


class WeightsError(RuntimeError):
    """Weights that cannot be found, downloaded or read."""


class ClassMismatchError(ValueError):
    """The classes of the weights and of a dataset differ."""


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


# ------------------------------------------------------------------------ small helpers
@dataclass
class Classes:
    category_ids: list[int]
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "Classes":
        return cls([int(c.id) for c in ds.categories], [str(c.name) for c in ds.categories])

    @classmethod
    def default(cls, n: int) -> "Classes":
        if n == len(COCO_NAMES):
            return cls(list(COCO_CATEGORY_IDS), list(COCO_NAMES))
        return cls(list(range(1, n + 1)), [f"class_{i}" for i in range(1, n + 1)])

    def same(self, other: "Classes") -> bool:
        return list(zip(self.category_ids, self.names)) == list(zip(other.category_ids, other.names))

    def describe(self) -> str:
        return ", ".join(f"{i}:{n}" for i, n in zip(self.category_ids, self.names))


def resolve_device(device: str | None) -> str:
    """``None`` -> the GPU if there is one; ``gpu``/``gpu:0``/``cuda:0``/``cpu``."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = str(device).strip().lower()
    if d.startswith("gpu"):
        d = "cuda" + d[3:]
    if d.startswith("cuda"):
        if "," in d:
            d = "cuda"
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for a GPU but torch sees none; use device='cpu'")
    elif d != "cpu":
        raise ValueError(f"unknown device {device!r} (use cpu, gpu, gpu:N)")
    return d


def _is_url(s: str) -> bool:
    return str(s).startswith(("http://", "https://"))


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "weights"


def download(url: str, timeout: float = 15.0) -> Path:
    """Fetch ``url`` into the cache (``timeout`` seconds per socket operation); cached files are reused."""
    name = Path(urllib.request.url2pathname(url.split("?")[0])).name or "weights.pth"
    target = cache_dir() / hashlib.sha1(url.encode()).hexdigest()[:12] / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(resp, f)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        reason = getattr(e, "reason", e)
        raise WeightsError(f"cannot download weights from {url}: {reason} (timeout {timeout:g} s). "
                           "Download the file elsewhere and pass its local path.") from e
    return target


def resolve_weights(weights: str | os.PathLike, timeout: float = 15.0) -> Path:
    w = str(weights)
    if _is_url(w):
        return download(w, timeout)
    p = Path(w).expanduser()
    if p.is_dir():
        for name in ("model.pth", "model_final.pth", "best_model/model.pth", "model.pdparams"):
            if (p / name).is_file():
                return p / name
        pd = sorted(p.glob("*.pdparams"))
        if len(pd) == 1:
            return pd[0]
        raise WeightsError(f"{p}: folder holds no model.pth, model_final.pth or single .pdparams file")
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    if p.suffix not in (".pth", ".pt", ".pdparams"):
        raise WeightsError(f"{p}: expected a .pth checkpoint or a Paddle .pdparams file")
    return p


def _torch_load(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same error for the user
        raise WeightsError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: not a checkpoint dict")
    return data if "model" in data else {"model": data}


def _arch_overrides(cfg: dict) -> dict:
    """The entries of a full model config that differ from the variant's defaults."""
    from .model import variant_config

    base = variant_config(cfg["variant"], cfg["num_classes"])
    out = {}
    for k, v in cfg.items():
        if k in ("variant", "num_classes"):
            continue
        bv = base.get(k, None)
        if k not in base or (list(v) if isinstance(v, (list, tuple)) else v) != \
                (list(bv) if isinstance(bv, (list, tuple)) else bv):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def read_weights(path: Path, variant: str) -> dict:
    """``{"state_dict", "num_classes", "overrides", "meta"}`` from a .pdparams / .pth file."""
    if path.suffix == ".pdparams":
        from . import convert

        params = convert.load_pdparams(path)
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
    ck = _torch_load(path)
    sd = ck["model"]
    meta = (ck.get("extra") or {}).get("workbench") if isinstance(ck.get("extra"), dict) else None
    file_variant = (meta or {}).get("variant") or ck.get("variant") or (ck.get("config") or {}).get("variant")
    if file_variant and str(file_variant).upper() != variant:
        raise WeightsError(f"{path} holds Mask-RT-DETR-{str(file_variant).upper()} weights, "
                           f"not Mask-RT-DETR-{variant}")
    if "transformer.score_head.bias" not in sd:
        raise WeightsError(f"{path}: not a Mask-RT-DETR checkpoint (no transformer.score_head.bias)")
    n = int(sd["transformer.score_head.bias"].shape[0])
    if meta and "overrides" in meta:
        overrides = dict(meta["overrides"])
    elif ck.get("config"):
        cfg = dict(ck["config"])
        cfg.setdefault("variant", variant)
        cfg.setdefault("num_classes", n)
        overrides = _arch_overrides(cfg)
    else:
        overrides = {}
    return {"state_dict": sd, "num_classes": n, "overrides": overrides, "meta": meta}


# ------------------------------------------------------------------------ factory
def create_model(name: str, weights: str | os.PathLike | None = None, device: str | None = None, *,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 category_ids: list[int] | None = None, input_size: int | None = None,
                 url_timeout: float = 15.0, **overrides) -> "MaskRTDETRModel":
    """Build ``Mask-RT-DETR-{S,M,L,X,H}``.

    ``weights``: see the module docstring (``None``: random init, classes from the training
    dataset). ``num_classes``/``class_names``/``category_ids``: the classes of a model without
    stored class metadata (default for a randomly initialised model: 80, COCO's). ``input_size``:
    square side the images are resized to (default 640, or the trained model's). ``overrides``: model
    config keys for small configurations (``num_queries``, ``num_decoder_layers``,
    ``num_denoising``, ``freeze_norm``, ``num_sample_points`` …, see ``model.COMMON``/``VARIANTS``);
    they are stored in the checkpoints this model writes, so a trained small model reloads as it was.
    """
    if name not in MODEL_NAMES:
        from ..registry import _NAME_TO_FAMILY, check_name

        if name not in _NAME_TO_FAMILY:
            check_name(name)  # raises UnknownModelError listing the valid names
        raise ValueError(f"{name} is not a Mask-RT-DETR model (valid: {', '.join(MODEL_NAMES)})")
    variant = MODEL_NAMES[name]
    from .model import variant_config

    variant_config(variant, 80, **overrides)  # validate the override names now
    dev = resolve_device(device)
    state_dict = meta = None
    weights_path = None
    stored_overrides: dict = {}
    n_weights = None
    if weights is not None:
        weights_path = resolve_weights(weights, timeout=url_timeout)
        info = read_weights(weights_path, variant)
        state_dict, meta, n_weights = info["state_dict"], info["meta"], info["num_classes"]
        stored_overrides = info["overrides"]
        if meta and meta.get("model_name") not in (None, name):
            raise WeightsError(f"{weights_path} holds weights of {meta['model_name']}, not {name}")
    classes = None
    if meta and meta.get("class_names"):
        classes = Classes([int(i) for i in meta["category_ids"]], [str(n) for n in meta["class_names"]])
    if class_names is not None:
        ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        if len(ids) != len(class_names):
            raise ValueError("category_ids and class_names differ in length")
        classes = Classes([int(i) for i in ids], [str(n) for n in class_names])
    if n_weights is not None:
        if num_classes is not None and int(num_classes) != n_weights:
            raise ValueError(f"num_classes={num_classes} but the weights {weights_path} have {n_weights} classes")
        if classes is not None and len(classes) != n_weights:
            raise ValueError(f"{len(classes)} class names given but the weights {weights_path} have "
                             f"{n_weights} classes")
        if classes is None:
            classes = Classes.default(n_weights)
    elif classes is None and num_classes is not None:
        classes = Classes.default(int(num_classes))
    merged = {**stored_overrides, **overrides}
    if state_dict is not None and overrides:
        # architecture keys that change parameter shapes must match the weights: loading tells
        from .model import build_mask_rtdetr

        with torch.device("meta"):
            ref = build_mask_rtdetr(variant, n_weights, **merged).state_dict()
        bad = [k for k in ref if k not in state_dict or tuple(state_dict[k].shape) != tuple(ref[k].shape)]
        extra = [k for k in state_dict if k not in ref]
        if bad or extra:
            raise WeightsError(f"the overrides {overrides} do not fit the weights {weights_path} "
                               f"({len(bad)} missing/mis-shaped and {len(extra)} unexpected entries, e.g. "
                               f"{(bad + extra)[:3]})")
    size = int(input_size or (meta or {}).get("input_size") or 640)
    if size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {size}")
    return MaskRTDETRModel(name, variant=variant, weights=str(weights_path) if weights_path else None, device=dev,
                           classes=classes, overrides=merged, input_size=size, state_dict=state_dict, meta=meta)


# ------------------------------------------------------------------------ model object
class MaskRTDETRModel:
    family = "mask_rtdetr"

    def __init__(self, name: str, *, variant: str, weights: str | None, device: str, classes: Classes | None,
                 overrides: dict, input_size: int, state_dict: dict | None = None, meta: dict | None = None):
        self.name = name
        self.variant = variant
        self.weights = weights
        self.device = device
        self.classes = classes
        self.overrides = dict(overrides)
        self.input_size = int(input_size)
        self.meta = meta
        self._state_dict = state_dict
        self._net = None

    def __repr__(self) -> str:
        cls = self.classes.names if self.classes else None
        return (f"MaskRTDETRModel({self.name!r}, weights={self.weights!r}, device={self.device!r}, "
                f"input_size={self.input_size}, overrides={self.overrides}, classes={cls})")

    # ------------------------------------------------------------------ network
    @property
    def net(self) -> torch.nn.Module:
        """The ``torch.nn.Module`` (``MaskRTDETR``), built on first use."""
        return self.build()

    def build(self, num_classes: int | None = None) -> torch.nn.Module:
        if self._net is not None:
            return self._net
        from .model import build_mask_rtdetr

        if self.classes is None:
            self.classes = Classes.default(int(num_classes or 80))
        net = build_mask_rtdetr(self.variant, len(self.classes), **self.overrides)
        if self._state_dict is not None:
            net.load_state_dict(self._state_dict, strict=True)
            self._state_dict = None
        self._net = net.to(self.device).eval()
        return self._net

    def _meta(self) -> dict:
        return {"model_name": self.name, "family": self.family, "variant": self.variant,
                "input_size": self.input_size, "overrides": dict(self.overrides),
                "category_ids": list(self.classes.category_ids), "class_names": list(self.classes.names)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights with their metadata (variant, overrides, input size, classes)."""
        from .engine import save_checkpoint

        return save_checkpoint(path, self.net, extra={"workbench": self._meta()})

    def export_onnx(self, path: str | os.PathLike, image_size: int | None = None, num_top_queries: int = 100,
                    opset: int = 17) -> Path:
        """ONNX graph: images [1, 3, S, S] in [0, 1] -> scores, labels (0-based), boxes, mask logits."""
        from .export import export_onnx

        net = copy.deepcopy(self.net).cpu().eval()
        return export_onnx(net, path, image_size=int(image_size or self.input_size),
                           num_top_queries=num_top_queries, opset=opset)

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def _predict_arrays(self, net, images: list[np.ndarray], paths: list[str | None], threshold: float,
                        mask_threshold: float, soft: bool = True, keep_image: bool = True,
                        num_top_queries: int = 100) -> list[Result]:
        from .data import to_model_input
        from .postprocess import select_topk

        dev = next(net.parameters()).device
        was_training = net.training
        net.eval()
        try:
            x = torch.stack([to_model_input(im, self.input_size) for im in images]).to(dev)
            out = net(x)
        finally:
            net.train(was_training)
        scores, labels, qidx, boxes = select_topk(out["pred_logits"], out["pred_boxes"], num_top_queries)
        cids = np.asarray(self.classes.category_ids, np.int64)
        results = []
        for i, (im, path) in enumerate(zip(images, paths)):
            h, w = im.shape[:2]
            keep = torch.nonzero(scores[i] >= threshold).flatten()
            s, lab, q = scores[i][keep], labels[i][keep], qidx[i][keep]
            b = boxes[i][keep] * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
            b[:, 0::2] = b[:, 0::2].clamp(0, w)
            b[:, 1::2] = b[:, 1::2].clamp(0, h)
            if len(keep):
                m = F.interpolate(out["pred_masks"][i][q].unsqueeze(0).float(), size=(h, w), mode="bilinear",
                                  align_corners=False)[0].sigmoid()
            else:
                m = torch.zeros((0, h, w), device=dev)
            lab_np = lab.cpu().numpy()
            kw: dict = {}
            if soft:
                kw["mask_probs"] = (m * 255).round().to(torch.uint8).cpu().numpy()
            else:
                kw["masks"] = (m >= mask_threshold).cpu().numpy()
            results.append(Result(
                input_path=path, image_size=(h, w), boxes=b.cpu().numpy(), scores=s.cpu().numpy(),
                class_ids=cids[lab_np] if len(lab_np) else np.zeros(0, np.int64),
                class_names=[self.classes.names[j] for j in lab_np], mask_threshold=mask_threshold,
                threshold=threshold, image=im if keep_image else None, model_name=self.name, **kw))
        return results

    def predict(self, inputs: Any, batch_size: int = 1, threshold: float = 0.5, mask_threshold: float = 0.5,
                progress: bool | None = None) -> Iterator[Result]:
        """Yield one ``Result`` per image. ``inputs``: an image path, a folder, a list of those, an RGB
        ``numpy`` array (H, W, 3 uint8), a PIL image or a list mixing them. Detections under
        ``threshold`` are dropped; masks keep their soft probabilities (``Result.mask_probs``)."""
        from tqdm.auto import tqdm

        items = list(_expand_inputs(inputs))
        net = self.net
        show = progress if progress is not None else (len(items) > 1 and _is_folder_input(inputs))
        bar = tqdm(total=len(items), desc=f"predict {self.name}", unit="img", disable=not show)
        bs = max(1, int(batch_size))
        try:
            for i in range(0, len(items), bs):
                images, paths = zip(*[_load(x) for x in items[i:i + bs]])
                for r in self._predict_arrays(net, list(images), list(paths), threshold, mask_threshold):
                    bar.update(1)
                    yield r
        finally:
            bar.close()

    # ------------------------------------------------------------------ evaluate
    def _coco_predictions(self, net, ds: Dataset, batch_size: int = 1) -> list[dict]:
        """COCO result dicts (top-100 per image, no score threshold) of ``net`` on ``ds``."""
        dets: list[dict] = []
        ims = list(ds.images)
        for i in range(0, len(ims), max(1, batch_size)):
            chunk = ims[i:i + batch_size]
            arrays = [ds.load_image(im) for im in chunk]
            for im, r in zip(chunk, self._predict_arrays(net, arrays, [None] * len(chunk), 0.0, 0.5, soft=False,
                                                         keep_image=False)):
                dets.extend(r.to_coco(im.id))
        return dets

    def _check_classes(self, ds: Dataset, what: str) -> None:
        theirs = Classes.from_dataset(ds)
        if not self.classes.same(theirs):
            raise ClassMismatchError(
                f"class mismatch: the model {self.name} ({self.weights}) has classes [{self.classes.describe()}] but "
                f"{what} has [{theirs.describe()}] (id:name). Use weights trained on these classes, or "
                "fine-tune with train(..., ignore_class_mismatch=True).")

    def evaluate(self, dataset_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                 split: str = "val", batch_size: int = 1) -> dict:
        """COCO bbox and segm AP (AP, AP50, AP75, APs/m/l, AR…, per class) on a split of a
        PaddleX-layout dataset via ``workbench.evaluation.evaluate``; ``<output>/evaluate_result.json``
        (with the report) when ``output`` is given."""
        from ...evaluation import evaluate

        t0 = time.perf_counter()
        ds = Dataset.load_paddlex(dataset_dir, split)
        if self.weights is None and self._net is None:
            raise ValueError(f"{self.name} has no trained weights; evaluate needs weights=... in create_model")
        self._check_classes(ds, f"dataset {ds.source}")
        dets = self._coco_predictions(self.net, ds, batch_size)
        info = {"model_name": self.name, "weights": self.weights, "dataset_dir": str(dataset_dir), "split": split}
        report = evaluate(dets, ds, output_dir=output, info=info)  # evaluate_result.json + report.md/html
        return {**report.to_dict(), "wall_time_s": round(time.perf_counter() - t0, 2)}

    # ------------------------------------------------------------------ train
    def train(self, dataset_dir: str | os.PathLike, epochs_iters: int = 20, batch_size: int = 4,
              output: str | os.PathLike = "output", learning_rate: float = 1e-4, input_size: int | None = None,
              resume: bool = False, eval_interval: int = 1, amp: bool = False, device: str | None = None,
              num_processes: int = 1, save_interval: int = 1, log_interval: int = 10, warmup_steps: int = 2000,
              early_stop_patience: int | None = None, num_workers: int = 0, seed: int = 0,
              resume_path: str | None = None, ignore_class_mismatch: bool = False, progress: bool = True,
              multi_scale: bool = True, augment: bool = True, weight_decay: float = 1e-4,
              clip_max_norm: float = 0.1, ema_decay: float = 0.9999, ema_warmup: int = 2000,
              num_sample_points: int | None = None, depth: int | None = None, norm: str | None = None) -> dict:
        """Train on the PaddleX COCO layout in ``dataset_dir`` (train split; val split evaluated).

        ``epochs_iters`` counts **epochs** for this family; ``eval_interval`` and ``save_interval``
        too (``log_interval`` and ``warmup_steps`` count iterations). Writes into ``output``:
        ``train_result.json``, ``train.log``, ``config.yaml``, ``metrics.jsonl`` (per logged iteration
        the losses and lr, per evaluation the val bbox/segm AP), ``model_last.pth`` (full training
        state, for ``resume``), ``model_final.pth`` and ``best_model/model.pth`` (EMA weights; best by
        val **segm** AP). ``resume=True`` continues from ``model_last.pth`` (or ``resume_path``) to the
        same schedule. ``amp`` needs CUDA. ``num_processes`` > 1: DDP in spawned processes (gloo on
        CPU, NCCL on GPUs). Initial weights: this model's ``weights`` (class-specific layers
        re-initialised when the classes differ and the weights carry no class names, or with
        ``ignore_class_mismatch=True``). ``depth``/``norm`` are Detectron2-family options, accepted
        (so one config drives both families) and ignored with a warning. Returns
        ``train_result.json``; afterwards this object holds the best weights.
        """
        if depth is not None or norm is not None:  # config files carry them for every family
            logger.warning("depth=%s / norm=%s ignored: they are Detectron2-family options (Mask-RT-DETR's "
                           "backbone and norms are fixed by the variant)", depth, norm)
        if int(epochs_iters) < 1 or int(save_interval) < 1 or int(batch_size) < 1:
            raise ValueError("epochs_iters, save_interval and batch_size must be at least 1")
        dev = resolve_device(device) if device is not None else self.device
        if amp and not dev.startswith("cuda"):
            raise ValueError("amp=True needs a GPU device (automatic mixed precision is a CUDA feature here)")
        n_proc = int(num_processes)
        if n_proc > 1 and dev.startswith("cuda") and torch.cuda.device_count() < n_proc:
            raise ValueError(f"num_processes={n_proc} but only {torch.cuda.device_count()} GPUs are visible")
        size = int(input_size or self.input_size)
        if size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {size}")
        init_sd = None
        if self.weights is not None:
            init_sd = ({k: v.detach().cpu() for k, v in self._net.state_dict().items()} if self._net is not None
                       else self._state_dict)
        spec = TrainSpec(
            model_name=self.name, variant=self.variant, overrides=dict(self.overrides), dataset_dir=str(dataset_dir),
            output=str(output), epochs=int(epochs_iters), batch_size=int(batch_size),
            learning_rate=float(learning_rate), input_size=size, device=dev, amp=bool(amp), num_processes=n_proc,
            resume=bool(resume), resume_path=resume_path, init_weights=self.weights,
            init_classes=asdict(self.classes) if (self.classes and self.weights) else None,
            init_has_names=bool(self.meta and self.meta.get("class_names")),
            ignore_class_mismatch=bool(ignore_class_mismatch), eval_interval=int(eval_interval),
            save_interval=int(save_interval), log_interval=int(log_interval), warmup_steps=int(warmup_steps),
            early_stop_patience=early_stop_patience, num_workers=int(num_workers), seed=int(seed),
            progress=bool(progress), multi_scale=bool(multi_scale), augment=bool(augment),
            weight_decay=float(weight_decay), clip_max_norm=float(clip_max_norm), ema_decay=float(ema_decay),
            ema_warmup=int(ema_warmup), num_sample_points=num_sample_points)
        res = launch_training(spec, init_sd)
        best = res["paths"].get("best_model") or res["paths"].get("model_final")
        if best:
            trained = create_model(self.name, weights=best, device=self.device)
            self.__dict__.update(trained.__dict__)
        return res


# ------------------------------------------------------------------------ training
@dataclass
class TrainSpec:
    """Everything a training process needs (picklable: it is sent to spawned workers)."""

    model_name: str
    variant: str
    dataset_dir: str
    output: str
    overrides: dict = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 4
    learning_rate: float = 1e-4
    input_size: int = 640
    device: str = "cpu"
    amp: bool = False
    num_processes: int = 1
    resume: bool = False
    resume_path: str | None = None
    init_weights: str | None = None
    init_classes: dict | None = None
    init_has_names: bool = False
    ignore_class_mismatch: bool = False
    eval_interval: int = 1
    save_interval: int = 1
    log_interval: int = 10
    warmup_steps: int = 2000
    early_stop_patience: int | None = None
    num_workers: int = 0
    seed: int = 0
    progress: bool = True
    multi_scale: bool = True
    augment: bool = True
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    ema_decay: float = 0.9999
    ema_warmup: int = 2000
    num_sample_points: int | None = None


def _jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _train_sizes(spec: TrainSpec) -> list[int]:
    if not spec.multi_scale:
        return [spec.input_size]
    return [max(32, int(round(s * spec.input_size / 640 / 32)) * 32) for s in MULTI_SCALE_640]


def _file_logging(path: Path | None):
    import contextlib

    @contextlib.contextmanager
    def cm():
        if path is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a")
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s",
                                               "%m/%d %H:%M:%S"))
        handler.setLevel(logging.INFO)
        old = logger.level
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old)
            handler.close()
    return cm()


def _load_init_weights(net, init_sd: dict, spec: TrainSpec, classes: Classes) -> None:
    """Initial weights; class-specific layers re-initialised when the classes differ."""
    same = False
    if spec.init_classes:
        init_classes = Classes(**spec.init_classes)
        same = init_classes.same(classes)
        if not same and spec.init_has_names and not spec.ignore_class_mismatch:
            raise ClassMismatchError(
                f"class mismatch: weights {spec.init_weights} have classes [{init_classes.describe()}] but dataset "
                f"{spec.dataset_dir} has [{classes.describe()}] (id:name). Use ignore_class_mismatch=True to "
                "re-initialise the class-specific layers and fine-tune.")
    if same:
        net.load_state_dict(init_sd, strict=True)
        return
    own = net.state_dict()
    keep = {k: v for k, v in init_sd.items()
            if k in own and tuple(v.shape) == tuple(own[k].shape) and not k.startswith(CLASS_SPECIFIC)}
    missing, unexpected = net.load_state_dict(keep, strict=False)
    logger.info("initial weights %s: %d tensors loaded, %d re-initialised (class-specific or mis-shaped): %s",
                spec.init_weights, len(keep), len(missing), missing[:10])


def train_main(spec: TrainSpec, init_sd: dict | None = None) -> dict | None:
    """Train in this process (rank of ``torch.distributed`` if initialised); rank 0 returns the result."""
    import random

    import yaml

    from ...evaluation import evaluate
    from .criterion import build_criterion
    from .data import make_loader
    from .engine import ModelEMA, build_optimizer, build_warmup_scheduler, save_checkpoint, train_one_epoch, wrap_ddp
    from .model import build_mask_rtdetr

    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    main = rank == 0
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    result_path = out / "train_result.json"
    last_path = out / "model_last.pth"
    final_path = out / "model_final.pth"
    best_dir = out / "best_model"
    t_start = time.perf_counter()
    if spec.device.startswith("cuda"):
        device = torch.device(f"cuda:{rank}" if distributed else (spec.device if ":" in spec.device else "cuda"))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    with _file_logging(out / "train.log" if main else None):
        train_ds = Dataset.load_paddlex(spec.dataset_dir, "train")
        val_ds = None
        if (Path(spec.dataset_dir) / "annotations" / "instance_val.json").is_file():
            val_ds = Dataset.load_paddlex(spec.dataset_dir, "val")
        classes = Classes.from_dataset(train_ds)
        if not len(classes):
            raise ValueError(f"{train_ds.source}: the dataset has no categories")
        if val_ds is not None and not Classes.from_dataset(val_ds).same(classes):
            raise ClassMismatchError(f"the val split {val_ds.source} has other classes than the train split "
                                     f"{train_ds.source}")
        if not len(train_ds.images):
            raise ValueError(f"{train_ds.source}: the train split has no images")

        torch.manual_seed(spec.seed + rank)
        random.seed(spec.seed + rank)
        np.random.seed(spec.seed + rank)
        net = build_mask_rtdetr(spec.variant, len(classes), **spec.overrides)
        if init_sd is not None and not spec.resume:
            _load_init_weights(net, init_sd, spec, classes)
        net.to(device)
        cfg = dict(net.config)
        n_points = int(spec.num_sample_points or cfg.get("num_sample_points") or 12544)
        criterion = build_criterion(len(classes), num_sample_points=n_points)
        optimizer = build_optimizer(net, lr=spec.learning_rate, weight_decay=spec.weight_decay)
        scheduler = build_warmup_scheduler(optimizer, warmup_steps=spec.warmup_steps)
        ema = ModelEMA(net, decay=spec.ema_decay, warmup=spec.ema_warmup)
        model = wrap_ddp(net, device)
        sizes = _train_sizes(spec)
        loader = make_loader(train_ds, batch_size=spec.batch_size, sizes=sizes, augment=spec.augment,
                             shuffle=True, num_workers=spec.num_workers, distributed=distributed)
        scaler = torch.amp.GradScaler("cuda") if spec.amp else None
        meta = {"model_name": spec.model_name, "family": "mask_rtdetr", "variant": spec.variant,
                "input_size": spec.input_size, "overrides": dict(spec.overrides),
                "category_ids": list(classes.category_ids), "class_names": list(classes.names)}
        resolved = {"Global": {"model": spec.model_name, "dataset_dir": spec.dataset_dir, "output": spec.output,
                               "device": spec.device, "num_processes": spec.num_processes, "seed": spec.seed},
                    "Train": {k: v for k, v in asdict(spec).items()
                              if k not in ("model_name", "dataset_dir", "output", "device", "num_processes",
                                           "seed", "overrides", "init_classes")},
                    "Model": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                    "Criterion": {"num_sample_points": n_points},
                    "Data": {"train_sizes": sizes, "eval_size": spec.input_size,
                             "classes": [{"id": i, "name": n} for i, n in zip(classes.category_ids, classes.names)]}}
        state = {"epoch": 0, "iter": 0, "best": -1.0, "best_epoch": None, "best_metrics": None,
                 "last_metrics": None, "bad_evals": 0}
        if spec.resume:
            path = Path(spec.resume_path) if spec.resume_path else last_path
            if not path.is_file():
                raise FileNotFoundError(f"resume=True but {path} does not exist (no training state to resume)")
            ck = torch.load(path, map_location="cpu", weights_only=True)
            if "optimizer" not in ck or "ema" not in ck:
                raise ValueError(f"{path} is not a training-state checkpoint (no optimizer/EMA state); "
                                 "resume from model_last.pth")
            net.load_state_dict(ck["model"], strict=True)
            ema.load_state_dict(ck["ema"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            state.update(json.loads(ck["extra"]["train_state"]))
            logger.info("resuming from %s after epoch %d of %d", path, state["epoch"], spec.epochs)
        if main:
            atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
            if not spec.resume and metrics_path.exists():
                metrics_path.unlink()
        logger.info("training %s on %s: %d train images, %d val images, %d classes, %d epochs, batch %d x %d "
                    "process(es), sizes %s, device %s", spec.model_name, spec.dataset_dir, len(train_ds.images),
                    len(val_ds.images) if val_ds else 0, len(classes), spec.epochs, spec.batch_size, world, sizes,
                    device)

        def write_result(status: str, error: str | None = None) -> dict:
            res = {
                "done_flag": status in ("done", "stopped_early"), "status": status, "error": error,
                "model_name": spec.model_name, "epochs": state["epoch"], "max_epochs": spec.epochs,
                "iterations": state["iter"], "best_epoch": state["best_epoch"],
                "best_metrics": state["best_metrics"], "final_metrics": state["last_metrics"],
                "classes": [{"id": i, "name": n} for i, n in zip(classes.category_ids, classes.names)],
                "paths": {"output": str(out), "model_final": str(final_path) if final_path.exists() else None,
                          "best_model": str(best_dir) if (best_dir / "model.pth").exists() else None,
                          "last_checkpoint": str(last_path) if last_path.exists() else None,
                          "config": str(out / "config.yaml"), "log": str(out / "train.log"),
                          "metrics": str(metrics_path)},
                "wall_time_s": round(time.perf_counter() - t_start, 2),
                "train_args": {k: v for k, v in asdict(spec).items() if k != "init_classes"},
            }
            atomic_write_json(result_path, res)
            return res

        def save_weights(path: Path, epoch: int, full: bool) -> None:
            extra = {"workbench": meta, "train_state": json.dumps(state)}
            if full:
                save_checkpoint(path, net, ema=ema, optimizer=optimizer, scheduler=scheduler, epoch=epoch, extra=extra)
            else:  # inference weights: the EMA model
                save_checkpoint(path, ema.module, epoch=epoch, extra=extra)

        def evaluate_now(epoch: int) -> bool:
            """Val AP of the EMA weights (rank 0); returns whether to stop early (all ranks agree)."""
            stop = False
            if main and val_ds is not None:
                t0 = time.perf_counter()
                pm = _EvalProxy(spec.model_name, classes, spec.input_size)
                dets = pm._coco_predictions(ema.module, val_ds)
                full = evaluate(dets, val_ds, output_dir=None, analysis=False).metrics
                m = {f"{t}_{k}": full[t][k] for t in ("bbox", "segm") for k in full[t] if k != "per_class"}
                m["per_class_segm_AP"] = {n: v["AP"] for n, v in full["segm"]["per_class"].items()}
                m["eval_time_s"] = round(time.perf_counter() - t0, 3)
                state["last_metrics"] = {"epoch": epoch, "iter": state["iter"], **m}
                ap = m.get("segm_AP")
                ap = -1.0 if ap is None or not math.isfinite(ap) else float(ap)
                if ap > state["best"]:
                    state.update(best=ap, best_epoch=epoch, best_metrics=dict(state["last_metrics"]), bad_evals=0)
                    save_weights(best_dir / "model.pth", epoch, full=False)
                    atomic_write_text(best_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
                    atomic_write_json(best_dir / "best_metrics.json", state["last_metrics"])
                else:
                    state["bad_evals"] += 1
                _jsonl(metrics_path, {"type": "eval", **state["last_metrics"], "best_segm_AP": state["best"],
                                      "best_epoch": state["best_epoch"]})
                logger.info("eval after epoch %d: bbox AP %.4f segm AP %.4f (best %.4f at epoch %s) in %.1fs", epoch,
                            m.get("bbox_AP") or 0.0, ap, state["best"], state["best_epoch"], m["eval_time_s"])
                if spec.early_stop_patience is not None and state["bad_evals"] >= spec.early_stop_patience \
                        and epoch < spec.epochs:
                    stop = True
                    logger.info("early stopping after epoch %d: segm AP did not improve for %d evaluations", epoch,
                                state["bad_evals"])
            if distributed:
                flag = torch.tensor([1.0 if stop else 0.0], device=device if device.type == "cuda" else "cpu")
                dist.broadcast(flag, 0)
                stop = bool(flag.item())
            return stop

        from tqdm.auto import tqdm

        steps_per_epoch = len(loader)
        bar = tqdm(total=spec.epochs * steps_per_epoch, initial=state["iter"], desc=spec.model_name, unit="it",
                   disable=not (main and spec.progress), dynamic_ncols=True, leave=True)
        t_train = time.perf_counter()
        stopped_early = False
        window: list[dict] = []

        def on_step(step: int, losses: dict) -> None:
            state["iter"] += 1
            bar.update(1)
            window.append(losses)
            it = state["iter"]
            if main and (it % max(1, spec.log_interval) == 0 or step == steps_per_epoch - 1 or it == 1):
                rec = {"type": "train", "iter": it, "epoch": state["epoch"] + 1}
                for k in window[-1]:
                    vals = [w[k] for w in window if k in w]
                    rec["total_loss" if k == "loss" else k] = float(np.median(vals))
                g = next((g for g in optimizer.param_groups if g.get("lr_mult", 1.0) == 1.0), optimizer.param_groups[0])
                rec["lr"] = float(g["lr"] / (g.get("lr_mult") or 1.0))
                rec["elapsed_s"] = round(time.perf_counter() - t_train, 3)
                _jsonl(metrics_path, rec)
                bar.set_postfix(loss=f"{rec['total_loss']:.3f}", lr=f"{rec['lr']:.2e}")
                logger.info("epoch %d iter %d/%d total_loss=%.4f lr=%.3g", rec["epoch"], it,
                            spec.epochs * steps_per_epoch, rec["total_loss"], rec["lr"])
                window.clear()

        if main:
            write_result("running")
        try:
            for epoch in range(state["epoch"] + 1, spec.epochs + 1):
                if distributed and hasattr(loader.sampler, "set_epoch"):
                    loader.sampler.set_epoch(epoch)
                stats = train_one_epoch(model, criterion, loader, optimizer, device, scheduler=scheduler, ema=ema,
                                        clip_max_norm=spec.clip_max_norm, amp=spec.amp, scaler=scaler,
                                        on_step=on_step)
                state["epoch"] = epoch
                logger.info("epoch %d/%d done: mean loss %.4f", epoch, spec.epochs, stats.get("loss", float("nan")))
                stop = False
                if val_ds is not None and (epoch % max(1, spec.eval_interval) == 0 or epoch == spec.epochs):
                    stop = evaluate_now(epoch)
                if main and (epoch % spec.save_interval == 0 or epoch == spec.epochs or stop):
                    save_weights(last_path, epoch, full=True)
                if stop:
                    stopped_early = True
                    break
        except FloatingPointError as e:
            bar.close()
            last = str(last_path) if last_path.exists() else None
            msg = (f"training stopped: {e}. Nothing was saved after it; the last good checkpoint is "
                   f"{last or 'none (no checkpoint was written yet)'}. Try a lower learning rate or more "
                   "warmup steps.")
            logger.error(msg)
            if main:
                write_result("failed", msg)
            raise TrainingDivergedError(msg) from None
        except BaseException as e:
            bar.close()
            if main:
                write_result("failed", f"{type(e).__name__}: {e}")
            raise
        bar.close()
        res = None
        if main:
            save_weights(final_path, state["epoch"], full=False)
            if not (best_dir / "model.pth").exists():  # no val split: the final weights are the best we know
                save_weights(best_dir / "model.pth", state["epoch"], full=False)
                atomic_write_text(best_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
            res = write_result("stopped_early" if stopped_early else "done")
            logger.info("training finished: %s", json.dumps({k: res[k] for k in ("status", "epochs", "best_epoch")}))
        if distributed:
            dist.barrier()
        return res


class _EvalProxy(MaskRTDETRModel):
    """Just enough of a model object to run ``_coco_predictions`` on a given network."""

    def __init__(self, name: str, classes: Classes, input_size: int):
        self.name, self.classes, self.input_size = name, classes, input_size


def _ddp_worker(rank: int, world: int, url: str, spec: TrainSpec, init_sd: dict | None) -> None:
    import torch.distributed as dist

    backend = "nccl" if spec.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=url, world_size=world, rank=rank)
    if not spec.device.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        train_main(spec, init_sd)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_training(spec: TrainSpec, init_sd: dict | None = None) -> dict:
    """Run ``train_main`` in ``spec.num_processes`` processes; return ``train_result.json``."""
    n = int(spec.num_processes)
    if n <= 1:
        return train_main(spec, init_sd)
    import torch.multiprocessing as mp

    url = f"tcp://127.0.0.1:{_free_port()}"
    try:
        mp.spawn(_ddp_worker, nprocs=n, args=(n, url, spec, init_sd), daemon=False)
    except mp.ProcessRaisedException as e:
        res_path = Path(spec.output) / "train_result.json"
        if res_path.is_file():
            err = json.loads(res_path.read_text()).get("error")
            if err and err.startswith("training stopped"):
                raise TrainingDivergedError(err) from None
        raise RuntimeError(f"a training process failed: {e}") from None
    return json.loads((Path(spec.output) / "train_result.json").read_text())
