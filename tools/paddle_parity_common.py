"""What both sides of the Paddle parity checks compute identically, in numpy only.

``tools/paddle_parity.py`` (run by hand where ``paddlepaddle`` and PaddleDetection's source are
installed) and ``tests/test_paddle_parity.py`` (the project's test suite, no Paddle) both import
this file, so the weights, the input image, the training targets and the sampled positions of the
intermediate tensors are the same on both sides without storing any weights:

* every parameter and buffer is drawn from ``numpy.random.default_rng([seed, crc32(name)])``
  where ``name`` is Paddle's state-dict name and ``seed`` the variant's ``WEIGHT_SEEDS`` entry; the
  distribution depends only on the name's suffix and the shape (:func:`make_param`), so a
  ``{name: shape}`` manifest is enough to rebuild them;
* intermediate tensors are compared at ``N_SAMPLES`` flat positions drawn from a generator seeded
  by the tensor's key (:func:`sample_index`), plus their mean, standard deviation and largest
  magnitude.
"""

from __future__ import annotations

import zlib

import numpy as np

WEIGHT_SEED = 20261201
# Per-variant seed where the default one gives degenerate encoder masks (random weights make them
# all-negative or all-positive, so every mask-enhanced initial box is empty or the whole image and
# the box path is not exercised); a fixture records the seed it was made with.
WEIGHT_SEEDS = {"S": WEIGHT_SEED, "M": 3, "L": WEIGHT_SEED, "X": 4, "H": WEIGHT_SEED}
SAMPLE_SEED = 11
N_SAMPLES = 512
INPUT_SIZE = 320  # the network input is INPUT_SIZE x INPUT_SIZE
N_QUERIES_KEPT = 300  # final logits/boxes kept for the first N queries (Paddle's top-k order)
N_MASKS_KEPT = 4  # final mask logits kept for this many queries (tools/paddle_parity.py)
MASK_HEAD_GAIN = 4.0  # mask_query_head's last layer scaled up: mask logits O(1), signs not near 0
# PP-YOLOE_seg's prediction convs scaled up: class logits, box-bin logits and mask coefficients
# O(1) (unscaled, every score is 0.5 +- 0.05 and every box-bin softmax nearly flat)
PRED_GAIN = 2.5
VARIANTS = ("S", "M", "L", "X", "H")
LOSS_STREAM_SEED = 777  # uniform stream both sides' random mask sample points are drawn from

# PP-YOLOE_seg-S
PPYOLOE_SEG_SEED = WEIGHT_SEED
N_ANCHORS_KEPT = 64  # full head rows (scores, box logits, boxes, coefficients) kept at this many anchors
N_POST_MASKS_KEPT = 4  # post-processed binary masks kept (bit-packed) for the first detections

# The training-loss check runs at 640 x 640 (the committed image upsampled 2x, nearest): Paddle's
# mask loss normalises the target boxes by a hard-coded 640 x 640 whatever the input size, the port
# by the actual one, so the two agree only at 640.
PPYOLOE_LOSS_SIZE = 640


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def make_param(name: str, shape, seed: int = WEIGHT_SEED) -> np.ndarray:
    """The float32 value of Paddle parameter/buffer ``name`` with ``shape``.

    BN running mean N(0, 0.2), running variance U(0.5, 2); 1-D weights (BN/LayerNorm scales)
    U(0.6, 1.4); 1-D biases N(0, 0.1); 2-D (Paddle Linear [in, out]) and 4-D (conv [out, in/g, kh,
    kw]) weights N(0, 1/fan_in) with fan_in = shape[0] resp. prod(shape[1:]); the last layer of
    ``mask_query_head`` times ``MASK_HEAD_GAIN``. PP-YOLOE_seg: the prediction convs' weights
    (``yolo_head.pred_cls/pred_reg/pred_ins``) times ``PRED_GAIN``; the RepVGG ``alpha`` scales U(0.6,
    1.4) like the other scales; the DFL projection ``yolo_head.proj_conv.weight`` keeps its fixed
    value 0, 1, ..., reg_max (a constant, not a learnt weight: random values would make every box
    distance meaningless).
    """
    shape = tuple(int(s) for s in shape)
    r = _rng(seed, name)
    if name == "yolo_head.proj_conv.weight":
        return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if name.endswith("._mean"):
        a = r.normal(0.0, 0.2, shape)
    elif name.endswith("._variance"):
        a = r.uniform(0.5, 2.0, shape)
    elif len(shape) == 1 and name.endswith((".weight", ".alpha")):
        a = r.uniform(0.6, 1.4, shape)
    elif len(shape) == 1:
        a = r.normal(0.0, 0.1, shape)
    elif len(shape) == 2:
        a = r.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
    elif len(shape) == 4:
        a = r.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
    else:
        a = r.normal(0.0, 0.1, shape)
    if name.startswith("transformer.mask_query_head.layers.2."):
        a = a * MASK_HEAD_GAIN
    if name.startswith("yolo_head.pred_") and len(shape) == 4:
        a = a * PRED_GAIN
    return a.astype(np.float32)


def make_params(manifest: dict, seed: int = WEIGHT_SEED) -> dict:
    """``{name: array}`` for a ``{name: shape}`` manifest."""
    return {k: make_param(k, s, seed) for k, s in manifest.items()}


