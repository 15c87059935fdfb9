"""Write the Paddle reference fixtures of ``tests/test_paddle_parity.py``: Mask-RT-DETR S/M/L/X/H
and PP-YOLOE_seg-S.

Run by hand, in a separate environment that has ``paddlepaddle`` (CPU is enough) and
PaddleDetection's source -- never in the project's own environment::

    <paddle-venv>/bin/python tools/paddle_parity.py --pd-src /path/to/PaddleDetection [S M L X H ppyoloe_seg_s] [--loss]

For each model it builds PaddleDetection's model from its config
(``configs/mask_rtdetr/mask_rtdetr_hgnetv2_<v>_6x_coco.yml``,
``configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml``), overwrites every parameter and buffer with
``paddle_parity_common.make_param(name, shape)`` (a numpy generator seeded by the name), runs the
eval forward on the committed input ``tests/paddle_parity/input.npz`` and writes
``tests/paddle_parity/<model>.npz`` with the ``{name: shape}`` manifest and:

* Mask-RT-DETR (``mask_rtdetr_<v>.npz``): summaries of the backbone, AIFI, encoder, mask-feature
  and decoder-layer outputs, and the final logits/boxes of the first queries and mask logits of
  the first few. ``--loss`` adds (S only) the training-mode losses with denoising off, every
  ``paddle.rand`` drawn from a fixed numpy uniform stream.
* PP-YOLOE_seg-S (``ppyoloe_seg_s.npz``): summaries of the backbone and neck outputs and of the
  head's class scores, box-distribution logits, decoded boxes, mask coefficients and prototypes,
  their full rows at a fixed subset of anchors, and the post-processed detections (NMS boxes,
  scores, labels, anchor indices, mask areas, the first masks bit-packed) of the tie-free
  synthetic head outputs ``paddle_parity_common.synthetic_head``. ``--loss`` adds the
  training-mode losses on ``paddle_parity_common.training_targets`` at ``PPYOLOE_LOSS_SIZE``
  (640: Paddle's mask loss normalises boxes by a fixed 640 x 640); nothing in it is random.

The input image is made once (``--make-input``) from ``data/demo_labelme/arc2017_left.jpg``.
See docs/mask_rtdetr.md, "Parity with PaddleDetection", and docs/ppyoloe_seg.md, "Paddle parity".
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "paddle_parity"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import paddle_parity_common as C  # noqa: E402

# packages ppdet imports at module level but the Mask-RT-DETR path never uses
OPTIONAL = {"imgaug", "lap", "motmetrics", "sklearn", "pyclipper", "visualdl", "terminaltables"}


class _Placeholder(types.ModuleType):
    """A stand-in module: every attribute is another stand-in, calling one returns one."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Placeholder(f"{self.__name__}.{name}")
        sub.__path__ = []
        setattr(self, name, sub)
        return sub

    def __call__(self, *args, **kwargs):
        return _Placeholder("result")


class _OptionalFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        top = fullname.split(".")[0]
        if top not in OPTIONAL:
            return None
        if fullname == top and importlib.machinery.PathFinder.find_spec(top) is not None:
            return None  # really installed
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        m = _Placeholder(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def make_input(size: int) -> None:
    import cv2

    img = cv2.imread(str(ROOT / "data" / "demo_labelme" / "arc2017_left.jpg"))[:, :, ::-1]
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURES / "input.npz", image=np.ascontiguousarray(img, dtype=np.uint8))
    print("wrote", FIXTURES / "input.npz", img.shape)


MASK_RTDETR_CONFIG = "configs/mask_rtdetr/mask_rtdetr_hgnetv2_{}_6x_coco.yml"
PPYOLOE_SEG_CONFIG = "configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml"


def build(pd_src: Path, config: str, seed: int):
    """PaddleDetection's model of ``config`` with every parameter and buffer from ``make_param``."""
    import paddle
    from ppdet.core.workspace import create, load_config

    cfg = load_config(str(pd_src / config))
    # eval mode uses position embeddings and anchors precomputed for eval_size (a shared key)
    cfg["eval_size"] = [C.INPUT_SIZE, C.INPUT_SIZE]
    model = create(cfg.architecture)
    sd = model.state_dict()
    manifest = {k: [int(s) for s in v.shape] for k, v in sd.items()}
    params = C.make_params(manifest, seed)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in params.items()})
    for k, v in model.state_dict().items():  # every entry really holds the generated value
        assert np.array_equal(v.numpy(), params[k]), k
    return model, manifest


