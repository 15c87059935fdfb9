"""The PyTorch ports of Mask-RT-DETR and PP-YOLOE_seg against PaddleDetection's own models,
without Paddle.

``tools/paddle_parity.py`` ran PaddleDetection's Mask-RT-DETR S/M/L/X/H and PP-YOLOE_seg-S with
every parameter and buffer drawn from a numpy generator seeded by the parameter's name and stored
the outputs in ``tests/paddle_parity/``. Here the same weights are rebuilt from the stored
``{name: shape}`` manifest (``tools/paddle_parity_common.py``), written as a ``.pdparams`` file,
loaded through the public ``create_model(..., weights=path)`` route and run on the same input.
Tolerances are fp32 rounding (see docs/mask_rtdetr.md, "Parity with PaddleDetection", and
docs/ppyoloe_seg.md, "Paddle parity").
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.engine.weights import write_pdparams

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "paddle_parity"

_spec = importlib.util.spec_from_file_location("paddle_parity_common", ROOT / "tools" / "paddle_parity_common.py")
C = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(C)

# max abs difference allowed, relative to the reference tensor's largest magnitude (intermediate
# stages; values of fp32 rounding that grows through ~100 layers) and absolute (final outputs)
TOL_INTERMEDIATE = 2e-5
TOL = {"logits": 5e-5, "boxes": 1e-5, "masks": 5e-4}
TOL_LOSS_REL = 1e-3  # measured up to 2.1e-4 (loss_mask; see docs)


def _fixture(variant, stem="mask_rtdetr"):
    path = FIXTURES / f"{stem}_{variant.lower()}.npz"
    if not path.exists():
        pytest.skip(f"{path.name} not generated (tools/paddle_parity.py)")
    return np.load(path)


@pytest.fixture(scope="module")
def image():
    return torch.from_numpy(C.input_tensor(np.load(FIXTURES / "input.npz")["image"]))


def _model(ref, tmp_path, **overrides):
    """The port's network, loaded through ``create_model`` from a .pdparams of the fixture's weights."""
    meta = json.loads(str(ref["meta"]))
    manifest = json.loads(str(ref["manifest"]))
    path = tmp_path / f"parity_{meta['variant'].lower()}.pdparams"
    write_pdparams(C.make_params(manifest, int(meta["weight_seed"])), path)
    name = meta.get("model", f"Mask-RT-DETR-{meta['variant']}")
    model = wb.create_model(name, weights=str(path), device="cpu", **overrides)
    path.unlink()
    return model.net


def _port_outputs(net, x, ref):
    """The port's summaries, its queries put in Paddle's order (see ``_query_order``)."""
    out, full, selected = {}, {}, []
    hooks = [net.neck.encoder[0].register_forward_hook(
        lambda m, i, o: out.update(C.summarise("aifi", o.detach().numpy()))),
        net.transformer.decoder.layers[0].register_forward_pre_hook(
            lambda m, a: full.update(decoder_ref0=a[1].detach().numpy()))]
    for k, layer in enumerate(net.transformer.decoder.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, i, o, k=k: full.update({f"decoder_layer{k}": (o[0] if isinstance(o, tuple) else o)
                                              .detach().numpy()})))
    real_topk = torch.topk

    def topk(t, k, *args, **kwargs):
        r = real_topk(t, k, *args, **kwargs)
        if int(k) == net.transformer.num_queries and not selected:
            selected.append((t.detach().numpy()[0], r.indices.numpy()[0]))
        return r

    net.eval()
    torch.topk = topk
    try:
        with torch.no_grad():
            feats = net.backbone(x)
            for k, f in enumerate(feats):
                out.update(C.summarise(f"backbone{k}", f.numpy()))
            enc_feats, mask_feat = net.neck(feats)
            for k, f in enumerate(enc_feats):
                out.update(C.summarise(f"encoder{k}", f.numpy()))
            out.update(C.summarise("mask_feat", mask_feat.numpy()))
            res = net.transformer(enc_feats, mask_feat)
    finally:
        torch.topk = real_topk
        for h in hooks:
            h.remove()
    score, index = selected[0]
    order = _query_order(ref, score, index)
    for key in ("logits", "boxes", "masks"):
        full[f"final_{key}_all"] = res[f"pred_{key}"].numpy()
    for key, a in full.items():  # every per-query tensor: [1, num_queries, ...]
        a = a[:, order]
        out.update(C.summarise(key, a))
        if key.startswith("final_"):
            out[f"final:{key.split('_')[1]}"] = a[0]
    return out


def _query_order(ref, score, index):
    """Position in the port's queries of each of Paddle's queries.

    Both sides select the same anchors; where two selected anchors' scores are equal to fp32
    rounding, their order may differ. The decoder treats queries independently of their order
    (self-attention has no positional bias), so the port's outputs are compared in Paddle's order.
    """
    ref_index, ref_score = ref["query:index"], ref["query:score"]
    np.testing.assert_allclose(score, ref_score, rtol=0, atol=TOL_INTERMEDIATE * max(1.0, np.abs(ref_score).max()))
    assert sorted(index.tolist()) == sorted(ref_index.tolist()), "different anchors selected"
    pos = {int(a): j for j, a in enumerate(index)}
    order = np.array([pos[int(a)] for a in ref_index])
    moved = np.nonzero(order != np.arange(len(order)))[0]
    # only near-ties may be ordered differently
    gaps = np.abs(np.diff(ref_score[ref_index]))
    for i in moved:
        near = gaps[max(i - 1, 0):i + 1]
        assert near.size and near.min() < 1e-4, f"query {i} moved without a near-tie"
    return order


def compare_summaries(ref, out, tol=TOL_INTERMEDIATE):
    """Every summarised stage (``C.summarise``): ``{stage: (max abs diff, largest reference
    magnitude)}``; the sampled values within ``tol`` x max(|ref|, 1), the statistics within 1e-4."""
    rows = {}
    stages = sorted({k.split(":")[0] for k in ref.files if k.endswith(":sample")})
    for s in stages:
        assert tuple(ref[f"{s}:shape"]) == tuple(out[f"{s}:shape"]), s
        a, b = ref[f"{s}:sample"].astype(np.float64), out[f"{s}:sample"].astype(np.float64)
        scale = float(ref[f"{s}:stats"][2])
        d = float(np.abs(a - b).max())
        rows[s] = (d, scale)
        assert d <= tol * max(scale, 1.0), f"{s}: max abs diff {d:.3e} (max |ref| {scale:.3g})"
        np.testing.assert_allclose(out[f"{s}:stats"], ref[f"{s}:stats"], rtol=1e-4, atol=1e-4 * max(scale, 1.0))
    return rows


def compare_eval(ref, out):
    """``{stage: (max abs diff, largest reference magnitude)}``; asserts the tolerances."""
    rows = compare_summaries(ref, out)
    n = len(ref["final:logits"])
    for key, a, b in (("logits", ref["final:logits"], out["final:logits"][:n]),
                      ("boxes", ref["final:boxes"], out["final:boxes"][:n]),
                      ("masks", ref["final:masks"], out["final:masks"][ref["final:mask_index"]])):
        d = float(np.abs(a.astype(np.float64) - b).max())
        rows[f"final {key}"] = (d, float(np.abs(a).max()))
        assert d <= TOL[key], f"final {key}: max abs diff {d:.3e}"
    # thresholded masks: no pixel away from 0 changes sign
    a, b = ref["final:masks"], out["final:masks"][ref["final:mask_index"]]
    assert not ((np.sign(a) != np.sign(b)) & (np.abs(a) > 1e-3)).any()
    return rows


def _run(variant, image, tmp_path):
    ref = _fixture(variant)
    # the fixture exercises the box path: not every selected query starts from an empty/full box
    b = ref["final:boxes"]
    assert ((b[:, 2] > 0.01) & (b[:, 3] > 0.01) & (b[:, 2] * b[:, 3] < 0.9)).mean() > 0.1
    net = _model(ref, tmp_path)
    rows = compare_eval(ref, _port_outputs(net, image, ref))
    for s, (d, scale) in rows.items():
        print(f"{variant} {s:22s} max abs diff {d:.2e}  max |ref| {scale:.3g}")


def test_parity_eval_s(image, tmp_path):
    _run("S", image, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["M", "L", "X", "H"])
def test_parity_eval(variant, image, tmp_path):
    _run(variant, image, tmp_path)


def test_parity_training_loss_s(image, tmp_path, monkeypatch):
    """Training mode, denoising off: every loss term equals Paddle's. The random mask sample points
    (matcher and criterion) come from the same numpy uniform stream as Paddle's ``paddle.rand``."""
    from workbench.models.mask_rtdetr.criterion import build_criterion

    ref = _fixture("S")
    ref_losses = {k[5:]: float(ref[k]) for k in ref.files if k.startswith("loss:")}
    if not ref_losses:
        pytest.skip("fixture has no training losses (tools/paddle_parity.py --loss)")
    net = _model(ref, tmp_path, num_denoising=0)
    net.train()
    crit = build_criterion(net.num_classes)
    stream = np.random.RandomState(C.LOSS_STREAM_SEED)

    def rand(*size, generator=None, device=None, dtype=None, **kw):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        size = [int(s) for s in size]
        return torch.from_numpy(stream.rand(int(np.prod(size))).astype("float32").reshape(size))

    monkeypatch.setattr(torch, "rand", rand)
    t = C.training_targets(image.shape[-1])
    targets = [{k: torch.from_numpy(v) for k, v in t.items()}]
    with torch.no_grad():
        losses = {k: float(v) for k, v in crit(net(image, targets), targets).items()}
    total = sum(losses.values())
    bad = []
    compared = 0
    for k, a in sorted(ref_losses.items()):
        b = total if k == "loss" else losses.get(k)
        if b is None:
            assert a == 0.0, k  # Paddle reports the DN terms as 0 when denoising is off
            continue
        compared += 1
        rel = abs(a - b) / max(abs(a), 1.0)
        print(f"loss {k:16s} paddle {a:14.6f} port {b:14.6f} rel diff {rel:.1e}")
        if rel > TOL_LOSS_REL:
            bad.append(f"{k}: paddle {a} port {b}")
    assert not bad, bad
    assert compared >= 10


