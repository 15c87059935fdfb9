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
