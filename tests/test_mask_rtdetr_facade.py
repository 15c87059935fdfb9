"""The Mask-RT-DETR model facade: create_model / train / evaluate / predict / weights loading.

A reduced Mask-RT-DETR-S (20 queries, 2 decoder layers, 10 DN queries, 512 loss points, trainable
BN — the overfit test's configuration) trains for one epoch on a generated 128 px dataset.
"""
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.data.synthetic import make_shapes_dataset
from workbench.engine import classes as facade  # COCO_CATEGORY_IDS
from workbench.engine.errors import TrainingDivergedError, WeightsError
from workbench.engine.result import Result
from workbench.models.mask_rtdetr.facade import MODEL_NAMES, MaskRTDETRModel, create_model

SMALL = dict(num_queries=20, num_decoder_layers=2, num_denoising=10, freeze_norm=False, num_sample_points=512)
TRAIN = dict(batch_size=2, input_size=128, multi_scale=False, warmup_steps=5, progress=False, device="cpu")
MANIFEST = Path(__file__).parent / "mask_rtdetr_data" / "pd_keys_s.json"
OUTPUT_FILES = {"train_result.json", "train.log", "config.yaml", "metrics.jsonl", "model_final.pth",
                "model_0000001.pth", "last_checkpoint", "best_model"}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(d, 4, 2, (128, 128), seed=0)
    return d


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = create_model("Mask-RT-DETR-S", device="cpu", **SMALL)
    res = model.train(dataset_dir, epochs_iters=1, output=out, **TRAIN)
    return model, res, out


