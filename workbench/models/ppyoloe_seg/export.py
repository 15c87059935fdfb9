"""ONNX export of PP-YOLOE_seg without NMS (Paddle's ``exclude_post_process`` outputs): images
[1, 3, S, S] in [0, 1] -> ``boxes`` [1, L, 4] xyxy input pixels, ``scores`` [1, L, C], ``coeffs``
[1, L, 32], ``proto`` [1, 32, S/4, S/4]. ``postprocess.decode`` (NMS with torchvision) runs on
those, so an ONNX runtime and PyTorch give the same detections."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

OUTPUTS = ("boxes", "scores", "coeffs", "proto")


class ExportWrapper(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor):
        out = self.net(images)
        return tuple(out[k] for k in OUTPUTS)


def export_onnx(net: nn.Module, path, image_size: int = 640, opset: int = 17) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(net.eval())
    x = torch.rand(1, 3, image_size, image_size)
    with torch.no_grad():
        torch.onnx.export(wrapper, (x,), str(path), input_names=["images"], output_names=list(OUTPUTS),
                          opset_version=opset, dynamo=False)
    return path


def run_onnx(path, images) -> dict:
    """The exported graph on ``images`` (numpy [1, 3, S, S] float32) with onnxruntime -> outputs by name."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, sess.run(list(OUTPUTS), {"images": images})))