def image_inputs(x: np.ndarray) -> dict:
    """The eval inputs of a PaddleDetection model: the image tensor at scale 1."""
    import paddle

    h, w = x.shape[2:]
    return {
        "image": paddle.to_tensor(x),
        "im_shape": paddle.to_tensor([[float(h), float(w)]]),
        "scale_factor": paddle.to_tensor([[1.0, 1.0]]),
    }


def eval_reference(model, x: np.ndarray) -> dict:
    import paddle

    model.eval()
    out: dict = {}
    tr = model.transformer
    hooks = [
        model.neck.encoder[0].register_forward_post_hook(
            lambda layer, inp, o: out.update(C.summarise("aifi", o.numpy()))
        )
    ]
    for i, layer in enumerate(tr.decoder.layers):
        hooks.append(
            layer.register_forward_post_hook(
                lambda layer, inp, o, i=i: out.update(C.summarise(f"decoder_layer{i}", o.numpy()))
            )
        )
    # the first layer's reference boxes: the (mask-enhanced) boxes of the selected queries
    hooks.append(
        tr.decoder.layers[0].register_forward_pre_hook(
            lambda layer, inp: out.update(C.summarise("decoder_ref0", inp[1].numpy()))
        )
    )
    inputs = image_inputs(x)
    # the query selection: indices of paddle.topk over the anchors' best class logit
    real_topk, selected = paddle.topk, []

    def topk(x, k, *args, **kwargs):
        r = real_topk(x, k, *args, **kwargs)
        if int(k) == tr.num_queries and not selected:
            selected.append((x.numpy().copy(), r[1].numpy().copy()))
        return r

    paddle.topk = topk
    try:
        out.update(_forward(model, inputs))
    finally:
        paddle.topk = real_topk
    for hk in hooks:
        hk.remove()
    scores, index = selected[0]
    out["query:index"] = index[0].astype(np.int64)  # [num_queries] anchor index of each query
    out["query:score"] = scores[0].astype(np.float32)  # [num_anchors] the score top-k ran on
    return out


def _forward(model, inputs) -> dict:
    import paddle

    out = {}
    with paddle.no_grad():
        feats = model.backbone(inputs)
        for i, f in enumerate(feats):
            out.update(C.summarise(f"backbone{i}", f.numpy()))
        enc_feats, mask_feat = model.neck(list(feats))
        for i, f in enumerate(enc_feats):
            out.update(C.summarise(f"encoder{i}", f.numpy()))
        out.update(C.summarise("mask_feat", mask_feat.numpy()))
        logits, boxes, masks = model.transformer((enc_feats, mask_feat), None, inputs)[:3]
    out["final:logits"] = logits[-1].numpy()[0, : C.N_QUERIES_KEPT]
    out["final:boxes"] = boxes[-1].numpy()[0, : C.N_QUERIES_KEPT]
    # mask logits of the first two queries and of the two with the largest boxes after them
    # (queries whose encoder mask has no positive pixel start from an empty box)
    b = boxes[-1].numpy()[0]
    rest = 2 + np.argsort(-(b[2:, 2] * b[2:, 3]), kind="stable")[: C.N_MASKS_KEPT - 2]
    out["final:mask_index"] = np.concatenate([[0, 1], rest]).astype(np.int64)
    out["final:masks"] = masks[-1].numpy()[0, out["final:mask_index"]]
    out.update(C.summarise("final_logits_all", logits[-1].numpy()))
    out.update(C.summarise("final_boxes_all", boxes[-1].numpy()))
    out.update(C.summarise("final_masks_all", masks[-1].numpy()))
    return out


def train_loss_reference(model, image: np.ndarray) -> dict:
    """Training-mode losses with denoising off; every paddle.rand from one numpy uniform stream."""
    import paddle

    x = C.input_tensor(image)
    stream = np.random.RandomState(C.LOSS_STREAM_SEED)
    real_rand = paddle.rand

    def rand(shape, dtype=None, name=None):
        shape = [int(s) for s in shape]
        return paddle.to_tensor(stream.rand(int(np.prod(shape))).astype("float32").reshape(shape))

    t = C.training_targets(x.shape[2])
    model.transformer.num_denoising = 0
    model.train()
    inputs = {
        **image_inputs(x),
        "gt_bbox": [paddle.to_tensor(t["boxes"])],
        "gt_class": [paddle.to_tensor(t["labels"].astype("int32")[:, None])],
        "gt_segm": [paddle.to_tensor(t["masks"])],
    }
    paddle.rand = rand
    try:
        losses = model(inputs)
    finally:
        paddle.rand = real_rand
    model.eval()
    return _losses(losses)