def input_tensor(image_hwc_uint8: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] float32 in [0, 1] from the committed RGB uint8 image."""
    return (image_hwc_uint8.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].copy()


def loss_image(image_hwc_uint8: np.ndarray, size: int = PPYOLOE_LOSS_SIZE) -> np.ndarray:
    """The committed image repeated to ``size`` x ``size`` (nearest; ``size`` a multiple of its side)."""
    k = size // image_hwc_uint8.shape[0]
    assert k * image_hwc_uint8.shape[0] == size and image_hwc_uint8.shape[0] == image_hwc_uint8.shape[1]
    return np.ascontiguousarray(image_hwc_uint8.repeat(k, 0).repeat(k, 1))


def xyxy_pixels(boxes_cxcywh: np.ndarray, size: int) -> np.ndarray:
    """Normalised cxcywh -> xyxy pixels, float32, in the same operations as the port's
    ``ppyoloe_seg.loss.pad_targets`` (so both sides get bit-identical target boxes)."""
    cx, cy, w, h = (np.asarray(boxes_cxcywh, np.float32)[:, i] for i in range(4))
    s = np.float32(size)
    return np.stack([(cx - w / 2) * s, (cy - h / 2) * s, (cx + w / 2) * s, (cy + h / 2) * s], -1).astype(np.float32)


def anchor_subset(n_anchors: int) -> np.ndarray:
    """The ``N_ANCHORS_KEPT`` anchors (sorted flat indices over all levels) whose head rows are kept."""
    return np.sort(_rng(SAMPLE_SEED, "anchors").choice(n_anchors, min(N_ANCHORS_KEPT, n_anchors), replace=False))


def synthetic_head(size: int = INPUT_SIZE, strides=(32, 16, 8), num_classes: int = 80, num_masks: int = 32) -> dict:
    """PP-YOLOE_seg head outputs for the post-processing check (NMS, masks), float32 numpy.

    The head outputs of the randomised network are not usable for it: random weights wash the
    image out of the deep features (interior anchors differ by ~1e-3), so hundreds of candidate
    scores of a class tie to within fp32 rounding and which of them NMS keeps is decided by the
    rounding. Here every score of a class is distinct (a permutation, scaled per class so that a few
    classes dominate and NMS suppresses), and the boxes are exact in fp32 (anchor centres,
    distances in 1/16 stride units), so both sides run NMS on bit-identical, tie-free inputs.

    ``points`` [L, 2] anchor centres (grid units) and ``stride`` [L, 1], levels as the head's;
    ``distances`` [L, 4] ltrb (stride units); ``boxes`` [L, 4] xyxy input pixels; ``scores`` [L, C];
    ``coeffs`` [L, M]; ``proto`` [M, size / 4, size / 4].
    """
    r = _rng(SAMPLE_SEED, "synthetic_head")
    points, stride = [], []
    for s in strides:
        n = size // s
        ys, xs = np.mgrid[0:n, 0:n]
        points.append(np.stack([xs, ys], -1).reshape(-1, 2) + 0.5)
        stride.append(np.full((n * n, 1), s))
    points = np.concatenate(points).astype(np.float32)
    stride = np.concatenate(stride).astype(np.float32)
    n = len(points)
    dist = (r.integers(8, 64, (n, 4)) / 16).astype(np.float32)
    boxes = (np.concatenate([points - dist[:, :2], points + dist[:, 2:]], -1) * stride).astype(np.float32)
    rank = r.permutation(n * num_classes).reshape(n, num_classes)
    scores = (rank + 0.5) / (n * num_classes) * r.uniform(0, 1, num_classes) ** 3
    return {
        "points": points,
        "stride": stride,
        "distances": dist,
        "boxes": boxes,
        "scores": scores.astype(np.float32),
        "coeffs": r.normal(0, 1, (n, num_masks)).astype(np.float32),
        "proto": r.normal(0, 1 / np.sqrt(num_masks), (num_masks, size // 4, size // 4)).astype(np.float32),
    }


def sample_index(key: str, size: int) -> np.ndarray:
    n = min(N_SAMPLES, size)
    return np.sort(_rng(SAMPLE_SEED, key).choice(size, n, replace=False))


def summarise(key: str, a: np.ndarray) -> dict:
    """The stored form of an intermediate tensor: values at fixed positions and three statistics."""
    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(-1)
    return {
        f"{key}:sample": flat[sample_index(key, flat.size)],
        f"{key}:shape": np.array(a.shape),
        f"{key}:stats": np.array(
            [flat.mean(dtype=np.float64), flat.std(dtype=np.float64), np.abs(flat).max()], np.float64
        ),
    }


def training_targets(size: int = INPUT_SIZE) -> dict:
    """Three fixed instances (two rectangles and a disc) for the training-loss check:
    ``labels`` int64 [3], ``boxes`` float32 [3, 4] normalised cxcywh (tight), ``masks`` float32 [3, size, size]."""
    yy, xx = np.mgrid[0:size, 0:size]
    s = size / 320.0
    masks = [
        ((xx >= 30 * s) & (xx < 150 * s) & (yy >= 40 * s) & (yy < 120 * s)),
        ((xx >= 170 * s) & (xx < 300 * s) & (yy >= 150 * s) & (yy < 290 * s)),
        ((xx - 90 * s) ** 2 + (yy - 230 * s) ** 2 < (55 * s) ** 2),
    ]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        boxes.append([(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size])
    return {
        "labels": np.array([5, 17, 42], np.int64),
        "boxes": np.array(boxes, np.float32),
        "masks": np.stack(masks).astype(np.float32),
    }
