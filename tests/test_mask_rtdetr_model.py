"""Mask-RT-DETR construction: exact parameter / state-dict counts and module output shapes."""
import pytest
import torch

from workbench.models.mask_rtdetr.box_ops import masks_to_boxes_cxcywh
from workbench.models.mask_rtdetr.denoising import get_denoising_training_group
from workbench.models.mask_rtdetr.model import (
    build_mask_rtdetr,
    count_parameters,
)
from workbench.models.mask_rtdetr.postprocess import PostProcess

# PaddleDetection's own models (num_classes=80, BN statistics not counted); their name/shape
# manifests are in tests/paddle_parity/mask_rtdetr_<v>.npz
PADDLE_PARAMS = {"S": 14_633_892, "M": 18_780_100, "L": 32_821_428, "X": 68_649_044, "H": 129_808_116}
PADDLE_ENTRIES = {"S": 646, "M": 736, "L": 816, "X": 1066, "H": 1298}
PROTOTYPES = {"S": 128, "M": 128, "L": 32, "X": 128, "H": 128}
ENC_DIM = {"S": 256, "M": 256, "L": 256, "X": 384, "H": 512}


@pytest.mark.parametrize("variant", list("SMLXH"))
def test_parameter_and_state_dict_counts(variant):
    model = build_mask_rtdetr(variant, num_classes=80)
    assert count_parameters(model) == PADDLE_PARAMS[variant]
    sd = model.state_dict()
    assert len(sd) == PADDLE_ENTRIES[variant]
    assert not any(k.endswith("num_batches_tracked") for k in sd)


def test_num_classes_changes_only_class_tensors():
    a = build_mask_rtdetr("S", num_classes=80)
    b = build_mask_rtdetr("S", num_classes=3)
    # score_head (256*C + C) and denoising_class_embed (C*256)
    assert count_parameters(a) - count_parameters(b) == (256 + 1 + 256) * 77


@pytest.mark.slow
@pytest.mark.parametrize("variant", list("SMLXH"))
def test_module_shapes_at_320(variant):
    torch.manual_seed(0)
    model = build_mask_rtdetr(variant, num_classes=80).eval()
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        feats = model.backbone(x)
        assert [tuple(f.shape[2:]) for f in feats] == [(80, 80), (40, 40), (20, 20), (10, 10)]
        assert [f.shape[1] for f in feats] == list(model.config["backbone_channels"])
        enc, mask_feat = model.neck(feats)
        assert [tuple(e.shape) for e in enc] == [(1, ENC_DIM[variant], s, s) for s in (40, 20, 10)]
        assert tuple(mask_feat.shape) == (1, PROTOTYPES[variant], 80, 80)
        out = model.transformer(enc, mask_feat)
    assert tuple(out["pred_logits"].shape) == (1, 300, 80)
    assert tuple(out["pred_boxes"].shape) == (1, 300, 4)
    assert tuple(out["pred_masks"].shape) == (1, 300, 80, 80)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    dets = PostProcess(num_top_queries=100)(out, [(240, 300)])
    d = dets[0]
    assert d["scores"].shape == (100,) and d["labels"].shape == (100,) and d["boxes"].shape == (100, 4)
    assert d["masks"].shape == (100, 240, 300) and d["masks"].dtype == torch.bool
    assert (d["scores"][:-1] >= d["scores"][1:]).all()


def test_training_outputs_structure():
    torch.manual_seed(0)
    model = build_mask_rtdetr("S", num_classes=3, num_queries=20, num_decoder_layers=3, num_denoising=12).train()
    x = torch.rand(2, 3, 128, 128)
    m = torch.zeros(2, 128, 128)
    m[0, 10:40, 10:50] = 1
    m[1, 60:120, 70:100] = 1
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.23, 0.2, 0.31, 0.23], [0.66, 0.7, 0.23, 0.47]]),
                "masks": m},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "masks": m[:1]}]
    out = model(x, targets)
    assert out["pred_logits"].shape == (2, 20, 3)
    assert out["pred_masks"].shape == (2, 20, 32, 32)
    # [enc, init, dec1, dec2] as auxiliary layers, dec3 is the main one
    assert len(out["aux_outputs"]) == 4
    # 12 // 2 = 6 groups of 2 (padded) GT slots; [init_dn, dec1..3]
    assert out["dn_meta"]["dn_num_group"] == 6 and out["dn_meta"]["dn_num_split"] == [12, 20]
    assert len(out["dn_outputs"]) == 4
    assert all(d["pred_boxes"].shape == (2, 12, 4) for d in out["dn_outputs"])
    assert [len(p) for p in out["dn_meta"]["dn_positive_idx"]] == [12, 6]


def test_denoising_attention_mask_blocks_groups():
    emb = torch.randn(5, 8)
    tg = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])}]
    cls, box, allowed, meta = get_denoising_training_group(tg, 5, 4, emb, num_denoising=6)
    assert cls.shape == (1, 6, 8) and box.shape == (1, 6, 4) and allowed.shape == (10, 10)
    assert meta["dn_num_group"] == 3
    assert not allowed[6:, :6].any()  # matching queries never see DN queries
    assert allowed[6:, 6:].all() and allowed[:, 6:].all()
    for g in range(3):
        s = slice(2 * g, 2 * g + 2)
        assert allowed[s, s].all()
        others = [i for i in range(6) if i not in range(2 * g, 2 * g + 2)]
        assert not allowed[s][:, others].any()


def test_masks_to_boxes_convention():
    m = torch.zeros(1, 2, 10, 20, dtype=torch.bool)
    m[0, 0, 2:5, 4:10] = True  # rows 2..4, cols 4..9
    b = masks_to_boxes_cxcywh(m)
    torch.testing.assert_close(b[0, 0], torch.tensor([7 / 20, 3.5 / 10, 6 / 20, 3 / 10]))
    torch.testing.assert_close(b[0, 1], torch.zeros(4))  # empty mask -> zero box


def test_anchor_quirk_divides_x_by_height():
    model = build_mask_rtdetr("S", num_classes=2, num_queries=10, num_decoder_layers=1)
    anchors, valid = model.transformer.generate_anchors([(4, 8)], torch.device("cpu"))
    a = torch.sigmoid(anchors[0][valid[0, :, 0]])
    # first valid row is y=0 (cy = 0.5/8), x index 1 -> cx = 1.5/4 (x divided by h, y by w)
    torch.testing.assert_close(a[1, :2], torch.tensor([1.5 / 4, 0.5 / 8]))