def test_names_and_registry():
    from workbench.models import registry

    registry.register_family(list(MODEL_NAMES), "workbench.models.mask_rtdetr.facade:create_model",
                             family="mask_rtdetr")
    m = registry.create_model("Mask-RT-DETR-M", device="cpu", **SMALL)
    assert isinstance(m, MaskRTDETRModel) and m.variant == "M"
    for factory in (create_model, registry.create_model):
        with pytest.raises(registry.UnknownModelError, match="Valid names") as e:
            factory("Mask-RT-DETR-Q")
        assert all(n in str(e.value) for n in MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown override"):
        create_model("Mask-RT-DETR-S", num_querys=10)


@pytest.mark.parametrize("name", list(MODEL_NAMES))
def test_create_each_variant(name):
    m = create_model(name, device="cpu", num_classes=3, **SMALL)
    net = m.net
    assert net.config["variant"] == name[-1] and net.num_classes == 3
    assert net.config["num_queries"] == 20 and len(net.transformer.decoder.layers) == 2
    if name == "Mask-RT-DETR-S":  # one forward for the smallest (the others are the same code)
        r = next(m.predict(np.zeros((64, 96, 3), np.uint8), threshold=0.0))
        assert r.image_size == (64, 96) and r.class_names[0].startswith("class_")


def test_train_outputs(trained):
    model, res, out = trained
    assert OUTPUT_FILES <= {p.name for p in out.iterdir()}
    assert (out / "best_model" / "model.pth").is_file()
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["done_flag"] and saved["status"] == "done" and saved["epochs_iters"] == 1 and saved["iterations"] == 2
    assert saved["unit"] == "epochs" and saved["max_iterations"] == 2
    assert saved["best_epochs_iters"] == 1 and "segm_AP" in saved["best_metrics"] and "bbox_AP" in saved["final_metrics"]
    assert saved["paths"]["best_model"] == str(out / "best_model")
    assert [c["name"] for c in saved["classes"]] == ["circle", "square"]
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    assert train and all(np.isfinite(r["total_loss"]) and "loss_mask" in r and "lr" in r for r in train)
    assert len(evals) == 1 and "segm_AP" in evals[0] and evals[0]["epoch"] == 1
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["Model"]["num_queries"] == 20 and cfg["Criterion"]["num_sample_points"] == 512
    assert "eval after epoch 1" in (out / "train.log").read_text()
    # the model object now holds the trained (best) weights
    assert model.weights == str(out / "best_model" / "model.pth") and model.classes.names == ["circle", "square"]


def test_reload_and_predict(trained, dataset_dir):
    _, _, out = trained
    for w in (out / "best_model", out / "model_final.pth"):
        m = create_model("Mask-RT-DETR-S", weights=w, device="cpu")
        assert m.overrides["num_queries"] == 20 and m.input_size == 128
        assert m.classes.names == ["circle", "square"] and m.classes.category_ids == [1, 2]
    from PIL import Image

    path = sorted((dataset_dir / "images").iterdir())[0]
    arr = np.asarray(Image.open(path).convert("RGB"))
    results = list(m.predict([str(path), arr, Image.open(path)], batch_size=2, threshold=0.0))
    assert len(results) == 3 and all(isinstance(r, Result) for r in results)
    r = results[0]
    assert r.input_path == str(path) and results[1].input_path is None
    assert r.image_size == arr.shape[:2] and len(r) > 0
    assert set(r.class_names) <= {"circle", "square"} and set(r.class_ids.tolist()) <= {1, 2}
    assert r.mask_probs is not None and r.mask_probs.shape == (len(r), *arr.shape[:2]) and r.masks.dtype == bool
    assert (r.boxes[:, 2] <= arr.shape[1]).all() and (r.boxes[:, 0] >= 0).all()
    np.testing.assert_allclose(results[1].scores, r.scores, atol=1e-5)
    folder = list(m.predict(dataset_dir / "images", threshold=0.3))
    assert len(folder) == 6 and all(len(x) == 0 or x.scores.min() >= 0.3 for x in folder)
    # a soft mask re-thresholds without running the model again
    r2 = r.filter(mask_threshold=0.9)
    assert r2.masks.sum() <= r.masks.sum()


def test_evaluate(trained, dataset_dir, tmp_path):
    model, _, _ = trained
    res = model.evaluate(dataset_dir, output=tmp_path / "eval")
    assert res["done_flag"] and res["model_name"] == "Mask-RT-DETR-S" and res["split"] == "val"
    assert 0.0 <= res["metrics"]["segm"]["AP"] <= 1.0 and "AP50" in res["metrics"]["bbox"]
    saved = json.loads((tmp_path / "eval" / "evaluate_result.json").read_text())
    assert saved["done_flag"] and "segm" in saved["metrics"] and "analysis" in saved and saved["model_name"] == "Mask-RT-DETR-S"
    assert (tmp_path / "eval" / "report.md").is_file()
    assert model.evaluate(dataset_dir)["done_flag"]  # without an output dir: only the returned dict


def test_resume_to_same_schedule(trained, dataset_dir, tmp_path):
    _, _, out = trained
    import shutil

    run = tmp_path / "run"
    shutil.copytree(out, run)
    m = create_model("Mask-RT-DETR-S", device="cpu", **SMALL)
    res = m.train(dataset_dir, epochs_iters=2, output=run, resume=True, **TRAIN)
    assert res["status"] == "done" and res["epochs_iters"] == 2 and res["iterations"] == 4
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["type"] == "eval"] == [1, 2]
    assert max(r["iter"] for r in recs) == 4
    ck = torch.load(run / "model_0000002.pth", weights_only=True)
    assert (run / "last_checkpoint").read_text() == "model_0000002.pth"
    assert ck["epoch"] == 2 and ck["ema"]["updates"] == 4


def test_nan_loss_stops_and_keeps_last_checkpoint(dataset_dir, tmp_path, monkeypatch):
    from workbench.models.mask_rtdetr import engine

    calls = {"n": 0}
    real = engine.total_loss

    def flaky(losses):
        calls["n"] += 1
        loss = real(losses)
        return loss * float("nan") if calls["n"] > 2 else loss  # second epoch diverges

    monkeypatch.setattr(engine, "total_loss", flaky)
    m = create_model("Mask-RT-DETR-S", device="cpu", **SMALL)
    with pytest.raises(TrainingDivergedError, match="model_0000001.pth"):
        m.train(dataset_dir, epochs_iters=3, output=tmp_path, save_training_state=False, **TRAIN)
    res = json.loads((tmp_path / "train_result.json").read_text())
    assert res["status"] == "failed" and not res["done_flag"] and "non-finite loss" in res["error"]
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["epoch"] == 1


def test_amp_needs_cuda_and_bad_args(dataset_dir, tmp_path):
    m = create_model("Mask-RT-DETR-S", device="cpu", **SMALL)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="GPU"):
            m.train(dataset_dir, epochs_iters=1, output=tmp_path, amp=True, device="cpu")
    with pytest.raises(ValueError, match="at least 1"):
        m.train(dataset_dir, epochs_iters=0, output=tmp_path)
    with pytest.raises(WeightsError, match="not found"):
        create_model("Mask-RT-DETR-S", weights=tmp_path / "missing.pth")


