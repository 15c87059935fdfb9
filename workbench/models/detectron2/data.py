"""Our ``Dataset`` as Detectron2 dataset dicts, registered in ``DatasetCatalog``/``MetadataCatalog``.

Category ids: Detectron2 wants contiguous class indices 0..K-1. ``ClassMap`` maps the dataset's
COCO category ids (in the order of the ``categories`` list) to them and back; it is stored in
every checkpoint we write (``engine.classes.ClassMap``).

Masks: polygons are passed as polygons; RLE (compressed or not) as compressed RLE dicts. When
any instance of a dataset is RLE, the mapper must use ``INPUT.MASK_FORMAT = "bitmask"``
(Detectron2's polygon format cannot hold RLE); ``mask_format_for`` says which.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ...data.dataset import Dataset
from ...engine.classes import ClassMap
from ._compat import import_detectron2


def mask_format_for(ds: Dataset) -> str:
    return "polygon" if all(a.is_polygon for a in ds.instances) else "bitmask"


def to_detectron2_dicts(ds: Dataset, classes: ClassMap) -> list[dict]:
    """Detectron2's standard dataset dicts (one per image; crowd and unknown classes noted)."""
    import_detectron2()
    from detectron2.structures import BoxMode

    cmap = classes.to_contiguous()
    out = []
    for im, insts in ds.iter_images():
        h, w = im.height, im.width
        if not h or not w:
            from PIL import Image

            with Image.open(ds.image_path(im)) as pil:
                w, h = pil.size
        annos = []
        for a in insts:
            if a.category_id not in cmap:
                raise ValueError(f"{ds.source or ds.split}: annotation {a.id} has category id {a.category_id}, "
                                 f"not among the dataset's categories {classes.category_ids}")
            if a.is_polygon:
                seg = [list(map(float, p)) for p in a.segmentation if len(p) >= 6 and len(p) % 2 == 0]
                if not seg:
                    continue
            else:
                seg = a.rle(h, w)
            annos.append({"bbox": [float(v) for v in a.bbox], "bbox_mode": BoxMode.XYWH_ABS,
                          "category_id": cmap[a.category_id], "segmentation": seg,
                          "iscrowd": int(a.iscrowd)})
        out.append({"file_name": str(ds.image_path(im)), "image_id": im.id, "height": h, "width": w,
                    "annotations": annos})
    return out


def register(ds: Dataset, classes: ClassMap, tag: str | None = None) -> str:
    """Register ``ds`` in Detectron2's ``DatasetCatalog`` (re-registering replaces); return its name."""
    import_detectron2()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    src = str(Path(ds.source).resolve()) if ds.source else f"mem{id(ds)}"
    name = tag or f"workbench_{hashlib.sha1(src.encode()).hexdigest()[:10]}_{ds.split or 'data'}"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = to_detectron2_dicts(ds, classes)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        thing_classes=list(classes.names),
        thing_dataset_id_to_contiguous_id=classes.to_contiguous(),
        json_file=str(ds.source) if ds.source else "", evaluator_type="coco")
    return name


class StepBatches:
    """The batches of one training process, a pure function of the run's seed and the step: what
    makes a resumed run draw exactly the data of the uninterrupted one.

    Detectron2's ``TrainingSampler`` order (an endless stream of shuffled passes over the images,
    each process taking every ``world``-th) grouped into batches the way its
    ``AspectRatioGroupedDataset`` groups them (wide and tall images apart) — but computed from the
    images' sizes alone, so skipping the first ``start`` batches reads no image. Each index comes with
    the seed its augmentation draws from (``SeededMapper``), fixed by its place in the stream, so it
    does not depend on which data-loader worker maps it, and N processes of batch B see the images
    and augmentations one process of batch N x B sees (when all images group alike). Set ``start`` before iterating.
    """

    def __init__(self, dicts: list[dict], batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 grouping: bool = True):
        self.wide = [bool(d["width"] > d["height"]) for d in dicts]
        self.batch_size, self.seed, self.rank, self.world = int(batch_size), int(seed), int(rank), int(world)
        self.grouping = grouping
        self.start = 0

    def _indices(self):
        import itertools

        import torch

        from ...engine.rng import derived_seed

        for n_pass in itertools.count():
            g = torch.Generator()
            g.manual_seed(derived_seed(self.seed, n_pass))
            yield from torch.randperm(len(self.wide), generator=g).tolist()

    def __iter__(self):
        from ...engine.rng import derived_seed

        buckets: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
        step = 0
        for pos, i in enumerate(self._indices()):
            if pos % self.world != self.rank:
                continue
            b = buckets[self.wide[i] if self.grouping else True]
            b.append((i, pos))
            if len(b) < self.batch_size:
                continue
            if step >= self.start:  # each image's augmentation seeded by its place in the stream
                yield [(j, derived_seed(self.seed, p)) for j, p in b]
            step += 1
            b.clear()


class SeededMapper:
    """A map-style dataset over ``dicts``: key ``(index, seed)`` -> ``mapper(dicts[index])`` with
    NumPy's and Python's global generators (what Detectron2's augmentations draw from) seeded by
    ``seed`` for the call and put back afterwards."""

    def __init__(self, dicts: list[dict], mapper):
        self.dicts, self.mapper = dicts, mapper

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key):
        import random

        import numpy as np

        index, seed = key
        saved_np, saved_py = np.random.get_state(), random.getstate()
        np.random.seed(seed)
        random.seed(seed)
        try:
            return self.mapper(self.dicts[index])
        finally:
            np.random.set_state(saved_np)
            random.setstate(saved_py)


def build_train_loader(cfg, mapper, rank: int = 0, world: int = 1):
    """The training data loader: Detectron2's (``get_detection_dataset_dicts``, ``TrainingSampler``
    order, aspect-ratio grouping, per-process batch ``IMS_PER_BATCH / world``) made resumable
    (``StepBatches``, ``SeededMapper``; the loader has its own generator, so creating it draws
    nothing from the global ones). Returns ``(loader, batches)``; set ``batches.start`` to the steps
    already done before the first ``iter(loader)``. Another ``DATALOADER.SAMPLER_TRAIN`` gets
    Detectron2's own loader and ``batches`` is ``None`` (a resumed run then sees other data)."""
    import_detectron2()
    import torch
    from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
    from detectron2.data.build import trivial_batch_collator

    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        return build_detection_train_loader(cfg, mapper=mapper), None
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total % world:
        raise ValueError(f"the total batch size {total} is not divisible by the {world} processes")
    batches = StepBatches(dicts, total // world, cfg.SEED, rank, world, cfg.DATALOADER.ASPECT_RATIO_GROUPING)
    g = torch.Generator()
    g.manual_seed(int(cfg.SEED) + rank)
    loader = torch.utils.data.DataLoader(SeededMapper(dicts, mapper), batch_sampler=batches,
                                         num_workers=int(cfg.DATALOADER.NUM_WORKERS),
                                         collate_fn=trivial_batch_collator, generator=g)
    return loader, batches
