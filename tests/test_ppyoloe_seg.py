"""PP-YOLOE_seg-S (workbench.models.ppyoloe_seg): architecture size, the Paddle key names and the
.pdparams converter, the assigner and losses, Results from the model object, ONNX parity."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from workbench.models.ppyoloe_seg import convert
from workbench.models.ppyoloe_seg.assigner import TaskAlignedAssigner
from workbench.models.ppyoloe_seg.loss import build_criterion, dfl_loss, giou_loss
from workbench.models.ppyoloe_seg.model import EXPECTED_PARAMS, build_ppyoloe_seg, count_parameters
from workbench.models.ppyoloe_seg.postprocess import multiclass_nms


@pytest.fixture(scope="module")
def net80():
    torch.manual_seed(0)
    return build_ppyoloe_seg("S", 80).eval()


def test_parameter_count_matches_paddledetection(net80):
    # PaddleDetection's configs/ppyoloe_seg/README.md: 8.99 M for PP-YOLOE_seg-S
    n = count_parameters(net80)
    assert n == EXPECTED_PARAMS["S"] == 8_995_715
    assert abs(n / 1e6 - 8.99) < 0.01
    cfg = net80.config
    assert (cfg["depth_mult"], cfg["width_mult"]) == (0.33, 0.50)
    assert net80.backbone.out_channels == [128, 256, 512] and net80.neck.out_channels == [384, 192, 96]
    assert [len(s.blocks) for s in net80.backbone.stages] == [1, 2, 2, 1]
    assert net80.yolo_head.num_protos == 128


def test_outputs_at_640(net80):
    with torch.no_grad():
        out = net80(torch.rand(1, 3, 640, 640))
    assert out["scores"].shape == (1, 8400, 80) and out["boxes"].shape == (1, 8400, 4)
    assert out["coeffs"].shape == (1, 8400, 32) and out["proto"].shape == (1, 32, 160, 160)
    assert out["reg_distri"].shape == (1, 8400, 68)
    # the head's initialisation: scores start at 0.01
    assert torch.allclose(out["scores"], torch.full_like(out["scores"], 0.01), atol=1e-6)


def _paddle_params(net) -> dict:
    """Our state dict under Paddle's names (what a PaddleDetection .pdparams holds)."""
    out = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        k = k.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        out[k] = v.detach().cpu().numpy()
    return out


def test_paddle_key_names(net80):
    keys = set(_paddle_params(net80))
    for k in ("backbone.stem.conv3.bn._variance", "backbone.stages.0.blocks.0.conv2.alpha",
              "backbone.stages.3.attn.fc.weight", "neck.fpn_stages.0.0.convs.spp.conv.conv.weight",
              "neck.pan_routes.1.conv.weight", "yolo_head.stem_ins.2.fc.bias", "yolo_head.pred_reg.0.weight",
              "yolo_head.proj_conv.weight", "yolo_head.proto.upsample.weight", "yolo_head.proto.conv3.bn._mean"):
        assert k in keys, k


def test_pdparams_round_trip_and_create_model(net80, tmp_path):
    params = _paddle_params(net80)
    path = tmp_path / "ppyoloe_seg_s_80e_coco.pdparams"
    with open(path, "wb") as f:
        pickle.dump(params, f, protocol=4)
    sd = convert.convert_state_dict(params, convert.reference_state_dict("S", 80))
    for k, v in net80.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert convert.infer_variant(params) == "S" and convert.infer_num_classes(params) == 80
    from workbench.models.ppyoloe_seg.facade import create_model

    m = create_model("PP-YOLOE_seg-S", weights=str(path), device="cpu", input_size=64)
    assert len(m.classes) == 80 and m.classes.names[0] == "person"
    for k, v in net80.state_dict().items():
        assert torch.equal(m.net.state_dict()[k], v), k
    bad = dict(params)
    bad["yolo_head.pred_ins.0.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        convert.convert_state_dict(bad, convert.reference_state_dict("S", 80))


def test_assigner_picks_anchors_inside_the_box():
    pts = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])
    pred_boxes = torch.tensor([[[0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]]], dtype=torch.float32)
    scores = torch.full((1, 4, 2), 0.5)
    gt = torch.tensor([[[0.0, 0.0, 9.0, 9.0]]])
    labels, boxes, soft, idx = TaskAlignedAssigner(topk=2)(scores, pred_boxes, pts, torch.tensor([[[1]]]), gt,
                                                          torch.ones(1, 1, 1), bg_index=2)
    assert labels.tolist() == [[1, 2, 2, 2]]
    assert torch.equal(boxes[0, 0], gt[0, 0]) and soft[0, 0, 1] > 0 and soft[0, 1:].sum() == 0
    assert soft[0, 0, 1] == pytest.approx(64 / 81, rel=1e-4)  # normalised metric x max IoU


