"""The model contract: what ``create_model`` returns for every family.

``BaseModel`` gives every family the same ``predict`` (any input: path, folder — searched
recursively —, list, array, PIL image; a progress bar on folders; unreadable files of a folder or a
list skipped and listed in ``Predictions.failed``), ``evaluate`` (a dataset split -> ``evaluate_result.json``),
``train`` (family defaults + the caller's arguments -> ``TrainArgs``, the launcher, the family's
trainer, then the best weights reloaded) and class checks. A family implements:

* ``family``, ``unit`` (what ``epochs_iters`` counts), ``default_train_args``, ``train_options``
  (its own training arguments and their defaults), ``trainer`` (its ``BaseTrainer`` subclass);
* ``build()`` (the network, on first use), ``infer(images, paths, threshold, ...)`` (its one
  inference path: RGB arrays in, ``Result`` out, keeping ``score >= threshold``), ``save(path)``,
  ``train_job(...)`` (its architecture settings and initial weights for the trainer) and
  ``reload_kwargs()`` (what ``create_model`` needs to rebuild it from a checkpoint);
* optionally ``export(path)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .classes import ClassMap
from .errors import NotAvailableError, WeightsError
from .train_args import TrainArgs, TrainJob

logger = logging.getLogger("workbench.model")
predict_logger = logging.getLogger("workbench.predict")


def keep_scores(scores, threshold: float):
    """The one threshold rule of every inference path: a detection is kept when ``score >= threshold``."""
    return scores >= threshold


class Predictions(Iterator):
    """What ``BaseModel.predict`` returns: an iterator of ``Result``s, one per readable image, in
    input order; the work starts on the first ``next``.

    ``failed``: the image files that could not be read and were skipped, in input order, each
    ``{"input": path, "error": what is wrong}`` (also logged as one warning line on the
    ``workbench.predict`` logger); complete once the iteration is exhausted. ``num_inputs``: the
    number of images found (set on the first ``next``)."""

    def __init__(self, start):
        self.failed: list[dict] = []
        self.num_inputs: int | None = None
        self.fps: float | None = None  # frames per second of the predicted frames (a video input)
        self._it = start(self)

    def __iter__(self) -> Predictions:
        return self

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        self._it.close()

    def save_to_video(self, save_path: str | os.PathLike, fps: float | None = None, json_path=None, **draw_kwargs):
        """Draw the remaining ``Result``s (one at a time) into an overlay video, at ``fps`` (default:
        the input video's frame rate divided by the frame stride); ``json_path``: also one JSON line
        per frame. Returns the video's path."""
        from .video import DEFAULT_FPS, VideoWriter

        first = next(self, None)
        if first is None:
            raise ValueError(f"{save_path}: there are no results to write")
        with VideoWriter(save_path, fps or self.fps or DEFAULT_FPS, json_path, **draw_kwargs) as w:
            w.add(first)
            for r in self:
                w.add(r)
        return w.path

    def skip(self, item, error: BaseException) -> None:
        """Record an unreadable input and warn about it in one line."""
        path = str(item)
        try:
            empty = Path(path).stat().st_size == 0
        except OSError:
            empty = False
        what = "empty file (0 bytes)" if empty else str(error).removeprefix(f"{path}: ")
        what = " ".join(what.split())  # one line
        self.failed.append({"input": path, "error": what})
        predict_logger.warning("predict: skipped %s: %s", path, what)


class Evaluation(dict):
    """What ``BaseModel.evaluate`` returns: the result dict (``evaluate_result.json`` and
    ``wall_time_s``; JSON-ready, as any dict) with the split's predictions in ``results`` (one
    ``Result`` per image of the split, in its order, every detection), e.g. for
    ``widgets.EvaluationExplorer`` without predicting the split again."""

    def __init__(self, data: dict, results: list | None = None):
        super().__init__(data)
        self.results = list(results) if results is not None else None


class BaseModel(ABC):
    family: ClassVar[str] = ""
    unit: ClassVar[str] = "iterations"
    default_train_args: ClassVar[dict] = {}
    train_options: ClassVar[dict] = {}
    trainer: ClassVar[str] = ""  # "package.module:TrainerClass", imported when training starts

    def __init__(
        self,
        name: str,
        *,
        weights: str | None,
        device: str,
        classes: ClassMap | None,
        input_size: int,
        meta: dict | None = None,
    ):
        self.name = name
        self.weights = weights
        self.device = device
        self.classes = classes
        self.input_size = int(input_size)
        self.meta = meta
        self._net = None

    def __repr__(self) -> str:
        cls = self.classes.names if self.classes else None
        extra = "".join(f", {k}={v!r}" for k, v in self.repr_fields().items())
        return (
            f"{type(self).__name__}({self.name!r}, weights={self.weights!r}, device={self.device!r}, "
            f"input_size={self.input_size}, classes={cls}{extra})"
        )

    def repr_fields(self) -> dict:
        """The family's own fields shown by ``repr``."""
        return {}

    # ------------------------------------------------------------------ family parts
    @abstractmethod
    def build(self):
        """The network (built once, on first use), with the weights loaded."""

    @abstractmethod
    def infer(
        self,
        images: Sequence[np.ndarray],
        paths: Sequence[str | None],
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        keep_image: bool = True,
    ) -> list:
        """The family's one inference path: RGB arrays -> ``Result``s, keeping ``score >= threshold``."""

    @abstractmethod
    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights with the metadata needed to rebuild the model."""

    @abstractmethod
    def train_job(self, dataset_dir: str, output: str, device: str, args: TrainArgs) -> TrainJob:
        """The ``TrainJob`` for the family's trainer: architecture settings and initial weights."""

    def reload_kwargs(self) -> dict:
        return {}

    def export(self, path: str | os.PathLike, **kwargs) -> Path:
        raise NotAvailableError(f"export is not available for {self.name} ({self.family} family) yet")

    # ------------------------------------------------------------------ shared
    @property
    def net(self):
        """The ``torch.nn.Module``, built on first use."""
        return self.build()

    @property
    def schedule(self) -> dict:
        """What the training panel shows: the unit of ``epochs_iters`` and the family's defaults."""
        return {"unit": self.unit, **self.default_train_args}

    def check_classes(self, ds, what: str) -> None:
        if self.classes is None:
            raise WeightsError(f"{self.name} has no trained weights; pass weights=... to create_model (or train it)")
        self.classes.check_same(ClassMap.from_dataset(ds), f"the model {self.name} ({self.weights})", what)

    def predict(
        self,
        inputs: Any,
        batch_size: int = 1,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        progress: bool | None = None,
        recursive: bool = True,
        frame_stride: int = 1,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Predictions:
        """One ``Result`` per image, as an iterator (``Predictions``). ``inputs``: an image path, a
        folder (its subfolders too unless ``recursive=False``; images sorted by their path in the
        folder), an http(s) URL of an image, a video file or a camera index (``int``), an RGB
        ``numpy`` array (H, W, 3 uint8), a PIL image or a list mixing them. Detections with
        ``score >= threshold`` are kept; masks keep their soft probabilities (``Result.filter``).

        A video gives one ``Result`` per frame, lazily (one frame in memory at a time): every
        ``frame_stride``-th frame from ``start_s`` to ``end_s`` seconds; ``page_index`` is the frame's
        index in the video. ``predict(...).save_to_video("out.mp4")`` writes the overlay video.

        An image file of a folder or a list that cannot be read (0 bytes, truncated, not an image)
        is skipped with a one-line warning naming it and what is wrong, and listed in the returned
        object's ``failed`` (``[{"input": path, "error": what}]``, complete once the iteration is
        exhausted); an unreadable image given on its own is an error (``ValueError`` naming it).
        Each ``Result`` has an ``output_stem`` unique among the inputs (``engine.inputs``: ``a/x``
        for ``<folder>/a/x.png``), which ``save_to_img``/``save_to_json`` use for a folder target,
        so images of the same name in different subfolders never overwrite each other's outputs.
        """
        video = {"stride": frame_stride, "start_s": start_s, "end_s": end_s}
        return Predictions(
            lambda run: self._predict(run, inputs, batch_size, threshold, mask_threshold, progress, recursive, video)
        )

    def _predict(self, run, inputs, batch_size, threshold, mask_threshold, progress, recursive, video) -> Iterator:
        from tqdm.auto import tqdm

        from .inputs import is_folder_input, output_stems, predict_inputs
        from .video import VideoSource

        items = predict_inputs(inputs, recursive)
        stems = output_stems(x.stem for x in items)
        run.num_inputs = len(items)
        sources = {k: VideoSource(x.item, **video) for k, x in enumerate(items) if x.kind == "video"}
        if sources:
            run.fps = next(iter(sources.values())).fps / max(1, int(video["stride"]))
        self.build()
        frames = sum(len(v) for v in sources.values())
        unknown = any(v.camera or not len(v) for v in sources.values())
        total = None if unknown else len(items) - len(sources) + frames
        show = progress if progress is not None else (bool(sources) or (len(items) > 1 and is_folder_input(inputs)))
        bs = max(1, int(batch_size))
        batch: list[tuple] = []
        unit = "frame" if sources and len(sources) == len(items) else "img"
        with tqdm(total=total, desc=f"predict {self.name}", unit=unit, disable=not show) as bar:
            for image, path, stem, page in self._images(run, items, stems, sources, bar):
                batch.append((image, path, stem, page))
                if len(batch) < bs:
                    continue
                yield from self._infer_batch(batch, threshold, mask_threshold, bar)
                batch = []
            if batch:
                yield from self._infer_batch(batch, threshold, mask_threshold, bar)

    @staticmethod
    def _images(run, items, stems, sources, bar) -> Iterator[tuple]:
        """``(rgb, path, stem, frame index or None)`` of every input, frames of videos one by one;
        an unreadable skippable image is recorded in ``run`` and left out."""
        from .inputs import load_input

        for k, (x, stem) in enumerate(zip(items, stems)):
            if k in sources:
                src = sources[k]
                path = None if src.camera else str(x.item)
                for index, _t, rgb in src.frames():
                    yield rgb, path, stem, index
                continue
            try:
                image, path = load_input(x.item)
            except (ValueError, OSError) as e:
                if not x.skippable:
                    raise
                run.skip(x.item, e)
                bar.update(1)
                continue
            yield image, path, stem, None

    def _infer_batch(self, batch, threshold, mask_threshold, bar) -> Iterator:
        images, paths, names, pages = zip(*batch)
        results = self.infer(list(images), list(paths), threshold=threshold, mask_threshold=mask_threshold)
        for r, name, page in zip(results, names, pages):
            r.output_stem = name
            r.page_index = page
            bar.update(1)
            yield r

    def evaluate(
        self,
        dataset_dir: str | os.PathLike,
        output: str | os.PathLike | None = None,
        split: str = "val",
        batch_size: int = 1,
        progress: bool | None = None,
    ) -> Evaluation:
        """COCO bbox and segm AP (AP, AP50, AP75, APs/m/l, AR…, per class) on a split of a
        PaddleX-layout dataset; ``<output>/evaluate_result.json`` and the report when ``output`` is given.

        Returns the result dict (``evaluate_result.json``'s content and ``wall_time_s``) as an
        ``Evaluation``, whose ``results`` are the split's predictions (one ``Result`` per image,
        every detection): the evaluation explorer uses them, so the split is predicted once. A
        progress bar counts the predicted images (``progress=False``: none)."""
        from ..data.dataset import Dataset
        from ..evaluation import evaluate, predict_split, to_coco_detections

        t0 = time.perf_counter()
        ds = Dataset.load_paddlex(dataset_dir, split)
        if self.weights is None and self._net is None:
            raise WeightsError(f"{self.name} has no trained weights; evaluate needs weights=... in create_model")
        self.check_classes(ds, f"the dataset {ds.source}")
        results = predict_split(
            self, ds, batch_size=batch_size, progress=progress is not False, desc=f"evaluate {self.name} on {split}"
        )
        info = {"model_name": self.name, "weights": self.weights, "dataset_dir": str(dataset_dir), "split": split}
        report = evaluate(to_coco_detections(ds, results), ds, output_dir=output, info=info)
        return Evaluation({**report.to_dict(), "wall_time_s": round(time.perf_counter() - t0, 2)}, results)

    def train(self, dataset_dir: str | os.PathLike, output: str | os.PathLike = "output", **kwargs) -> dict:
        """Train on the PaddleX COCO layout in ``dataset_dir`` (train split; the val split is evaluated).

        Keyword arguments: those of ``TrainArgs`` (``epochs_iters`` — counted in ``self.unit`` —,
        ``batch_size``, ``learning_rate``, ``input_size``, ``resume``, ``eval_interval``,
        ``save_interval``, ``log_interval``, ``warmup_steps``, ``early_stop_patience``, ``amp``,
        ``device``, ``num_processes``, ``num_workers``, ``seed``, ``ignore_class_mismatch``, ``progress``,
        ``max_to_keep``, ``save_training_state``) and the family's ``train_options``; defaults are
        ``default_train_args``. Writes the run directory (``engine.run_dir``): ``output`` for the
        first run, ``output-2``, ``output-3`` … when a run was started there before (a resumed run
        continues in its own folder, ``run_dir.new_run_dir``); returns ``train_result.json`` (its
        ``paths.output`` names the folder); afterwards this object holds the best weights.
        """
        from .launcher import launch, num_processes, resolve_device
        from .run_dir import new_run_dir

        for k in [k for k in kwargs if k not in TrainArgs.field_names() and k not in self.train_options]:
            if kwargs[k] is None:
                kwargs.pop(k)  # one config drives every family: unset options of another family are fine
        args = TrainArgs.build(self.default_train_args, self.train_options, kwargs)
        dev = resolve_device(args.device) if args.device is not None else self.device
        if args.amp and not dev.startswith("cuda"):
            raise ValueError("amp=True needs a GPU device (automatic mixed precision is a CUDA feature here)")
        args.num_processes = num_processes(args.device, args.num_processes)
        args.input_size = int(args.input_size or self.input_size)
        output = new_run_dir(output, resume=bool(args.resume), resume_path=args.resume_path)  # its own folder
        job = self.train_job(str(dataset_dir), str(output), dev, args)
        module, _, cls = self.trainer.partition(":")
        trainer = getattr(importlib.import_module(module), cls)
        res = launch(trainer.run_job, job, args.num_processes, dev, output, getattr(trainer, "worker_init", None))
        best = res["paths"].get("best_model") or res["paths"].get("model_final")
        if best:
            from ..models.registry import create_model

            trained = create_model(self.name, weights=best, device=self.device, **self.reload_kwargs())
            self.__dict__.update(trained.__dict__)
        return res