# ------------------------------------------------------------------------------- PP-YOLOE_seg-S
# max abs difference relative to max(|ref|, 1) of every summarised stage, and absolute for the
# head rows kept at C.anchor_subset and the post-processed detections (see docs/ppyoloe_seg.md)
TOL_PPYOLOE_INTERMEDIATE = 2e-5
TOL_PPYOLOE = {"scores": 1e-5, "reg_distri": 5e-5, "boxes": 5e-4, "coeffs": 5e-5}
TOL_PPYOLOE_POST = {"scores": 0.0, "boxes": 0.0, "mask_pixels": 0.001}
# the Paddle loss terms are unweighted, the port's weighted (loss.LOSS_WEIGHT; the mask loss takes
# the iou weight); Paddle's loss_l1 is logged only, not part of its total
PPYOLOE_LOSS_WEIGHT_KEY = {"loss_cls": "class", "loss_iou": "iou", "loss_dfl": "dfl", "loss_mask": "iou"}


def _ppyoloe_outputs(net, x):
    """The port's summaries and head rows of the forward, and its post-processing of the synthetic
    head outputs, as the tool stores Paddle's."""
    from workbench.models.ppyoloe_seg.postprocess import NMS, binary_masks, decode, multiclass_nms

    out = {}
    net.eval()
    with torch.no_grad():
        feats = net.backbone(x)
        for i, f in enumerate(feats):
            out.update(C.summarise(f"backbone{i}", f.numpy()))
        neck = net.neck(feats)
        for i, f in enumerate(neck):
            out.update(C.summarise(f"neck{i}", f.numpy()))
        head = net.yolo_head(neck)
        anchors = C.anchor_subset(head["scores"].shape[1])
        for k in ("scores", "reg_distri", "boxes", "coeffs", "proto"):
            a = head[k].numpy()
            out.update(C.summarise(f"head_{k}", a))
            if k != "proto":
                out[f"head:{k}"] = a[0, anchors]
        # the post-processing of the synthetic head outputs (C.synthetic_head: why not of these)
        size = tuple(x.shape[-2:])
        syn = {k: torch.from_numpy(v)[None] for k, v in C.synthetic_head(size[0]).items()}
        det = decode(syn, [size])[0]
        out["post:anchor_index"] = multiclass_nms(syn["boxes"][0], syn["scores"][0], **NMS)[3].numpy()
        out["post:masks"] = binary_masks(det, size)
    for k in ("labels", "scores", "boxes"):
        out[f"post:{k}"] = det[k].numpy()
    return out


