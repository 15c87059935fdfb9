"""The PyTorch port of Mask-RT-DETR against PaddleDetection's own model, without Paddle.

``tools/paddle_parity.py`` ran PaddleDetection's S/M/L/X/H with every parameter and buffer drawn
from a numpy generator seeded by the parameter's name and stored the outputs in
``tests/paddle_parity/``. Here the same weights are rebuilt from the stored ``{name: shape}``
manifest (``tools/paddle_parity_common.py``), written as a ``.pdparams`` file, loaded through the
public ``create_model(..., weights=path)`` route and run on the same input. Tolerances are fp32
rounding (see docs/mask_rtdetr.md, "Parity with PaddleDetection").
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


def _fixture(variant):
    path = FIXTURES / f"mask_rtdetr_{variant.lower()}.npz"
    if not path.exists():
        pytest.skip(f"{path.name} not generated (tools/paddle_parity.py)")
    return np.load(path)


@pytest.fixture(scope="module")
def image():
    return torch.from_numpy(C.input_tensor(np.load(FIXTURES / "input.npz")["image"]))


def _model(ref, tmp_path, **overrides):
    meta = json.loads(str(ref["meta"]))
    manifest = json.loads(str(ref["manifest"]))
    path = tmp_path / f"parity_{meta['variant'].lower()}.pdparams"
    write_pdparams(C.make_params(manifest, int(meta["weight_seed"])), path)
    model = wb.create_model(f"Mask-RT-DETR-{meta['variant']}", weights=str(path), device="cpu", **overrides)
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


def compare_eval(ref, out):
    """``{stage: (max abs diff, largest reference magnitude)}``; asserts the tolerances."""
    rows = {}
    stages = sorted({k.split(":")[0] for k in ref.files if k.endswith(":sample")})
    for s in stages:
        assert tuple(ref[f"{s}:shape"]) == tuple(out[f"{s}:shape"]), s
        a, b = ref[f"{s}:sample"].astype(np.float64), out[f"{s}:sample"].astype(np.float64)
        scale = float(ref[f"{s}:stats"][2])
        d = float(np.abs(a - b).max())
        rows[s] = (d, scale)
        assert d <= TOL_INTERMEDIATE * max(scale, 1.0), f"{s}: max abs diff {d:.3e} (max |ref| {scale:.3g})"
        np.testing.assert_allclose(out[f"{s}:stats"], ref[f"{s}:stats"], rtol=1e-4, atol=1e-4 * max(scale, 1.0))
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
