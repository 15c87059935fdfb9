"""Write the Paddle reference fixtures of ``tests/test_paddle_parity.py`` (Mask-RT-DETR S/M/L/X/H).

Run by hand, in a separate environment that has ``paddlepaddle`` (CPU is enough) and
PaddleDetection's source -- never in the project's own environment::

    <paddle-venv>/bin/python tools/paddle_parity.py --pd-src /path/to/PaddleDetection [S M L X H] [--loss]

For each variant it builds PaddleDetection's model from
``configs/mask_rtdetr/mask_rtdetr_hgnetv2_<v>_6x_coco.yml``, overwrites every parameter and buffer
with ``paddle_parity_common.make_param(name, shape)`` (a numpy generator seeded by the name), runs
the eval forward on the committed input ``tests/paddle_parity/input.npz`` and writes
``tests/paddle_parity/mask_rtdetr_<v>.npz``: the ``{name: shape}`` manifest, summaries of the
backbone, AIFI, encoder, mask-feature and decoder-layer outputs, and the final logits/boxes of the
first queries and mask logits of the first few. ``--loss`` adds (S only) the training-mode losses
with denoising off, every ``paddle.rand`` drawn from a fixed numpy uniform stream.

The input image is made once (``--make-input``) from ``data/demo_labelme/arc2017_left.jpg``.
See docs/mask_rtdetr.md, "Parity with PaddleDetection".
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


def build(pd_src: Path, variant: str):
    import paddle
    from ppdet.core.workspace import create, load_config

    cfg = load_config(str(pd_src / "configs" / "mask_rtdetr" / f"mask_rtdetr_hgnetv2_{variant.lower()}_6x_coco.yml"))
    # eval mode uses position embeddings and anchors precomputed for eval_size (a shared key)
    cfg["eval_size"] = [C.INPUT_SIZE, C.INPUT_SIZE]
    model = create(cfg.architecture)
    sd = model.state_dict()
    manifest = {k: [int(s) for s in v.shape] for k, v in sd.items()}
    params = C.make_params(manifest, C.WEIGHT_SEEDS[variant])
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in params.items()})
    for k, v in model.state_dict().items():  # every entry really holds the generated value
        assert np.array_equal(v.numpy(), params[k]), k
    return model, manifest


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
    h, w = x.shape[2:]
    inputs = {
        "image": paddle.to_tensor(x),
        "im_shape": paddle.to_tensor([[float(h), float(w)]]),
        "scale_factor": paddle.to_tensor([[1.0, 1.0]]),
    }
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


def train_loss_reference(model, x: np.ndarray) -> dict:
    """Training-mode losses with denoising off; every paddle.rand from one numpy uniform stream."""
    import paddle

    stream = np.random.RandomState(C.LOSS_STREAM_SEED)
    real_rand = paddle.rand

    def rand(shape, dtype=None, name=None):
        shape = [int(s) for s in shape]
        return paddle.to_tensor(stream.rand(int(np.prod(shape))).astype("float32").reshape(shape))

    t = C.training_targets(x.shape[2])
    model.transformer.num_denoising = 0
    model.train()
    h, w = x.shape[2:]
    inputs = {
        "image": paddle.to_tensor(x),
        "im_shape": paddle.to_tensor([[float(h), float(w)]]),
        "scale_factor": paddle.to_tensor([[1.0, 1.0]]),
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
    return {f"loss:{k}": np.float64(v.numpy().reshape(-1)[0]) for k, v in losses.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*", default=list(C.VARIANTS))
    ap.add_argument("--pd-src", type=Path, required=True, help="PaddleDetection source checkout")
    ap.add_argument("--make-input", action="store_true", help="(re)write tests/paddle_parity/input.npz first")
    ap.add_argument("--loss", action="store_true", help="also the training-mode losses (S only)")
    args = ap.parse_args(argv)

    sys.meta_path.insert(0, _OptionalFinder())
    sys.path.insert(0, str(args.pd_src))
    import paddle

    paddle.set_device("cpu")
    if args.make_input:
        make_input(C.INPUT_SIZE)
    image = np.load(FIXTURES / "input.npz")["image"]
    x = C.input_tensor(image)
    for v in [s.upper() for s in args.variants]:
        t0 = time.time()
        model, manifest = build(args.pd_src, v)
        ref = eval_reference(model, x)
        if args.loss and v == "S":
            ref.update(train_loss_reference(model, x))
        ref["manifest"] = np.array(json.dumps(manifest))
        ref["meta"] = np.array(
            json.dumps(
                {
                    "variant": v,
                    "paddle": paddle.__version__,
                    "input_size": C.INPUT_SIZE,
                    "weight_seed": C.WEIGHT_SEEDS[v],
                    "config": f"configs/mask_rtdetr/mask_rtdetr_hgnetv2_{v.lower()}_6x_coco.yml",
                }
            )
        )
        path = FIXTURES / f"mask_rtdetr_{v.lower()}.npz"
        np.savez_compressed(path, **ref)
        print(
            f"{v}: {len(manifest)} entries, wrote {path} ({path.stat().st_size / 1e3:.0f} kB) in {time.time() - t0:.0f} s"
        )
        if any(k.startswith("loss:") for k in ref):
            print("   ", {k: round(float(ref[k]), 6) for k in ref if k.startswith("loss:")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