def compare_ppyoloe_post(ref, out, size):
    """Paddle's NMS output (grouped by class) and the port's (best first) as sets of (class,
    anchor); per detection its score, box (Paddle's clipped to the image, as the port's are),
    mask area and, for Paddle's first masks, every pixel. The inputs are bit-identical and
    tie-free, so the kept set must be identical; scores and boxes are copied, not computed."""
    key = lambda labels, anchors: [(int(c), int(a)) for c, a in zip(labels, anchors)]  # noqa: E731
    ref_keys = key(ref["post:labels"], ref["post:anchor_index"])
    pos = {k: i for i, k in enumerate(key(out["post:labels"], out["post:anchor_index"]))}
    assert len(pos) == len(ref_keys) and set(pos) == set(ref_keys), "different detections kept"
    j = np.array([pos[k] for k in ref_keys])
    rows = {}
    d = float(np.abs(ref["post:scores"].astype(np.float64) - out["post:scores"][j]).max())
    rows["post scores"] = d
    assert d <= TOL_PPYOLOE_POST["scores"], f"post scores: {d:.3e}"
    d = float(np.abs(np.clip(ref["post:boxes"], 0, size) - out["post:boxes"][j]).max())
    rows["post boxes"] = d
    assert d <= TOL_PPYOLOE_POST["boxes"], f"post boxes: {d:.3e}"
    masks = out["post:masks"][j]
    area = masks.reshape(len(j), -1).sum(1)
    d = float(np.abs(area - ref["post:mask_area"]).max())
    rows["post mask area (px)"] = d
    assert d <= TOL_PPYOLOE_POST["mask_pixels"] * size * size, f"post mask area: {d} px"
    n = len(ref["post:masks"])
    ref_masks = np.unpackbits(ref["post:masks"], axis=1, count=size * size).reshape(n, size, size).astype(bool)
    d = float((ref_masks != masks[:n]).reshape(n, -1).sum(1).max())
    rows["post masks (px differing)"] = d
    assert d <= TOL_PPYOLOE_POST["mask_pixels"] * size * size, f"post masks: {d} px differ"
    return rows