def _losses(losses: dict) -> dict:
    return {f"loss:{k}": np.float64(v.numpy().reshape(-1)[0]) for k, v in losses.items()}


def ppyoloe_eval_reference(model, x: np.ndarray) -> dict:
    """PP-YOLOE_seg eval forward: backbone, neck, head (raw and decoded); post-processing of
    ``C.synthetic_head`` (see there why not of this forward's head outputs)."""
    import paddle
    from ppdet.modeling.bbox_utils import batch_distance2bbox

    model.eval()
    head = model.yolo_head
    raw: dict = {"cls": [], "reg": [], "ins": []}  # per level [1, ch, h, w] prediction-conv outputs
    hooks = [
        layer.register_forward_post_hook(lambda layer, inp, o, k=k: raw[k].append(o.numpy()))
        for k, layers in (("cls", head.pred_cls), ("reg", head.pred_reg), ("ins", head.pred_ins))
        for layer in layers
    ]
    inputs = image_inputs(x)
    out: dict = {}
    try:
        with paddle.no_grad():
            feats = model.backbone(inputs)
            for i, f in enumerate(feats):
                out.update(C.summarise(f"backbone{i}", f.numpy()))
            neck = model.neck(feats)
            for i, f in enumerate(neck):
                out.update(C.summarise(f"neck{i}", f.numpy()))
            scores, dist, coeffs, proto, points, stride = head(neck)
            boxes = batch_distance2bbox(points, dist) * stride
    finally:
        for hk in hooks:
            hk.remove()

    def rows(levels):  # [1, ch, h, w] per level -> [1, L, ch]
        return np.concatenate([a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1) for a in levels], 1)

    head_full = {
        "scores": scores.numpy().transpose(0, 2, 1),  # [1, L, C]
        "reg_distri": rows(raw["reg"]),  # [1, L, 4 * (reg_max + 1)] bin logits
        "boxes": boxes.numpy(),  # [1, L, 4] xyxy input pixels
        "coeffs": coeffs.numpy().transpose(0, 2, 1),  # [1, L, num_masks]
        "proto": proto.numpy(),  # [1, num_masks, H/4, W/4]
    }
    assert np.allclose(head_full["scores"], 1 / (1 + np.exp(-rows(raw["cls"]))), atol=1e-6)
    assert np.array_equal(head_full["coeffs"], rows(raw["ins"]))
    anchors = C.anchor_subset(head_full["scores"].shape[1])
    out["head:anchor_index"] = anchors
    for k, a in head_full.items():
        out.update(C.summarise(f"head_{k}", a))
        if k != "proto":
            out[f"head:{k}"] = a[0, anchors]
    out.update(ppyoloe_post_reference(head, inputs))
    return out


def ppyoloe_post_reference(head, inputs: dict) -> dict:
    """Paddle's post-processing (multi-class NMS, masks) of ``C.synthetic_head``'s outputs."""
    import paddle

    h, w = inputs["image"].shape[2:]
    syn = C.synthetic_head(h)
    t = {k: paddle.to_tensor(v) for k, v in syn.items()}
    head_outs = (
        t["scores"].T[None],  # [1, C, L]
        t["distances"][None],  # [1, L, 4]
        t["coeffs"].T[None],  # [1, M, L]
        t["proto"][None],  # [1, M, H/4, W/4]
        t["points"],
        t["stride"],
    )
    with paddle.no_grad():
        bbox, bbox_num, mask, keep = head.post_process(
            head_outs, im_shape=inputs["im_shape"], scale_factor=inputs["scale_factor"], infer_shape=[h, w]
        )
    n = int(bbox_num.numpy().sum())
    b = bbox.numpy()[:n]
    m = mask.numpy()[:n] > 0.5
    k = min(n, C.N_POST_MASKS_KEPT)
    return {
        "post:labels": b[:, 0].astype(np.int64),
        "post:scores": b[:, 1].astype(np.float32),
        "post:boxes": b[:, 2:6].astype(np.float32),  # input pixels (scale 1), not clipped
        "post:anchor_index": keep.numpy().reshape(-1)[:n].astype(np.int64),
        "post:mask_area": m.reshape(n, -1).sum(1).astype(np.int64),
        "post:masks": np.packbits(m[:k].reshape(k, -1), axis=1),  # the first detections' masks
    }


