"""Fine-tuning to other classes, the same for every family (``engine.weights.load_matching``):
the class-specific layers are re-initialised, every other tensor is loaded, and the log and
``train_result.json["init_weights"]`` say exactly which tensors were skipped and why. Each family
runs its registered smoke configuration: a 3-class checkpoint saved the family's way, fine-tuned
on a 2-class dataset."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from workbench.data.synthetic import make_shapes_dataset
from workbench.engine.errors import ClassMismatchError
from workbench.engine.weights import load_matching
from workbench.models import create_model, families, family_info

FAMILY_MODELS = {fam: family_info(names[0]).smoke["name"] for fam, names in families().items()}
OLD = ["apple", "pear", "plum"]


def _expected_class_specific(fam: str, k: int) -> dict[str, tuple]:
    """The class-specific tensors of the smoke model and their shapes for ``k`` classes."""
    if fam == "detectron2":  # R50-FPN body at depth 18: 1024-wide box head, 256-channel mask head
        return {
            "roi_heads.box_predictor.cls_score.weight": (k + 1, 1024),
            "roi_heads.box_predictor.cls_score.bias": (k + 1,),
            "roi_heads.box_predictor.bbox_pred.weight": (4 * k, 1024),
            "roi_heads.box_predictor.bbox_pred.bias": (4 * k,),
            "roi_heads.mask_head.predictor.weight": (k, 256, 1, 1),
            "roi_heads.mask_head.predictor.bias": (k,),
        }
    if fam == "ppyoloe_seg":  # the class branch of each of the three levels (neck widths 384/192/96)
        return {**{f"yolo_head.pred_cls.{i}.weight": (k, c, 3, 3) for i, c in enumerate((384, 192, 96))},
                **{f"yolo_head.pred_cls.{i}.bias": (k,) for i in range(3)}}
    return {
        "transformer.score_head.weight": (k, 256),
        "transformer.score_head.bias": (k,),
        "transformer.denoising_class_embed.weight": (k, 256),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft_data")
    make_shapes_dataset(d, num_train=2, num_val=1, size=(96, 96), seed=5)  # circle, square
    return d


@pytest.fixture(scope="module", params=sorted(FAMILY_MODELS))
def checkpoint(request, tmp_path_factory):
    fam = request.param
    name = FAMILY_MODELS[fam]
    smoke = family_info(name).smoke
    m = create_model(name, device="cpu", class_names=OLD, **smoke["model"])
    m.build()
    path = m.save(tmp_path_factory.mktemp(f"ck_{fam}") / "model.pth")
    return fam, name, smoke, path, torch.load(path, map_location="cpu", weights_only=True)["model"]


def _trainer_after_init(trainer_init, model, dataset, out, smoke):
    return trainer_init(model, dataset, out, {**smoke["train"], "ignore_class_mismatch": True})


def test_finetune_reinitialises_exactly_the_class_specific_layers(trainer_init, checkpoint, dataset, tmp_path):
    fam, name, smoke, path, ck = checkpoint
    model = create_model(name, weights=str(path), device="cpu", **smoke["model"])
    assert model.classes.names == OLD
    with pytest.raises(ClassMismatchError, match="apple"):  # named classes: fine-tuning to others is said
        model.train(dataset, output=tmp_path / "refused", progress=False, **smoke["train"])

    tr, rep = _trainer_after_init(trainer_init, model, dataset, tmp_path / "init", smoke)
    new = _expected_class_specific(fam, 2)
    old = _expected_class_specific(fam, 3)
    assert set(rep.skipped) == set(rep.class_specific_reinitialised) == set(new)
    for k, why in rep.skipped.items():
        assert why == f"checkpoint {old[k]} vs model {new[k]}, class-specific: re-initialised"
    assert not (rep.missing or rep.unexpected)
    own = tr.net.state_dict()
    assert sorted(rep.loaded) == sorted(k for k in own if k not in new) and len(rep.loaded) == len(ck) - len(new)
    for k in rep.loaded:  # before the first step every other tensor is the checkpoint's
        assert torch.equal(own[k].cpu(), ck[k]), k
    for k, shape in new.items():
        assert tuple(own[k].shape) == shape
    if fam in ("mask_rtdetr", "ppyoloe_seg"):  # the EMA copy (the weights evaluated and saved) starts from them too
        ema = tr.ema.module.state_dict()
        assert all(torch.equal(ema[k], own[k]) for k in own)

    out = tmp_path / "ft"
    res = model.train(
        dataset, output=out, progress=False, ignore_class_mismatch=True, **{**smoke["train"], "epochs_iters": 1}
    )
    saved = json.loads((out / "train_result.json").read_text())
    assert res["status"] == "done" and saved["init_weights"] == rep.to_dict()
    assert saved["init_weights"]["source"] == str(path) and saved["init_weights"]["loaded"] == len(rep.loaded)
    log = (out / "train.log").read_text()
    assert rep.summary() in log
    for k, why in rep.skipped.items():
        assert f"{k}: {why}" in log
    assert model.classes.names == ["circle", "square"]


def test_same_count_other_classes_still_reinitialises(trainer_init, checkpoint, tmp_path):
    """Three other classes: every shape fits, the class-specific layers are still re-initialised."""
    fam, name, smoke, path, ck = checkpoint
    ds = tmp_path / "three"
    make_shapes_dataset(ds, num_train=2, num_val=0, size=(96, 96), seed=1, classes=("circle", "square", "triangle"))
    model = create_model(name, weights=str(path), device="cpu", **smoke["model"])
    tr, rep = _trainer_after_init(trainer_init, model, ds, tmp_path / "init", smoke)
    shapes = _expected_class_specific(fam, 3)
    assert rep.skipped == {
        k: f"checkpoint {s} vs model {s}, class-specific and the classes differ: re-initialised"
        for k, s in shapes.items()
    }
    assert len(rep.loaded) == len(ck) - len(shapes) and not (rep.missing or rep.unexpected)


def test_load_matching_reports_every_case(caplog):
    class Net(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, k)
            self.extra = nn.Linear(2, 2)

    src, dst = Net(3).state_dict(), Net(5)
    src["body.weight"] = torch.zeros(4, 5)  # not class-specific, wrong shape
    src["old.buffer"] = torch.zeros(1)
    src["pixel_mean"] = torch.zeros(3)
    del src["extra.bias"]
    src = {f"module.{k}": v.numpy() for k, v in src.items()}  # a DDP checkpoint of numpy arrays
    before = dst.body.weight.detach().clone()
    with caplog.at_level("INFO", logger="workbench.weights"):
        rep = load_matching(dst, src, ("head.",), ignore={"pixel_mean": "a buffer set from the config"}, source="x.pth")
    assert rep.loaded == ["body.bias", "extra.weight"]
    assert rep.skipped == {
        "body.weight": "checkpoint (4, 5) vs model (4, 4), shape differs: left as initialised",
        "head.weight": "checkpoint (3, 4) vs model (5, 4), class-specific: re-initialised",
        "head.bias": "checkpoint (3,) vs model (5,), class-specific: re-initialised",
    }
    assert rep.missing == ["extra.bias"] and rep.unexpected == ["old.buffer"]
    assert rep.ignored == {"pixel_mean": "a buffer set from the config"} and not rep.complete
    assert torch.equal(dst.body.weight, before) and torch.equal(
        dst.extra.weight, torch.as_tensor(src["module.extra.weight"])
    )
    assert (
        "x.pth: 2 tensors loaded, 2 re-initialised (class-specific), 1 skipped (shape differs), 1 missing"
        in caplog.text
    )
    assert "missing from the checkpoint (left as initialised): extra.bias" in caplog.text
    assert "unexpected in the checkpoint (not used): old.buffer" in caplog.text
