"""Our ``Dataset`` as Detectron2 dataset dicts, registered in ``DatasetCatalog``/``MetadataCatalog``.

Category ids: Detectron2 wants contiguous class indices 0..K-1. ``ClassMap`` maps the dataset's
COCO category ids (in the order of the ``categories`` list) to them and back; it is stored in
every checkpoint we write, so predictions carry the dataset's ids and names, and a checkpoint
used with a dataset of other classes is a loud error (``check_classes``).

Masks: polygons are passed as polygons; RLE (compressed or not) as compressed RLE dicts. When
any instance of a dataset is RLE, the mapper must use ``INPUT.MASK_FORMAT = "bitmask"``
(Detectron2's polygon format cannot hold RLE); ``mask_format_for`` says which.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ...data.dataset import Dataset
from ._compat import import_detectron2


class ClassMismatchError(ValueError):
    """The classes of a checkpoint and of a dataset differ (they would silently give AP 0)."""


@dataclass
class ClassMap:
    category_ids: list[int]
    names: list[str]

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "ClassMap":
        return cls([c.id for c in ds.categories], [c.name for c in ds.categories])

    @classmethod
    def from_meta(cls, meta: dict) -> "ClassMap":
        return cls([int(i) for i in meta["category_ids"]], [str(n) for n in meta["class_names"]])

    def __len__(self) -> int:
        return len(self.names)

    def to_contiguous(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.category_ids)}

    def to_meta(self) -> dict:
        return {"category_ids": list(self.category_ids), "class_names": list(self.names)}

    def check_same(self, other: "ClassMap", what: str, other_what: str) -> None:
        if list(zip(self.category_ids, self.names)) != list(zip(other.category_ids, other.names)):
            mine = ", ".join(f"{i}:{n}" for i, n in zip(self.category_ids, self.names))
            theirs = ", ".join(f"{i}:{n}" for i, n in zip(other.category_ids, other.names))
            raise ClassMismatchError(
                f"class mismatch: {what} has classes [{mine}] but {other_what} has [{theirs}] "
                "(id:name). Use weights trained on these classes, or train from scratch / fine-tune "
                "with ignore_class_mismatch=True to re-initialise the class-specific heads.")


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