def ppyoloe_loss_reference(model, image: np.ndarray) -> dict:
    """PP-YOLOE_seg training-mode losses on the fixed targets, at ``C.PPYOLOE_LOSS_SIZE``."""
    import paddle

    x = C.input_tensor(C.loss_image(image))
    t = C.training_targets(x.shape[2])
    n = len(t["labels"])
    model.train()
    inputs = {
        **image_inputs(x),
        "gt_bbox": [paddle.to_tensor(C.xyxy_pixels(t["boxes"], x.shape[2]))],
        "gt_class": [paddle.to_tensor(t["labels"].astype("int32")[:, None])],
        "pad_gt_mask": [paddle.to_tensor(np.ones((n, 1), np.float32))],
        "gt_segm": [paddle.to_tensor(t["masks"])],
    }
    try:
        losses = model(inputs)
    finally:
        model.eval()
    return _losses(losses)


def mask_rtdetr_spec(v: str) -> dict:
    cfg = MASK_RTDETR_CONFIG.format(v.lower())
    return {
        "config": cfg,
        "seed": C.WEIGHT_SEEDS[v],
        "fixture": f"mask_rtdetr_{v.lower()}.npz",
        "eval": eval_reference,
        "loss": train_loss_reference if v == "S" else None,
        "meta": {"variant": v},
    }


def ppyoloe_seg_spec() -> dict:
    return {
        "config": PPYOLOE_SEG_CONFIG,
        "seed": C.PPYOLOE_SEG_SEED,
        "fixture": "ppyoloe_seg_s.npz",
        "eval": ppyoloe_eval_reference,
        "loss": ppyoloe_loss_reference,
        "meta": {"model": "PP-YOLOE_seg-S", "variant": "S", "loss_input_size": C.PPYOLOE_LOSS_SIZE},
    }


def model_spec(name: str) -> dict:
    if name.upper() in C.VARIANTS:
        return mask_rtdetr_spec(name.upper())
    if name.lower().replace("-", "_") == "ppyoloe_seg_s":
        return ppyoloe_seg_spec()
    raise SystemExit(f"unknown model {name!r}: one of {', '.join(C.VARIANTS)}, ppyoloe_seg_s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=[*C.VARIANTS, "ppyoloe_seg_s"], help="S M L X H ppyoloe_seg_s")
    ap.add_argument("--pd-src", type=Path, required=True, help="PaddleDetection source checkout")
    ap.add_argument("--make-input", action="store_true", help="(re)write tests/paddle_parity/input.npz first")
    ap.add_argument(
        "--loss", action="store_true", help="also the training-mode losses (Mask-RT-DETR-S, PP-YOLOE_seg-S)"
    )
    args = ap.parse_args(argv)
    specs = [model_spec(m) for m in args.models]

    sys.meta_path.insert(0, _OptionalFinder())
    sys.path.insert(0, str(args.pd_src))
    import paddle

    paddle.set_device("cpu")
    if args.make_input:
        make_input(C.INPUT_SIZE)
    image = np.load(FIXTURES / "input.npz")["image"]
    x = C.input_tensor(image)
    for spec in specs:
        t0 = time.time()
        model, manifest = build(args.pd_src, spec["config"], spec["seed"])
        ref = spec["eval"](model, x)
        if args.loss and spec["loss"] is not None:
            ref.update(spec["loss"](model, image))
        ref["manifest"] = np.array(json.dumps(manifest))
        meta = {
            **spec["meta"],
            "paddle": paddle.__version__,
            "input_size": C.INPUT_SIZE,
            "weight_seed": spec["seed"],
            "config": spec["config"],
        }
        ref["meta"] = np.array(json.dumps(meta))
        path = FIXTURES / spec["fixture"]
        np.savez_compressed(path, **ref)
        print(
            f"{spec['fixture']}: {len(manifest)} entries, wrote {path} ({path.stat().st_size / 1e3:.0f} kB)"
            f" in {time.time() - t0:.0f} s"
        )
        if any(k.startswith("loss:") for k in ref):
            print("   ", {k: round(float(ref[k]), 6) for k in ref if k.startswith("loss:")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