def _synthetic_pdparams(path: Path) -> Path:
    """As in test_mask_rtdetr_convert.py: the Paddle S manifest filled with random arrays."""
    from workbench.models.mask_rtdetr import convert

    names = json.loads(MANIFEST.read_text())
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(tuple(s)).astype(np.float32) * 0.02 for k, s in names.items()}
    for k in params:
        if k.endswith("_variance"):
            params[k] = np.abs(params[k]) + 0.5
    d = dict(params)
    d[convert.PADDLE_META_KEY] = {k: f"param_{i}" for i, k in enumerate(params)}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)
    return path


def test_pdparams_on_the_fly(tmp_path, dataset_dir):
    pd = _synthetic_pdparams(tmp_path / "mask_rtdetr_s.pdparams")
    m = create_model("Mask-RT-DETR-S", weights=pd, device="cpu", input_size=128)
    assert len(m.classes) == 80 and m.classes.names[0] == "person" and m.classes.category_ids[-1] == 90
    from workbench.models.mask_rtdetr import convert

    ref = convert.convert_pdparams(pd)["model"]
    torch.testing.assert_close(m.net.state_dict()["transformer.score_head.weight"],
                               ref["transformer.score_head.weight"])
    r = next(m.predict(sorted((dataset_dir / "images").iterdir())[0], threshold=0.0))
    assert len(r) == 100 and set(r.class_ids.tolist()) <= set(facade.COCO_CATEGORY_IDS)
    named = create_model("Mask-RT-DETR-S", weights=pd, device="cpu", class_names=[f"c{i}" for i in range(80)])
    assert named.classes.names[3] == "c3"
    with pytest.raises(ValueError, match="80 classes"):
        create_model("Mask-RT-DETR-S", weights=pd, num_classes=2)
    with pytest.raises(WeightsError, match="Mask-RT-DETR-S weights, not Mask-RT-DETR-M"):
        create_model("Mask-RT-DETR-M", weights=pd)


def test_unreachable_url_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    t = time.perf_counter()
    with pytest.raises(WeightsError, match="cannot download weights from http://127.0.0.1:9/"):
        create_model("Mask-RT-DETR-S", weights="http://127.0.0.1:9/mask_rtdetr_s.pdparams")
    with pytest.raises(WeightsError, match="cannot download"):  # a black-holed address: the timeout applies
        create_model("Mask-RT-DETR-S", weights="http://10.255.255.1/model.pdparams", url_timeout=1.0)
    assert time.perf_counter() - t < 10
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.slow
def test_two_processes_gloo(dataset_dir, tmp_path):
    m = create_model("Mask-RT-DETR-S", device="cpu", **SMALL)
    res = m.train(dataset_dir, epochs_iters=1, output=tmp_path, num_processes=2, save_training_state=False,
                  **{**TRAIN, "batch_size": 1})
    assert res["status"] == "done" and res["iterations"] == 2  # 4 images / (2 processes x batch 1)
    assert (tmp_path / "best_model" / "model.pth").is_file()


@pytest.mark.slow
def test_finetune_from_pdparams_and_export_onnx(dataset_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    pd = _synthetic_pdparams(tmp_path / "s.pdparams")
    m = create_model("Mask-RT-DETR-S", weights=pd, device="cpu", num_queries=20, num_denoising=10)
    res = m.train(dataset_dir, epochs_iters=1, output=tmp_path / "ft", save_training_state=False, **TRAIN)
    assert res["status"] == "done" and m.classes.names == ["circle", "square"]
    log = (tmp_path / "ft" / "train.log").read_text()
    assert "643 tensors loaded, 3 re-initialised" in log  # score head + DN class embedding (80 -> 2 classes)
    from workbench.data.dataset import read_image_rgb
    from workbench.models.mask_rtdetr.export import predict_onnx

    path = m.export_onnx(tmp_path / "m.onnx")
    img = read_image_rgb(sorted((dataset_dir / "images").iterdir())[0])
    onnx_scores = np.sort(predict_onnx(path, [img], threshold=0.0)[0]["scores"])[::-1]
    r = next(m.predict(img, threshold=0.0))
    np.testing.assert_allclose(onnx_scores[:10], r.scores[:10], atol=1e-4)
