"""LabelMe -> COCO conversion speed: ``workbench.data.labelme.convert_labelme`` against a
reference conversion written to labelme's own semantics, on the same input, in one run.

The reference (``reference_labelme2coco``) follows labelme 5.x's
``examples/instance_segmentation/labelme2coco.py`` and ``labelme.utils.shape_to_mask``
(re-implemented here, labelme is not a dependency): every shape is rasterised with PIL
``ImageDraw`` (polygon/rectangle/circle/line/point, outline included), ``mask`` shapes are pasted
at their integer top-left corner, shapes of one ``(label, group_id)`` are OR-ed into one
instance, the mask is encoded with ``pycocotools.mask.encode`` and ``area``/``bbox`` come from
pycocotools; the image is decoded and re-saved as JPEG, as labelme2coco does. The tests import
it to compare our output with labelme's behaviour.

Usage: ``python benchmarks/convert_speed.py [--src data/demo_labelme] [--repeat 5]``.
Prints a table of images/s and the ratio ours/reference; exits 0.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------- labelme semantics
def shape_to_mask(img_shape, points, shape_type=None, line_width=10, point_size=5) -> np.ndarray:
    """labelme.utils.shape_to_mask semantics: PIL rasterisation with the outline drawn."""
    import PIL.Image
    import PIL.ImageDraw

    mask = PIL.Image.fromarray(np.zeros(img_shape[:2], dtype=np.uint8))
    draw = PIL.ImageDraw.Draw(mask)
    xy = [tuple(p) for p in points]
    if shape_type == "circle":
        (cx, cy), (px, py) = xy
        d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif shape_type == "rectangle":
        (x1, y1), (x2, y2) = xy
        # Pillow >= 9.5 wants x0 <= x1; labelme's own call fails on reversed corners there
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=1, fill=1)
    elif shape_type == "line":
        draw.line(xy=xy, fill=1, width=line_width)
    elif shape_type == "linestrip":
        draw.line(xy=xy, fill=1, width=line_width)
    elif shape_type == "point":
        (cx, cy), = xy
        r = point_size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif shape_type in (None, "polygon"):
        assert len(xy) > 2, "Polygon must have points more than 2"
        draw.polygon(xy=xy, outline=1, fill=1)
    else:
        raise ValueError(f"shape_type={shape_type!r} is not supported.")
    return np.array(mask, dtype=bool)


def _b64_to_arr(b64: str) -> np.ndarray:
    import PIL.Image

    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(b64))))


def _load_image(json_path: Path, d: dict) -> np.ndarray:
    import PIL.Image
    import PIL.ImageOps

    if d.get("imageData"):
        with PIL.Image.open(io.BytesIO(base64.b64decode(d["imageData"]))) as im:
            return np.asarray(PIL.ImageOps.exif_transpose(im))
    with PIL.Image.open(json_path.parent / d["imagePath"].replace("\\", "/")) as im:
        return np.asarray(PIL.ImageOps.exif_transpose(im))


def read_class_names(labels_txt: Path) -> list[str]:
    """labelme2coco's labels file: first line ``__ignore__``, ids start at -1 (so
    ``_background_`` is 0 and the first class 1); returned without ``__ignore__``."""
    lines = [ln.strip() for ln in labels_txt.read_text().splitlines() if ln.strip()]
    assert lines[0] == "__ignore__", f"{labels_txt}: first line must be __ignore__"
    return lines[1:]


def reference_labelme2coco(src_dir, out_dir=None, class_names=None) -> dict:
    """Convert like labelme2coco; returns ``{json_name: {"height", "width", "instances": [...]}}``
    where each instance has label, group_id, shape indices, mask (bool), area, bbox and the
    COCO segmentation labelme2coco writes. With ``out_dir`` it also writes images + JSON."""
    import PIL.Image
    from pycocotools import mask as mask_utils

    src_dir = Path(src_dir)
    if class_names is None:
        class_names = read_class_names(src_dir / "labels.txt")
    class_name_to_id = {n: i for i, n in enumerate(class_names)}  # _background_ -> 0 if listed
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i, "name": n, "supercategory": None} for n, i in class_name_to_id.items()]}
    if out_dir is not None:
        (Path(out_dir) / "JPEGImages").mkdir(parents=True, exist_ok=True)
    result = {}
    for image_id, json_path in enumerate(sorted(src_dir.glob("*.json"))):
        d = json.loads(json_path.read_text())
        img = _load_image(json_path, d)
        h, w = img.shape[:2]
        masks: dict = {}
        shape_idx: dict = {}
        segmentations: dict = {}
        for i, shape in enumerate(d["shapes"]):
            points = shape["points"]
            label = shape["label"]
            group_id = shape.get("group_id")
            shape_type = shape.get("shape_type", "polygon")
            if shape_type == "mask":
                m = np.zeros((h, w), bool)
                (x1, y1), (x2, y2) = np.asarray(points).astype(int)
                m[y1:y2 + 1, x1:x2 + 1] = _b64_to_arr(shape["mask"]).astype(bool)
            else:
                m = shape_to_mask((h, w), points, shape_type)
            key = (label, group_id if group_id is not None else ("shape", i))
            masks[key] = masks[key] | m if key in masks else m
            shape_idx.setdefault(key, []).append(i)
            if shape_type == "rectangle":
                (x1, y1), (x2, y2) = points
                x1, x2 = sorted([x1, x2])
                y1, y2 = sorted([y1, y2])
                seg = [x1, y1, x2, y1, x2, y2, x1, y2]
            elif shape_type == "circle":
                (x1, y1), (x2, y2) = points
                r = float(np.linalg.norm([x2 - x1, y2 - y1]))
                n = max(int(np.pi / np.arccos(1 - 1 / r)), 12) if r > 1 else 12
                t = np.arange(n)
                seg = np.stack((x1 + r * np.sin(2 * np.pi / n * t), y1 + r * np.cos(2 * np.pi / n * t)),
                               axis=1).flatten().tolist()
            else:
                seg = np.asarray(points).flatten().tolist()
            segmentations.setdefault(key, []).append(seg)
        insts = []
        for key, m in masks.items():
            label, group_id = key
            if label not in class_name_to_id:
                continue  # __ignore__ and unknown labels are dropped, as labelme2coco does
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            area = float(mask_utils.area(rle))
            bbox = mask_utils.toBbox(rle).flatten().tolist()
            insts.append({"label": label, "group_id": group_id if not isinstance(group_id, tuple) else None,
                          "shapes": shape_idx[key], "mask": m, "area": area, "bbox": bbox,
                          "segmentation": segmentations[key]})
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": image_id,
                                        "category_id": class_name_to_id[label],
                                        "segmentation": segmentations[key], "area": area, "bbox": bbox,
                                        "iscrowd": 0})
        if out_dir is not None:
            out_img = Path(out_dir) / "JPEGImages" / f"{json_path.stem}.jpg"
            PIL.Image.fromarray(img[..., :3] if img.ndim == 3 else img).convert("RGB").save(out_img)
            coco["images"].append({"id": image_id, "file_name": f"JPEGImages/{out_img.name}",
                                   "height": h, "width": w})
        result[json_path.name] = {"height": h, "width": w, "instances": insts}
    if out_dir is not None:
        (Path(out_dir) / "annotations.json").write_text(json.dumps(coco))
    return result


# --------------------------------------------------------------------------- benchmark
def _repeated_copy(src: Path, dst: Path, n: int) -> int:
    """``n`` copies of every LabelMe file (+ image) of ``src`` under new names; returns count."""
    dst.mkdir(parents=True)
    count = 0
    for k in range(n):
        for jp in sorted(src.glob("*.json")):
            d = json.loads(jp.read_text())
            if d.get("imagePath") and not d.get("imageData"):
                img = jp.parent / d["imagePath"]
                new_img = f"r{k}_{img.name}"
                shutil.copyfile(img, dst / new_img)
                d["imagePath"] = new_img
            (dst / f"r{k}_{jp.name}").write_text(json.dumps(d))
            count += 1
    if (src / "labels.txt").exists():
        shutil.copyfile(src / "labels.txt", dst / "labels.txt")
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT / "data" / "demo_labelme"))
    ap.add_argument("--repeat", type=int, default=5, help="copies of the input set (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each converter; best is kept")
    args = ap.parse_args(argv)
    from workbench.data.labelme import convert_labelme

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = _repeated_copy(Path(args.src), tmp / "in", args.repeat)
        times = {"workbench convert_labelme": [], "labelme2coco-style reference": []}
        for r in range(args.rounds):
            out = tmp / f"ours{r}"
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                convert_labelme(tmp / "in", out, progress=False)
            times["workbench convert_labelme"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            reference_labelme2coco(tmp / "in", tmp / f"ref{r}")
            times["labelme2coco-style reference"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    print(f"input: {args.src} x{args.repeat} = {n} images; best of {args.rounds} runs")
    print(f"{'converter':32s} {'seconds':>9s} {'images/s':>10s}")
    for k, t in best.items():
        print(f"{k:32s} {t:9.3f} {n / t:10.1f}")
    ours, ref = best["workbench convert_labelme"], best["labelme2coco-style reference"]
    print(f"ratio (ours images/s / reference images/s): {ref / ours:.2f}")
    print("note: ours validates every image (full decode), copies image bytes and fsyncs each file it writes "
          "(atomic writes); the reference decodes and re-encodes images as JPEG and does not fsync.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
