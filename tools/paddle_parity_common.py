"""What both sides of the Mask-RT-DETR parity check compute identically, in numpy only.

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
VARIANTS = ("S", "M", "L", "X", "H")
LOSS_STREAM_SEED = 777  # uniform stream both sides' random mask sample points are drawn from


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def make_param(name: str, shape, seed: int = WEIGHT_SEED) -> np.ndarray:
    """The float32 value of Paddle parameter/buffer ``name`` with ``shape``.

    BN running mean N(0, 0.2), running variance U(0.5, 2); 1-D weights (BN/LayerNorm scales)
    U(0.6, 1.4); 1-D biases N(0, 0.1); 2-D (Paddle Linear [in, out]) and 4-D (conv [out, in/g, kh,
    kw]) weights N(0, 1/fan_in) with fan_in = shape[0] resp. prod(shape[1:]); the last layer of
    ``mask_query_head`` times ``MASK_HEAD_GAIN``.
    """
    shape = tuple(int(s) for s in shape)
    r = _rng(seed, name)
    if name.endswith("._mean"):
        a = r.normal(0.0, 0.2, shape)
    elif name.endswith("._variance"):
        a = r.uniform(0.5, 2.0, shape)
    elif len(shape) == 1 and name.endswith(".weight"):
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
    return a.astype(np.float32)


def make_params(manifest: dict, seed: int = WEIGHT_SEED) -> dict:
    """``{name: array}`` for a ``{name: shape}`` manifest."""
    return {k: make_param(k, s, seed) for k, s in manifest.items()}


def input_tensor(image_hwc_uint8: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] float32 in [0, 1] from the committed RGB uint8 image."""
    return (image_hwc_uint8.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].copy()


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