def test_parity_ppyoloe_seg_eval(image, tmp_path):
    ref = _fixture("S", "ppyoloe_seg")
    # the fixture exercises NMS: several classes, the keep-top-k cut, boxes clipped to the image
    assert len(ref["post:labels"]) == 300 and len(set(ref["post:labels"].tolist())) > 1
    assert (ref["post:boxes"] < 0).any()
    net = _model(ref, tmp_path)
    out = _ppyoloe_outputs(net, image)
    rows = {k: d for k, (d, _) in compare_summaries(ref, out, TOL_PPYOLOE_INTERMEDIATE).items()}
    np.testing.assert_array_equal(ref["head:anchor_index"], C.anchor_subset(int(ref["head_scores:shape"][1])))
    for k, tol in TOL_PPYOLOE.items():
        d = float(np.abs(ref[f"head:{k}"].astype(np.float64) - out[f"head:{k}"]).max())
        rows[f"head {k} (anchors)"] = d
        assert d <= tol, f"head {k}: max abs diff {d:.3e}"
    rows.update(compare_ppyoloe_post(ref, out, image.shape[-1]))
    for s, d in rows.items():
        scale = float(ref[f"{s}:stats"][2]) if f"{s}:stats" in ref.files else float("nan")
        print(f"PP-YOLOE_seg-S {s:28s} max abs diff {d:.2e}  max |ref| {scale:.3g}")


def test_parity_ppyoloe_seg_training_loss(tmp_path):
    """Training mode (batch statistics) at C.PPYOLOE_LOSS_SIZE on the fixed targets: every loss
    term equals Paddle's. Nothing is random in this loss."""
    from workbench.models.ppyoloe_seg.loss import build_criterion

    ref = _fixture("S", "ppyoloe_seg")
    ref_losses = {k[5:]: float(ref[k]) for k in ref.files if k.startswith("loss:")}
    if not ref_losses:
        pytest.skip("fixture has no training losses (tools/paddle_parity.py --loss)")
    net = _model(ref, tmp_path)
    crit = build_criterion(net.num_classes)
    x = torch.from_numpy(C.input_tensor(C.loss_image(np.load(FIXTURES / "input.npz")["image"])))
    t = C.training_targets(x.shape[-1])
    targets = [{k: torch.from_numpy(v) for k, v in t.items()}]
    net.train()
    with torch.no_grad():
        losses = {k: float(v) for k, v in crit(net(x), targets).items()}
    port = {k: losses[k] / crit.loss_weight[w] for k, w in PPYOLOE_LOSS_WEIGHT_KEY.items()}
    port["loss"] = sum(losses.values())
    bad = []
    for k, b in port.items():
        a = ref_losses[k]
        rel = abs(a - b) / max(abs(a), 1.0)
        print(f"loss {k:10s} paddle {a:14.6f} port {b:14.6f} rel diff {rel:.1e}")
        if rel > TOL_LOSS_REL:
            bad.append(f"{k}: paddle {a} port {b}")
    assert not bad, bad
    assert set(ref_losses) == set(port) | {"loss_l1"}