def test_box_losses():
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert giou_loss(b, b).item() == pytest.approx(0.0, abs=1e-6)
    assert giou_loss(b, b + 4).item() == pytest.approx(1 + (36 - 8) / 36, rel=1e-5)
    logits = torch.full((1, 4, 17), -20.0)
    logits[..., 3] = 20.0
    assert dfl_loss(logits, torch.full((1, 4), 3.0)).item() == pytest.approx(0.0, abs=1e-4)


def test_losses_train_and_handle_empty_images():
    torch.manual_seed(0)
    net = build_ppyoloe_seg("S", 2)
    crit = build_criterion(2)
    m = torch.zeros(1, 64, 64)
    m[:, 10:40, 12:30] = 1
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[21 / 64, 25 / 64, 18 / 64, 30 / 64]]), "masks": m},
               {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 64, 64)}]
    losses = crit(net(torch.rand(2, 3, 64, 64)), targets)
    assert set(losses) == {"loss_cls", "loss_iou", "loss_dfl", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert net.yolo_head.pred_ins[2].weight.grad.abs().sum() > 0
    none = crit(net(torch.rand(1, 3, 64, 64)), targets[1:])
    assert none["loss_mask"] == 0 and torch.isfinite(none["loss_cls"])


def test_multiclass_nms_is_per_class():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.8], [0.85, 0.0], [0.005, 0.3]])
    b, s, c, a = multiclass_nms(boxes, scores)
    assert list(zip(a.tolist(), c.tolist())) == [(0, 0), (0, 1), (2, 1)]  # (1, 0) suppressed, 0.005 dropped
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.3])


def test_model_object_predicts_results(tmp_path):
    from workbench.engine.result import Result
    from workbench.models.ppyoloe_seg.facade import create_model

    torch.manual_seed(0)
    model = create_model("PP-YOLOE_seg-S", device="cpu", class_names=["a", "b"], input_size=64)
    for conv in model.net.yolo_head.pred_cls:  # at initialisation every score is 0.01, the NMS floor
        torch.nn.init.zeros_(conv.bias)
    img = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    r = next(model.predict(img, threshold=0.0))
    assert isinstance(r, Result) and r.image_size == (50, 70)
    assert len(r) > 0 and r.boxes.shape == (len(r), 4) and set(r.class_names) <= {"a", "b"}
    assert (r.boxes[:, 2] <= 70).all() and (r.boxes[:, 3] <= 50).all()
    assert r.mask_probs.shape == (len(r), 50, 70) and r.masks.shape == (len(r), 50, 70)
    ck = model.save(tmp_path / "m.pth")
    again = create_model("PP-YOLOE_seg-S", weights=str(ck), device="cpu")
    assert again.classes.names == ["a", "b"] and again.input_size == 64


def test_onnx_export_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")  # noqa: F841
    from workbench.models.ppyoloe_seg.export import run_onnx
    from workbench.models.ppyoloe_seg.facade import create_model

    torch.manual_seed(0)
    model = create_model("PP-YOLOE_seg-S", device="cpu", class_names=["a", "b"], input_size=64)
    for p in model.net.parameters():  # non-trivial head outputs
        if p.requires_grad:
            p.data.add_(torch.randn_like(p) * 0.01)
    path = model.export(tmp_path / "m.onnx")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.net(x)
    got = run_onnx(path, x.numpy())
    for k, v in got.items():
        np.testing.assert_allclose(v, ref[k].numpy(), rtol=1e-3, atol=1e-4, err_msg=k)
