"""Drawing instances on images: translucent mask fill, contours, boxes and labels; PNG encoding.

Used by the dataset check (ground truth), by ``Result.save_to_img`` (predictions), by the
evaluation report and by the widgets. One colour per class id, stable across images and runs.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np


def class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour for a class id (golden-ratio hue steps)."""
    h = (0.13 + 0.618033988749895 * int(class_id)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _crop(mask) -> tuple[int, int, np.ndarray]:
    """One instance's mask as ``(y0, x0, bool crop)``: from a ``(y0, x0, crop)`` tuple, a COCO RLE
    dict or an (H, W) array (cut to its bounding box)."""
    from ..engine.result import rle_crop, tight_crop

    if isinstance(mask, tuple):
        y0, x0, c = mask
        return int(y0), int(x0), np.asarray(c).astype(bool, copy=False)
    if isinstance(mask, dict):
        return rle_crop(mask)
    return tight_crop(np.asarray(mask).astype(bool, copy=False))


def _blend(region: np.ndarray, mask: np.ndarray, color: np.ndarray, alpha: float, rows: int = 256) -> None:
    """``region[mask] = region * (1 - alpha) + color * alpha`` (float32, truncated to uint8), in
    bands of ``rows`` rows: no gather of the masked pixels, memory one band's float copy."""
    import cv2

    plane = np.tile(color * alpha, (min(rows, len(region)), region.shape[1], 1))  # contiguous: a fast add
    for r0 in range(0, len(region), rows):
        sub, m = region[r0:r0 + rows], mask[r0:r0 + rows]
        if not m.any():
            continue
        block = np.ascontiguousarray(sub)
        mixed = block.astype(np.float32)
        mixed *= 1 - alpha
        mixed += plane[:len(sub)]
        mixed = np.clip(mixed, 0, 255, out=mixed).astype(np.uint8)
        sub[...] = cv2.copyTo(mixed, np.ascontiguousarray(m).view(np.uint8), block)  # the masked pixels only


# complexity: one independent branch per drawing option
def draw_instances(image: np.ndarray, masks=None, boxes: np.ndarray | None = None,  # noqa: C901
                   class_ids: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                   scores: Sequence[float] | None = None, alpha: float = 0.45, show_masks: bool = True,
                   show_boxes: bool = True, show_labels: bool = True, contour: bool = True) -> np.ndarray:
    """Return a copy of ``image`` (RGB uint8) with instances drawn on it.

    masks: (N, H, W) bool, or a sequence of N per-instance masks, each an (H, W) array, a COCO RLE
    dict or a ``(y0, x0, crop)`` tuple (``Result`` passes those, made one at a time); boxes: (N, 4)
    xyxy in pixels; class_ids pick the colours; labels are the text shown (with the score when given).
    Instances are drawn one by one on their crop (memory: the image and one instance's crop).
    """
    import cv2

    out = np.ascontiguousarray(image.copy())
    if out.ndim == 2:
        out = np.stack([out] * 3, -1)
    n = 0
    for arr in (masks, boxes, class_ids):
        if arr is not None:
            n = len(arr)
            break
    class_ids = list(class_ids) if class_ids is not None else [0] * n
    need_mask_boxes = masks is not None and (boxes is None or len(boxes) < n)
    mask_boxes: dict[int, list[int]] = {}
    contours: list[tuple[int, list]] = []
    if masks is not None and len(masks) and (show_masks or need_mask_boxes):
        for i in range(n):
            y0, x0, m = _crop(masks[i])
            if not m.any():
                continue
            if need_mask_boxes:
                yy, xx = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
                mask_boxes[i] = [x0 + int(xx[0]), y0 + int(yy[0]), x0 + int(xx[-1]) + 1, y0 + int(yy[-1]) + 1]
            if not show_masks:
                continue
            _blend(out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]], m, np.array(class_color(class_ids[i]), np.float32),
                   alpha)
            if contour:  # drawn after every fill, as before; the crop padded so borders trace alike
                padded = np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8)
                padded[1:-1, 1:-1] = m
                cs, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0 - 1, y0 - 1))
                contours.append((i, cs))
        for i, cs in contours:
            cv2.drawContours(out, cs, -1, class_color(class_ids[i]), 1, lineType=cv2.LINE_AA)
    thick = max(1, int(round(max(out.shape[:2]) / 400)))
    font_scale = max(0.35, max(out.shape[:2]) / 1400)
    for i in range(n):
        color = class_color(class_ids[i])
        box = None
        if boxes is not None and len(boxes) > i:
            box = [int(round(v)) for v in boxes[i]]
        elif i in mask_boxes:
            box = mask_boxes[i]
        if box is None:
            continue
        if show_boxes:
            cv2.rectangle(out, (box[0], box[1]), (box[2], box[3]), color, thick, lineType=cv2.LINE_AA)
        if show_labels and (labels is not None or scores is not None):
            text = labels[i] if labels is not None else str(class_ids[i])
            if scores is not None:
                text = f"{text} {float(scores[i]):.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            x0, y0 = box[0], max(th + base, box[1])
            cv2.rectangle(out, (x0, y0 - th - base), (x0 + tw + 2, y0), color, -1)
            cv2.putText(out, text, (x0 + 1, y0 - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                        lineType=cv2.LINE_AA)
    return out


def save_image(path, image: np.ndarray) -> None:
    """Write an RGB array as PNG/JPG atomically."""
    from pathlib import Path

    import cv2

    from ..utils.io import atomic_write_bytes

    ext = Path(path).suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: could not encode image as {ext}")
    atomic_write_bytes(path, memoryview(buf))  # the encoded buffer itself, not a bytes copy of it


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode image as PNG")
    return buf.tobytes()
