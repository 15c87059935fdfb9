"""Videos and cameras as ``predict`` inputs, and overlay videos as its output (OpenCV).

``VideoSource`` reads a video file (``VIDEO_EXTS``) or a camera (an ``int``: OpenCV's device
index) frame by frame: every ``stride``-th frame between ``start_s`` and ``end_s`` seconds, as RGB
uint8, never more than one frame in memory. ``predict`` turns each frame into one ``Result``
(``input_path`` the video, ``page_index`` the frame's index in the video), lazily.

``VideoWriter`` draws each ``Result`` (``Result.visualize``) into an overlay video and, alongside,
one JSON line per frame (``Result.to_dict``); both files appear under their final names only when
complete (written to hidden temporary files, renamed on ``close``). ``save_to_video`` is the
one-call form; ``Predictions.save_to_video`` uses it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_FPS = 25.0  # when the container does not say (cameras, some streams)


def is_camera(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_video_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike)) and Path(x).suffix.lower() in VIDEO_EXTS


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a dependency
        raise ImportError("video input and output need OpenCV: pip install opencv-python-headless") from e
    return cv2


class VideoSource:
    """The frames of a video file or camera: ``frames()`` yields ``(index, time_s, rgb)``."""

    def __init__(
        self, source: str | os.PathLike | int, stride: int = 1, start_s: float | None = None, end_s: float | None = None
    ):
        if int(stride) < 1:
            raise ValueError(f"frame_stride must be at least 1, got {stride}")
        if start_s is not None and end_s is not None and float(end_s) <= float(start_s):
            raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
        self.source = source if is_camera(source) else str(source)
        self.stride, self.start_s, self.end_s = int(stride), start_s, end_s
        cap = self._open()
        cv2 = _cv2()
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.frame_count = None if self.camera else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        cap.release()

    @property
    def camera(self) -> bool:
        return is_camera(self.source)

    def __repr__(self) -> str:
        return f"VideoSource({self.source!r}, fps={self.fps:g}, frames={self.frame_count}, size={self.size})"

    def _open(self):
        cv2 = _cv2()
        if not self.camera and not Path(self.source).is_file():
            raise FileNotFoundError(f"{self.source}: no such video file")
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            what = f"camera {self.source}" if self.camera else self.source
            raise ValueError(f"{what}: cannot open it as a video (OpenCV could not read it)")
        return cap

    def _range(self) -> tuple[int, int | None]:
        first = int(round(float(self.start_s) * self.fps)) if self.start_s else 0
        stop = int(round(float(self.end_s) * self.fps)) if self.end_s is not None else None
        if self.frame_count is not None:
            stop = self.frame_count if stop is None else min(stop, self.frame_count)
        return first, stop

    def __len__(self) -> int:
        """The frames ``frames()`` yields (from the container's frame count; 0 when unknown)."""
        first, stop = self._range()
        if stop is None:
            return 0
        return max(0, (stop - first + self.stride - 1) // self.stride)

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        cv2 = _cv2()
        cap = self._open()
        first, stop = self._range()
        try:
            index = 0
            if first and not self.camera:
                cap.set(cv2.CAP_PROP_POS_FRAMES, first)
                index = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                while index < first and cap.grab():  # containers that cannot seek exactly
                    index += 1
            while stop is None or index < stop:
                if (index - first) % self.stride:
                    if not cap.grab():
                        break
                    index += 1
                    continue
                ok, bgr = cap.read()
                if not ok:
                    break
                if index >= first:
                    yield index, index / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            cap.release()


def _hidden_temp(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    return Path(tmp)


class VideoWriter:
    """Overlay video (``path``) and per-frame JSON lines (``json_path``) of ``Result``s, written atomically."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = DEFAULT_FPS,
        json_path: str | os.PathLike | None = None,
        **draw_kwargs,
    ):
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise ValueError(f"{self.path}: an overlay video is written as {', '.join(sorted(FOURCC))}")
        self.json_path = Path(json_path) if json_path is not None else None
        self.fps, self.draw_kwargs = float(fps), draw_kwargs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _hidden_temp(self.path)
        self._json_tmp = _hidden_temp(self.json_path) if self.json_path else None
        self._json = open(self._json_tmp, "w", encoding="utf-8") if self._json_tmp else None
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self.instances = 0

    def add(self, result) -> None:
        cv2 = _cv2()
        rgb = result.visualize(**self.draw_kwargs)
        h, w = rgb.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write this video format here")
        elif (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if self._json is not None:
            self._json.write(json.dumps(result.to_dict()) + "\n")
        self.frames += 1
        self.instances += len(result)

    def close(self) -> Path:
        """Finish both files and move them into place (an empty video: nothing is kept)."""
        if self._writer is not None:
            self._writer.release()
        if self._json is not None:
            self._json.close()
        if not self.frames:
            self.abort()
            raise ValueError(f"{self.path}: no frames to write")
        os.replace(self._tmp, self.path)
        if self._json_tmp is not None:
            os.replace(self._json_tmp, self.json_path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._json is not None and not self._json.closed:
            self._json.close()
        for p in (self._tmp, self._json_tmp):
            if p is not None:
                p.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, etype, *exc) -> None:
        if etype is None:
            self.close()
        else:
            self.abort()


def save_to_video(
    results: Iterable,
    path: str | os.PathLike,
    fps: float = DEFAULT_FPS,
    json_path: str | os.PathLike | None = None,
    **draw_kwargs,
) -> Path:
    """Draw every ``Result`` of ``results`` (consumed one at a time) into the video ``path``."""
    with VideoWriter(path, fps, json_path, **draw_kwargs) as w:
        for r in results:
            w.add(r)
    return w.path
