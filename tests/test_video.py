"""Video, camera-index and URL inputs of ``predict``, for both model families: one ``Result`` per
frame (stride and time range), an overlay video and per-frame JSON lines written atomically, the
command line's ``Predict.input=clip.mp4``; image URLs through the download cache (local HTTP server)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

FPS, N_FRAMES, H, W = 10.0, 12, 64, 80


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 12-frame 80x64 video of a square moving right (frame k: the square at x = 4 k)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for k in range(N_FRAMES):
        frame = np.full((H, W, 3), 30, np.uint8)
        frame[20:40, 4 * k : 4 * k + 20] = (0, 200, 255)
        w.write(frame)
    w.release()
    return path


def _model(family: str):
    from workbench.models import create_model

    if family == "detectron2":
        return create_model("MaskRCNN-ResNet50-FPN", device="cpu", depth=18, input_size=64, class_names=["square"])
    return create_model("Mask-RT-DETR-S", device="cpu", input_size=64, num_queries=10, num_decoder_layers=1,
                        class_names=["square"],
                        num_denoising=0, num_sample_points=64)


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.mark.parametrize("family", ["detectron2", "mask_rtdetr"])
def test_video_frames_and_overlay_video(family, clip, tmp_path):
    model = _model(family)
    preds = model.predict(clip, threshold=0.0, frame_stride=2, start_s=0.2, end_s=1.0, progress=False)
    results = list(preds)
    assert [r.page_index for r in results] == [2, 4, 6, 8]  # frames 2..9 of 10 fps, every 2nd
    assert all(r.image_size == (H, W) and r.input_path == str(clip) and r.output_stem == "clip" for r in results)
    assert preds.fps == pytest.approx(FPS / 2)
    # the frame itself is the Result's image: the square moved 8 px between kept frames
    cols = [np.flatnonzero(r.image[30, :, 0] > 128) for r in results]
    assert [int(c[0]) for c in cols] == pytest.approx([8, 16, 24, 32], abs=1)

    out = model.predict(clip, threshold=0.0, progress=False).save_to_video(tmp_path / "out.mp4",
                                                                          json_path=tmp_path / "out.jsonl")
    frames = _read_video(out)
    assert len(frames) == N_FRAMES and frames[0].shape == (H, W, 3)
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x)["page_index"] for x in lines] == list(range(N_FRAMES))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mp4"]  # no temporary files left


def test_video_from_the_command_line(clip, tmp_path):
    from workbench.config import load_config
    from workbench.pipeline.dispatch import run_config

    weights = _model("mask_rtdetr").save(tmp_path / "model.pth")
    cfg = load_config("Mask-RT-DETR-S", ["Global.mode=predict", f"Global.output={tmp_path / 'out'}",
                                         f"Predict.model_dir={weights}", f"Predict.input={clip}",
                                         "Predict.threshold=0.0", "Predict.frame_stride=3"])
    res = run_config(cfg)
    item = res["results"][0]
    assert res["num_images"] == 1 and item["frames"] == 4  # frames 0, 3, 6, 9
    assert Path(item["video"]).name == "clip_res.mp4" and len(_read_video(Path(item["video"]))) == 4
    assert len(Path(item["json"]).read_text().splitlines()) == 4


def test_unreadable_video_and_bad_options(tmp_path, clip):
    from workbench.engine.video import VideoSource

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    model = _model("mask_rtdetr")
    with pytest.raises(ValueError, match="broken.mp4"):
        list(model.predict(bad))
    with pytest.raises(ValueError, match="frame_stride"):
        VideoSource(clip, stride=0)
    with pytest.raises(ValueError, match="end_s"):
        VideoSource(clip, start_s=1.0, end_s=0.5)
    assert len(VideoSource(clip, stride=5)) == 3


class _Images(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_image_url_input(tmp_path, monkeypatch):
    from PIL import Image

    from workbench.engine.errors import DatasetError

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    png = tmp_path / "photo.png"
    Image.fromarray(np.full((48, 56, 3), 90, np.uint8)).save(png)
    _Images.files = {"/img/photo.png": png.read_bytes()}
    _Images.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/img/photo.png"
        model = _model("mask_rtdetr")
        arr = np.zeros((40, 40, 3), np.uint8)
        results = list(model.predict([url, arr, str(png)], threshold=0.0))  # a list mixing URL, array, path
        assert [r.image_size for r in results] == [(48, 56), (40, 40), (48, 56)]
        assert results[0].output_stem == "photo" and results[2].output_stem == "photo_2"
        assert Path(results[0].input_path).is_relative_to(tmp_path / "cache")
        list(model.predict(url))
        assert _Images.hits == ["/img/photo.png"]  # the second call is a cache hit
        with pytest.raises(DatasetError, match="missing.png"):
            list(model.predict(f"http://127.0.0.1:{srv.server_port}/img/missing.png"))
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(DatasetError, match=r"cannot download the input from http://127\.0\.0\.1:\d+/offline\.png"):
        list(_model("mask_rtdetr").predict(f"http://127.0.0.1:{srv.server_port}/offline.png"))
