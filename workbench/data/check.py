"""Data check: validate a PaddleX COCO-layout dataset and describe it.

``check_dataset(dataset_dir)`` finds *every* problem (not just the first), each named by file,
image id / annotation id and what is wrong, and writes ``check_dataset_result.json`` with the
PaddleX fields plus richer statistics, PNG plots and rendered sample overlays.

Beyond the annotations, it compares the image files: the same image in train and val (the same
file, or identical file content) is an error, ``cross_split_duplicate`` (val would measure images
the model trained on); identical content under two names within one split is a warning,
``duplicate_image``. A 16-bit or float image is a warning, ``high_bit_depth_image``, saying how it
is read (scaled from its own value range to 8 bits, ``dataset.read_image_rgb``).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..engine.errors import DatasetError
from ..utils.io import atomic_write_json, file_sha256
from .dataset import ANNOTATION_FILES, SPLITS, Dataset, ImageInfo, read_image_rgb_info


@dataclass
class Problem:
    """One thing wrong with the dataset. ``code`` is stable and machine-readable."""

    code: str
    file: str
    message: str
    image_id: int | None = None
    annotation_id: int | None = None
    severity: str = "error"  # "error" fails the check; "warning" is reported only

    def __str__(self) -> str:
        where = [self.file]
        if self.image_id is not None:
            where.append(f"image id {self.image_id}")
        if self.annotation_id is not None:
            where.append(f"annotation id {self.annotation_id}")
        return f"[{self.severity}] {', '.join(where)}: {self.message} ({self.code})"


@dataclass
class CheckResult:
    dataset_dir: Path
    output_dir: Path
    check_pass: bool
    problems: list[Problem]
    attributes: dict
    analysis: dict
    stats: dict
    datasets: dict[str, Dataset] = field(default_factory=dict, repr=False)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def problems_for_image(self, split: str, image_id: int) -> list[Problem]:
        name = ANNOTATION_FILES[split]
        return [p for p in self.problems if p.image_id == image_id and p.file.endswith(name)]

    def to_dict(self) -> dict:
        return {
            "done_flag": True,
            "check_pass": self.check_pass,
            "attributes": self.attributes,
            "analysis": self.analysis,
            "dataset_path": str(self.dataset_dir),
            "show_type": "image",
            "dataset_type": "COCOInstSegDataset",
            "problems": [asdict(p) for p in self.problems],
            "stats": self.stats,
        }

    def figures(self) -> dict:
        """Plotly figures of the statistics, for notebooks and widgets."""
        from ..viz import instance_stats_figures

        return instance_stats_figures(self.stats)

    def summary(self) -> str:
        a = self.attributes
        lines = [f"dataset: {self.dataset_dir}",
                 f"classes: {a.get('num_classes')}  train images: {a.get('train_samples')}  "
                 f"val images: {a.get('val_samples')}"]
        for split, counts in self.stats.get("instances_per_class", {}).items():
            lines.append(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        if self.errors:
            lines.append(f"{len(self.errors)} problem(s):")
            lines += [f"  {p}" for p in self.errors]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  {p}" for p in self.warnings]
        lines.append("Check dataset passed !" if self.check_pass else "Check dataset failed.")
        return "\n".join(lines)


class DatasetCheckError(DatasetError):
    """Raised by ``check_dataset(..., raise_on_error=True)``; carries the result."""

    def __init__(self, result: CheckResult):
        self.result = result
        super().__init__("dataset check failed:\n" + "\n".join(f"  {p}" for p in result.errors))


def _check_polygon(poly, w: int, h: int, tol: float) -> str | None:
    if not isinstance(poly, (list, tuple)):
        return f"polygon is a {type(poly).__name__}, not a list of coordinates"
    if len(poly) % 2:
        return f"polygon has an odd number of coordinates ({len(poly)})"
    if len(poly) < 6:
        return f"polygon with {len(poly) // 2} point(s); at least 3 are needed"
    try:
        arr = np.asarray(poly, float).reshape(-1, 2)
    except (TypeError, ValueError):
        return "polygon has non-numeric coordinates"
    if not np.isfinite(arr).all():
        return "polygon has NaN or infinite coordinates"
    if w and h and ((arr[:, 0] < -tol).any() or (arr[:, 0] > w + tol).any() or (arr[:, 1] < -tol).any()
                    or (arr[:, 1] > h + tol).any()):
        return (f"polygon coordinates out of bounds: x in [{arr[:, 0].min():.1f}, {arr[:, 0].max():.1f}], "
                f"y in [{arr[:, 1].min():.1f}, {arr[:, 1].max():.1f}] for an image of {w}x{h}")
    return None


# complexity: one flat list of independent checks, read top to bottom
def _validate_split(ds: Dataset, split: str, json_file: str, problems: list[Problem],  # noqa: C901
                    check_images: bool, tol: float,
                    hashes: dict[int, str] | None = None) -> dict[int, tuple[int, int]]:
    """Append problems of one split; return the actual (w, h) of readable images. ``hashes``
    receives the sha256 of each readable image file (image id -> hex digest)."""
    cats = Counter(c.id for c in ds.categories)
    for cid, n in cats.items():
        if n > 1:
            problems.append(Problem("duplicate_category_id", json_file, f"category id {cid} is used {n} times"))
    if not ds.categories:
        problems.append(Problem("no_categories", json_file, "no categories defined"))
    if not ds.images:
        problems.append(Problem("empty_split", json_file, f"the {split} split has no images"))
    img_counts = Counter(im.id for im in ds.images)
    for iid, n in img_counts.items():
        if n > 1:
            problems.append(Problem("duplicate_image_id", json_file, f"image id {iid} is used {n} times", image_id=iid))
    ann_counts = Counter(a.id for a in ds.instances)
    for aid, n in ann_counts.items():
        if n > 1:
            problems.append(Problem("duplicate_annotation_id", json_file, f"annotation id {aid} is used {n} times",
                                    annotation_id=aid))
    actual: dict[int, tuple[int, int]] = {}
    seen_files: set[str] = set()
    for im in ds.images:
        if im.width <= 0 or im.height <= 0:
            problems.append(Problem("bad_image_size", json_file, f"{im.file_name}: width/height missing or not "
                                    f"positive ({im.width}x{im.height})", image_id=im.id))
        if im.file_name in seen_files:
            problems.append(Problem("duplicate_file_name", json_file, f"{im.file_name} is listed more than once",
                                    image_id=im.id, severity="warning"))
        seen_files.add(im.file_name)
        if not check_images:
            continue
        path = ds.image_path(im)
        if not path.is_file():
            problems.append(Problem("missing_image", json_file, f"image file not found: {path}", image_id=im.id))
            continue
        try:
            arr, read_info = read_image_rgb_info(path)
        except ValueError as e:
            problems.append(Problem("corrupt_image", json_file, f"unreadable or corrupt image {path}: {e}",
                                    image_id=im.id))
            continue
        if hashes is not None:
            hashes[im.id] = file_sha256(path)
        if read_info.get("scaled_from") is not None:
            lo, hi = read_info["scaled_from"]
            problems.append(Problem("high_bit_depth_image", json_file,
                                    f"{im.file_name} is a {read_info['mode']} image (values {lo:g}..{hi:g}): it is "
                                    f"read as 8-bit by scaling that range to 0..255", image_id=im.id,
                                    severity="warning"))
        h, w = arr.shape[:2]
        actual[im.id] = (w, h)
        if (w, h) != (im.width, im.height) and im.width > 0 and im.height > 0:
            problems.append(Problem("image_size_mismatch", json_file,
                                    f"{path.name} is {w}x{h} but the JSON says {im.width}x{im.height}",
                                    image_id=im.id))
    img_by_id = ds.image_by_id()
    annotated: set[int] = set()
    for a in ds.instances:
        P = lambda code, msg, a=a: problems.append(Problem(code, json_file, msg, image_id=a.image_id,  # noqa: E731
                                                           annotation_id=a.id))
        im = img_by_id.get(a.image_id)
        if im is None:
            P("unknown_image_id", f"refers to image id {a.image_id}, which is not in 'images'")
            continue
        annotated.add(a.image_id)
        if a.category_id not in cats:
            P("unknown_category_id", f"category id {a.category_id} is not in 'categories' "
                                     f"(known: {sorted(cats)})")
        w, h = im.width, im.height
        bbox = a.bbox
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            P("bad_bbox", f"bbox must be [x, y, w, h], got {bbox!r}")
        else:
            try:
                bx = [float(v) for v in bbox]
            except (TypeError, ValueError):
                bx = [float("nan")] * 4
            if not all(math.isfinite(v) for v in bx):
                P("nan_bbox", f"bbox has NaN or infinite values: {bbox}")
            elif bx[2] <= 0 or bx[3] <= 0:
                P("zero_area_bbox", f"bbox has zero or negative size: {bbox}")
            elif w and h and (bx[0] < -tol or bx[1] < -tol or bx[0] + bx[2] > w + tol or bx[1] + bx[3] > h + tol):
                P("bbox_out_of_bounds", f"bbox {bbox} extends outside the {w}x{h} image")
        if not math.isfinite(a.area):
            P("nan_area", f"area is {a.area}")
        elif a.area <= 0:
            P("zero_area", f"area is {a.area}")
        seg = a.segmentation
        if isinstance(seg, list):
            if not seg:
                P("empty_segmentation", "segmentation is an empty list")
            for k, poly in enumerate(seg):
                msg = _check_polygon(poly, w, h, tol)
                if msg:
                    P("bad_polygon", f"polygon {k}: {msg}")
        elif isinstance(seg, dict):
            size = seg.get("size")
            if "counts" not in seg or not isinstance(size, (list, tuple)) or len(size) != 2:
                P("bad_rle", "RLE segmentation needs 'counts' and 'size' [h, w]")
            elif w and h and [int(size[0]), int(size[1])] != [h, w]:
                P("rle_size_mismatch", f"RLE size {list(size)} differs from the image's [h, w] = [{h}, {w}]")
            else:
                try:
                    a.rle(h, w)
                except Exception as e:  # pycocotools raises several types on garbage counts
                    P("bad_rle", f"RLE cannot be decoded: {e}")
        else:
            P("bad_segmentation", f"segmentation of type {type(seg).__name__} is neither polygons nor RLE")
    for im in ds.images:
        if im.id not in annotated:
            problems.append(Problem("image_without_instances", json_file, f"{im.file_name} has no annotations",
                                    image_id=im.id, severity="warning"))
    return actual


def _duplicate_problems(datasets: dict[str, Dataset], hashes: dict[str, dict[int, str]],
                        problems: list[Problem]) -> None:
    """Exact duplicates: the same image (file content, or the same file) in train and val is an
    error (val would measure images the model trained on); within one split, a warning."""

    def keys(split: str, ds: Dataset) -> dict[int, list[tuple[str, str]]]:
        out: dict[int, list[tuple[str, str]]] = {}
        for im in ds.images:
            k = [("file", str(ds.image_path(im).resolve()))]
            if im.id in hashes.get(split, {}):
                k.append(("content", hashes[split][im.id]))
            out[im.id] = k
        return out

    for split, ds in datasets.items():  # within a split: same content, different files
        first: dict[str, ImageInfo] = {}
        for im in ds.images:
            digest = hashes.get(split, {}).get(im.id)
            if digest is None:
                continue
            if digest in first and first[digest].file_name != im.file_name:
                prev = first[digest]
                problems.append(Problem("duplicate_image", str(ds.source), f"{im.file_name} has the same content as "
                                        f"{prev.file_name} (image id {prev.id}) in the {split} split",
                                        image_id=im.id, severity="warning"))
            first.setdefault(digest, im)
    if "train" not in datasets or "val" not in datasets:
        return
    tr, va = datasets["train"], datasets["val"]
    train_keys: dict[tuple[str, str], ImageInfo] = {}
    tk = keys("train", tr)
    for im in tr.images:
        for k in tk[im.id]:
            train_keys.setdefault(k, im)
    vk = keys("val", va)
    for im in va.images:
        hit = next(((kind, train_keys[(kind, v)]) for kind, v in vk[im.id] if (kind, v) in train_keys), None)
        if hit is None:
            continue
        kind, t = hit
        what = "the same file as" if kind == "file" else "the same image content as"
        problems.append(Problem("cross_split_duplicate", str(va.source),
                                f"val image {im.file_name} (image id {im.id}) is {what} train image {t.file_name} "
                                f"(image id {t.id}, {tr.source}): val would measure an image the model trained on",
                                image_id=im.id))


def dataset_stats(datasets: dict[str, Dataset]) -> dict:
    """Per-split statistics: instances and images per class, instances per image, mask areas, sizes."""
    s: dict = {"instances_per_class": {}, "images_per_class": {}, "instances_per_image": {},
               "mask_areas": {}, "mask_area_by_size": {}, "image_sizes": {}, "categories": []}
    first = next(iter(datasets.values()), None)
    if first is not None:
        s["categories"] = [{"id": c.id, "name": c.name} for c in first.categories]
    for split, ds in datasets.items():
        names = {c.id: c.name for c in ds.categories}
        s["instances_per_class"][split] = ds.class_counts()
        per_img: dict[str, set] = {c.name: set() for c in ds.categories}
        for a in ds.instances:
            per_img.setdefault(names.get(a.category_id, f"<unknown id {a.category_id}>"), set()).add(a.image_id)
        s["images_per_class"][split] = {k: len(v) for k, v in per_img.items()}
        by_img = ds.instances_by_image()
        s["instances_per_image"][split] = [len(by_img.get(im.id, [])) for im in ds.images]
        areas = [float(a.area) for a in ds.instances if math.isfinite(a.area)]
        s["mask_areas"][split] = areas
        s["mask_area_by_size"][split] = {
            "small (<32²)": sum(1 for v in areas if v < 32 ** 2),
            "medium": sum(1 for v in areas if 32 ** 2 <= v < 96 ** 2),
            "large (≥96²)": sum(1 for v in areas if v >= 96 ** 2)}
        s["image_sizes"][split] = [[im.width, im.height] for im in ds.images]
    return s


# complexity: a sequence of steps (validate, stats, samples, result file)
def check_dataset(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None,  # noqa: C901
                  num_samples: int = 10, check_images: bool = True, tolerance: float = 1.0,
                  raise_on_error: bool = False, verbose: bool = True) -> CheckResult:
    """Validate the PaddleX COCO layout at ``dataset_dir`` and write ``check_dataset_result.json``.

    output_dir: where the result JSON, plots and sample overlays go (default ``./output``, as PaddleX).
    num_samples: how many overlay images per split to render.
    tolerance: pixels by which polygons/boxes may exceed the image border (pixel-corner coordinates).
    """
    from tqdm.auto import tqdm

    from .. import viz

    dataset_dir = Path(dataset_dir)
    output_dir = Path(output_dir) if output_dir is not None else Path("output")
    problems: list[Problem] = []
    datasets: dict[str, Dataset] = {}
    if not dataset_dir.is_dir():
        problems.append(Problem("missing_dataset_dir", str(dataset_dir), "dataset directory not found"))
    else:
        if not (dataset_dir / "images").is_dir():
            problems.append(Problem("missing_images_dir", str(dataset_dir / "images"), "no images/ folder"))
        for split in SPLITS:
            jf = dataset_dir / "annotations" / ANNOTATION_FILES[split]
            if not jf.is_file():
                problems.append(Problem("missing_annotation_file", str(jf), f"the {split} annotation file is missing"))
                continue
            try:
                datasets[split] = Dataset.load_coco(jf, dataset_dir, split)
            except ValueError as e:
                problems.append(Problem("malformed_json", str(jf), str(e)))
    actual_sizes = {}
    hashes: dict[str, dict[int, str]] = {}
    for split, ds in datasets.items():
        hashes[split] = {}
        actual_sizes[split] = _validate_split(ds, split, str(ds.source), problems, check_images, tolerance,
                                              hashes[split])
    _duplicate_problems(datasets, hashes, problems)
    if len(datasets) == 2:
        tr, va = datasets["train"], datasets["val"]
        if [(c.id, c.name) for c in tr.categories] != [(c.id, c.name) for c in va.categories]:
            problems.append(Problem("category_mismatch", str(va.source),
                                    f"val categories {[(c.id, c.name) for c in va.categories]} differ from train's "
                                    f"{[(c.id, c.name) for c in tr.categories]}; models would see other classes"))
        counts_val = va.class_counts()
        for name, n in tr.class_counts().items():
            if n and not counts_val.get(name):
                problems.append(Problem("class_missing_in_val", str(va.source),
                                        f"class '{name}' has {n} train instance(s) but none in val: "
                                        f"its AP cannot be measured", severity="warning"))
    check_pass = not any(p.severity == "error" for p in problems)
    stats = dataset_stats(datasets)
    attributes: dict = {"num_classes": len(next(iter(datasets.values())).categories) if datasets else 0}
    analysis: dict = {}
    output_dir.mkdir(parents=True, exist_ok=True)
    demo_dir = output_dir / "check_dataset" / "demo_img"
    for split in SPLITS:
        ds = datasets.get(split)
        attributes[f"{split}_samples"] = len(ds.images) if ds is not None else 0
        attributes[f"{split}_instances"] = len(ds.instances) if ds is not None else 0
        paths = []
        if ds is not None and num_samples > 0:
            names = {c.id: c.name for c in ds.categories}
            by_img = ds.instances_by_image()
            readable = [im for im in ds.images if im.id in actual_sizes.get(split, {})]
            for im in tqdm(readable[:num_samples], desc=f"render {split} samples", leave=False,
                           disable=not verbose):
                if actual_sizes[split][im.id] != (im.width, im.height):
                    continue
                insts = [a for a in by_img.get(im.id, []) if not _instance_has_error(problems, a.id, ds)]
                try:
                    masks = np.stack([a.mask(im.height, im.width) for a in insts]) if insts else None
                except Exception:
                    continue
                img = ds.load_image(im)
                vis = viz.draw_instances(img, masks, class_ids=[a.category_id for a in insts],
                                         labels=[names.get(a.category_id, "?") for a in insts])
                p = demo_dir / split / (Path(im.file_name).stem + ".png")
                viz.save_image(p, vis)
                paths.append(str(p))
        attributes[f"{split}_sample_paths"] = paths
    if datasets:
        hist = output_dir / "check_dataset" / "histogram.png"
        viz.save_bar_png(hist, stats["instances_per_class"], "Instances per class")
        analysis["histogram"] = str(hist)
        p = output_dir / "check_dataset" / "instances_per_image.png"
        viz.save_hist_png(p, stats["instances_per_image"], "Instances per image", "instances")
        analysis["instances_per_image"] = str(p)
        p = output_dir / "check_dataset" / "mask_area.png"
        viz.save_hist_png(p, stats["mask_areas"], "Mask area", "area (px)", log_x=True)
        analysis["mask_area"] = str(p)
    result = CheckResult(dataset_dir, output_dir, check_pass, problems, attributes, analysis, stats, datasets)
    atomic_write_json(output_dir / "check_dataset_result.json", result.to_dict())
    if verbose:
        print(result.summary())
    if raise_on_error and not check_pass:
        raise DatasetCheckError(result)
    return result


def _instance_has_error(problems: list[Problem], ann_id: int, ds: Dataset) -> bool:
    src = str(ds.source)
    return any(p.annotation_id == ann_id and p.file == src and p.severity == "error" for p in problems)
