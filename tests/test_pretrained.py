"""Pretrained weights by name (``weights="coco"``): the official URL table, downloads from a real
HTTP server on 127.0.0.1 (``WORKBENCH_WEIGHTS_MIRROR`` points the official hosts at it) serving
checkpoints built here in the official formats, the cache and its checks, COCO class names with no
dataset, the config keys, and fine-tuning COCO's 80 classes to a dataset's."""

from __future__ import annotations

import collections
import http.server
import json
import logging
import pickle
import shutil
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.data.synthetic import make_shapes_dataset
from workbench.engine.classes import COCO_CATEGORY_IDS, COCO_NAMES
from workbench.engine.errors import WeightsError
from workbench.engine.weights import MIRROR_ENV, cache_dir, mirrored
from workbench.models import DETECTRON2_MODELS, coco_weights, create_model, pretrained_table

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo_labelme" / "voc_left.jpg"
D2 = "MaskRCNN-ResNet50-FPN"
MRT = "Mask-RT-DETR-S"
DOG, PERSON = COCO_NAMES.index("dog"), COCO_NAMES.index("person")
# What each Detectron2 COCO checkpoint holds, from the architecture of its zoo config (FrozenBN:
# weight, bias, running_mean, running_var per norm; no num_batches_tracked):
#   R50-FPN: stem 5 + 16 bottlenecks x 15 + 4 shortcuts x 5 + FPN 16 + RPN 6 + box head 4 + box
#            predictor 4 + mask head 12 = 307
#   R50-C4:  stem 5 + 13 x 15 + 3 x 5 + RPN 6 + res5 (3 x 15 + 5) + box predictor 4 + mask head 4 = 279
#   R101-FPN: as R50-FPN with 33 bottlenecks = 562; Cascade R50-FPN: R50-FPN + 2 more box stages = 323
D2_ENTRIES = {
    "MaskRCNN-ResNet50-FPN": 307,
    "MaskRCNN-ResNet50": 279,
    "MaskRCNN-ResNet101-FPN": 562,
    "Cascade-MaskRCNN-ResNet50-FPN": 323,
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        srv.gets[self.path] += 1
        f = srv.files.get(self.path)
        if f is None:
            self.send_error(404)
            return
        size = f.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(f, "rb") as fh:
            if self.path in srv.truncate:  # the connection closes after half the promised body
                self.wfile.write(fh.read(size // 2))
                return
            shutil.copyfileobj(fh, self.wfile, 1 << 20)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.gets, srv.truncate = {}, collections.Counter(), set()
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/"
    yield srv
    srv.shutdown()
    srv.server_close()


def _path(name: str) -> str:
    return urllib.parse.urlsplit(coco_weights(name).url).path


@pytest.fixture(scope="module")
def d2_zoo_file(tmp_path_factory, server):
    """A Detectron2 model-zoo ``model_final_*.pkl`` (``{"model": {name: ndarray}, "__author__"}``,
    with the old non-persistent buffers) from a random FrozenBN R50-FPN with COCO's 80 classes; its
    classifier favours "dog" so that predictions have a known label."""
    torch.manual_seed(0)
    m = create_model(D2, norm="FrozenBN", class_names=COCO_NAMES, device="cpu")
    sd = {k: v.detach().numpy().copy() for k, v in m.net.state_dict().items()}
    # random FrozenBN statistics make activations huge: a classifier of biases only, box deltas 0
    for k in ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"):
        sd[f"roi_heads.box_predictor.{k}"][:] = 0.0
    sd["roi_heads.box_predictor.cls_score.bias"][DOG] = 8.0
    sd["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
    sd["pixel_std"] = np.ones((3, 1, 1), np.float32)
    path = tmp_path_factory.mktemp("zoo") / coco_weights(D2).filename
    with open(path, "wb") as f:
        pickle.dump({"model": sd, "__author__": "Detectron2 Model Zoo"}, f)
    server.files[_path(D2)] = path
    yield path
    path.unlink(missing_ok=True)  # ~178 MB


@pytest.fixture(scope="module")
def mrt_file(tmp_path_factory, server):
    """A PaddleX ``Mask-RT-DETR-S_pretrained.pdparams`` (Paddle names, Linear weights [in, out])
    from a random S model with 80 classes; its score head favours "person"."""
    from workbench.engine.weights import write_pdparams
    from workbench.models.mask_rtdetr import convert
    from workbench.models.mask_rtdetr.model import build_mask_rtdetr

    torch.manual_seed(0)
    net = build_mask_rtdetr("S", 80)
    with torch.no_grad():
        net.transformer.score_head.bias.fill_(-4.0)
        net.transformer.score_head.bias[PERSON] = 6.0
    params = convert.torch_to_paddle(net.state_dict())
    manifest = json.loads((Path(__file__).parent / "mask_rtdetr_data" / "pd_keys_s.json").read_text())
    assert {k: list(v.shape) for k, v in params.items()} == manifest  # the names and shapes of Paddle's file
    path = tmp_path_factory.mktemp("paddlex") / coco_weights(MRT).filename
    write_pdparams(params, path)
    server.files[_path(MRT)] = path
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def mirror(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV, server.base)
    server.gets.clear()
    server.truncate.clear()
    yield server
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # the downloaded copies (~178 MB for Detectron2's)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(d, num_train=2, num_val=1, size=(96, 96), seed=3)
    return d


def _init_report(trainer_init, model, dataset, out, train: dict):
    """The initial-weights report (no ignore_class_mismatch: "coco" needs none)."""
    return trainer_init(model, dataset, out, train)[1]


def _cached() -> list[Path]:
    return sorted(p for p in cache_dir().rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------- the table
def test_the_table_names_official_urls_for_exactly_the_names_that_have_them():
    from detectron2 import model_zoo

    table = pretrained_table()
    have = {n for n, e in table.items() if e is not None}
    assert have == set(D2_ENTRIES) | {f"Mask-RT-DETR-{v}" for v in "SMLXH"}
    for name in D2_ENTRIES:  # the exact zoo config each name is built from, and its zoo URL
        e = table[name]
        assert e.url == model_zoo.get_checkpoint_url(DETECTRON2_MODELS[name].zoo_config)
        assert e.url.startswith("https://dl.fbaipublicfiles.com/detectron2/") and e.filename.startswith("model_final_")
    for v in "SMLXH":
        e = table[f"Mask-RT-DETR-{v}"]
        assert e.url == (
            f"https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/Mask-RT-DETR-{v}"
            "_pretrained.pdparams"
        )
    assert all(e.classes == "coco" and e.size is None and e.sha256 is None for e in table.values() if e)
    for name in set(table) - have:
        with pytest.raises(WeightsError, match="no public COCO weights") as ei:
            create_model(name, weights="coco")
        assert "MaskRCNN-ResNet50-FPN" in str(ei.value) and "Mask-RT-DETR-L" in str(ei.value)


def test_mirror_replaces_only_the_official_hosts(monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "http://mirror.local:8000/weights/")
    url = coco_weights(D2).url
    assert mirrored(url) == "http://mirror.local:8000/weights" + urllib.parse.urlsplit(url).path
    assert mirrored("http://example.org/x.pth") == "http://example.org/x.pth"
    monkeypatch.delenv(MIRROR_ENV)
    assert mirrored(url) == url


@pytest.mark.parametrize("name", sorted(D2_ENTRIES))
def test_detectron2_coco_architecture_matches_the_zoo_checkpoint(name):
    """The network "coco" builds (FrozenBN, the zoo config's depth and STRIDE_IN_1X1, 80 classes)
    has exactly the tensors of the zoo checkpoint, by the architecture (see D2_ENTRIES)."""
    m = create_model(name, norm="FrozenBN", class_names=COCO_NAMES, device="cpu")
    cfg, sd = m.cfg, m.net.state_dict()
    assert (
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    )
    assert cfg.MODEL.RESNETS.DEPTH == (101 if "101" in name else 50) and cfg.MODEL.RESNETS.NUM_GROUPS == 1
    assert cfg.MODEL.PIXEL_MEAN == [103.53, 116.28, 123.675] and cfg.INPUT.FORMAT == "BGR"
    assert len(sd) == D2_ENTRIES[name] and not [k for k in sd if "num_batches_tracked" in k]
    stages = [".0", ".1", ".2"] if "Cascade" in name else [""]
    fc = 2048 if name == "MaskRCNN-ResNet50" else 1024
    for s in stages:
        assert tuple(sd[f"roi_heads.box_predictor{s}.cls_score.weight"].shape) == (81, fc)
        assert tuple(sd[f"roi_heads.box_predictor{s}.bbox_pred.weight"].shape) == ((4 if s else 320), fc)
    assert tuple(sd["roi_heads.mask_head.predictor.weight"].shape) == (80, 256, 1, 1)
    stem = "backbone.stem" if name == "MaskRCNN-ResNet50" else "backbone.bottom_up.stem"
    assert tuple(sd[f"{stem}.conv1.weight"].shape) == (64, 3, 7, 7) and f"{stem}.conv1.norm.running_var" in sd


# ---------------------------------------------------------------------------------- end to end
def test_detectron2_coco_end_to_end(trainer_init, d2_zoo_file, mirror, capsys, caplog, shapes, tmp_path):
    caplog.set_level(logging.INFO, logger="workbench")
    m = create_model(D2, weights="coco", device="cpu", input_size=320)
    assert mirror.gets[_path(D2)] == 1 and "download model_final_f10217.pkl" in capsys.readouterr().err
    assert m.classes.names == COCO_NAMES and m.classes.category_ids == COCO_CATEGORY_IDS
    assert m.norm == "FrozenBN" and m.meta["pretrained"] == "coco"
    r = next(m.predict(DEMO, threshold=0.5))
    assert len(r) > 0 and set(r.class_names) == {"dog"} and set(r.class_ids.tolist()) == {COCO_CATEGORY_IDS[DOG]}
    assert "307 tensors loaded, 0 re-initialised (class-specific), 0 skipped (shape differs), 0 missing" in caplog.text
    assert "pixel_mean: input normalisation" in caplog.text  # the old buffers, ignored on purpose
    cached = cache_dir().rglob("model_final_f10217.pkl").__next__()
    rec = json.loads(Path(str(cached) + ".json").read_text())
    assert rec["size"] == d2_zoo_file.stat().st_size and rec["url"] == coco_weights(D2).url and len(rec["sha256"]) == 64

    again = create_model(D2, weights="coco", device="cpu")  # a cache hit: no second GET
    assert mirror.gets[_path(D2)] == 1 and again.weights == str(cached) and again.input_size == 800

    # fine-tuning COCO's 80 classes to the dataset's 2: no class check, class-specific layers anew
    # (up to the first step: a random FrozenBN network, as this stand-in for the zoo file is, diverges)
    rep = _init_report(trainer_init, again, shapes, tmp_path / "ft", {"epochs_iters": 1, "input_size": 96})
    shapes_ = {
        "roi_heads.box_predictor.cls_score.weight": ((81, 1024), (3, 1024)),
        "roi_heads.box_predictor.cls_score.bias": ((81,), (3,)),
        "roi_heads.box_predictor.bbox_pred.weight": ((320, 1024), (8, 1024)),
        "roi_heads.box_predictor.bbox_pred.bias": ((320,), (8,)),
        "roi_heads.mask_head.predictor.weight": ((80, 256, 1, 1), (2, 256, 1, 1)),
        "roi_heads.mask_head.predictor.bias": ((80,), (2,)),
    }
    assert rep.skipped == {
        k: f"checkpoint {a} vs model {b}, class-specific: re-initialised" for k, (a, b) in shapes_.items()
    }
    assert (
        len(rep.loaded) == 301
        and not (rep.missing or rep.unexpected)
        and set(rep.ignored) == {"pixel_mean", "pixel_std"}
    )


def test_mask_rtdetr_coco_end_to_end(trainer_init, mrt_file, mirror, capsys, shapes, tmp_path):
    m = create_model(MRT, weights="coco", device="cpu")
    assert mirror.gets[_path(MRT)] == 1 and "download Mask-RT-DETR-S_pretrained.pdparams" in capsys.readouterr().err
    assert m.classes.names == COCO_NAMES and m.classes.category_ids == COCO_CATEGORY_IDS and m.input_size == 640
    r = next(m.predict(DEMO, threshold=0.5))
    assert len(r) > 0 and set(r.class_names) == {"person"} and set(r.class_ids.tolist()) == {1}
    assert create_model(MRT, weights="coco", device="cpu").weights == m.weights and mirror.gets[_path(MRT)] == 1

    # fine-tuning to the dataset's 2 classes, up to the first step (the whole run: test_finetune.py)
    rep = _init_report(trainer_init, m, shapes, tmp_path / "ft", {"epochs_iters": 1, "input_size": 128, "multi_scale": False})
    assert len(rep.loaded) == 643 and not (rep.missing or rep.unexpected)
    assert rep.skipped == {
        "transformer.score_head.weight": "checkpoint (80, 256) vs model (2, 256), class-specific: re-initialised",
        "transformer.score_head.bias": "checkpoint (80,) vs model (2,), class-specific: re-initialised",
        "transformer.denoising_class_embed.weight": "checkpoint (80, 256) vs model (2, 256), class-specific: re-initialised",
    }


def test_predict_config_key_coco(mrt_file, mirror, tmp_path):
    """``-o Predict.model_dir=coco``: COCO names with no dataset and no training run."""
    from workbench.config import load_config
    from workbench.pipeline.dispatch import run_predict

    cfg = load_config(
        MRT,
        ["Global.mode=predict", f"Global.output={tmp_path / 'out'}", "Predict.model_dir=coco", f"Predict.input={DEMO}"],
    )
    res = run_predict(cfg)
    saved = json.loads(Path(res["results"][0]["json"]).read_text())
    assert res["num_images"] == 1 and {b["label"] for b in saved["boxes"]} == {"person"}


# ---------------------------------------------------------------------------------- the cache
@pytest.fixture(params=[D2, MRT])
def official(request, d2_zoo_file, mrt_file):
    """One Detectron2 name and one Mask-RT-DETR name, with the file the server serves for it."""
    return request.param, d2_zoo_file if request.param == D2 else mrt_file


def test_truncated_cached_file_is_deleted_and_downloaded_again(official, mirror, caplog):
    name, served = official
    first = create_model(name, weights="coco", device="cpu")
    cached = Path(first.weights)
    with open(cached, "r+b") as f:
        f.truncate(cached.stat().st_size // 3)
    with caplog.at_level(logging.WARNING, logger="workbench.weights"):
        again = create_model(name, weights="coco", device="cpu")
    assert "truncated or changed" in caplog.text and "downloading" in caplog.text
    assert mirror.gets[_path(name)] == 2 and cached.stat().st_size == served.stat().st_size
    assert again.classes.names == COCO_NAMES
    # corrupt, same size: the sha256 catches it
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workbench.weights"):
        create_model(name, weights="coco", device="cpu")
    assert "corrupt (sha256" in caplog.text and mirror.gets[_path(name)] == 3


def test_truncated_body_is_rejected_and_nothing_is_cached(official, mirror):
    name, _ = official
    mirror.truncate.add(_path(name))
    with pytest.raises(WeightsError, match=r"incomplete download \(\d+ of \d+ bytes, the Content-Length\)"):
        create_model(name, weights="coco", device="cpu")
    assert _cached() == []


def test_offline_names_the_url_and_how_to_pass_a_local_file(official, mirror, monkeypatch):
    name, _ = official
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError) as ei:
        create_model(name, weights="coco", device="cpu", url_timeout=2)
    msg = str(ei.value)
    assert "\n" not in msg
    assert (
        f"cannot download weights from http://127.0.0.1:{port}{_path(name)} (mirror of {coco_weights(name).url})" in msg
    )
    assert (
        f"weights='/path/to/{coco_weights(name).filename}'" in msg and "-o Train.pretrain_weight_path=/path/to/" in msg
    )
    assert _cached() == []


def test_a_local_copy_under_the_official_name_is_the_coco_model(tmp_path, mrt_file):
    """What the offline message advises: the file downloaded elsewhere, passed by path."""
    local = tmp_path / coco_weights(D2).filename
    local.write_bytes(b"not read until built")
    m = create_model(D2, weights=str(local), device="cpu")
    assert m.norm == "FrozenBN" and m.classes.names == COCO_NAMES and m.input_size == 800
    assert m.meta["pretrained"] == "coco"
    r = create_model(MRT, weights=str(mrt_file), device="cpu")  # named Mask-RT-DETR-S_pretrained.pdparams
    assert r.meta["pretrained"] == "coco" and r.classes.names == COCO_NAMES
