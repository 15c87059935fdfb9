"""ONNX export of the Mask-RT-DETR inference graph (image -> top-k scores, labels, boxes and
stride-4 mask logits) and an onnxruntime runner returning ``predict_images``-style results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .postprocess import select_topk


class ExportWrapper(nn.Module):
    """[B, 3, S, S] in [0, 1] -> scores [B, K], labels [B, K] int64, boxes [B, K, 4] normalised
    xyxy, mask_logits [B, K, S/4, S/4] (the queries of the top-k detections)."""

    def __init__(self, model: nn.Module, num_top_queries: int = 100):
        super().__init__()
        self.model = model
        self.num_top_queries = num_top_queries

    def forward(self, images):
        out = self.model(images)
        scores, labels, qidx, boxes = select_topk(out["pred_logits"], out["pred_boxes"], self.num_top_queries)
        m = out["pred_masks"]
        h, w = m.shape[-2:]
        masks = torch.gather(m, 1, qidx[:, :, None, None].expand(-1, -1, h, w))
        return scores, labels, boxes, masks


def export_onnx(model: nn.Module, path: str | Path, image_size: int = 640, num_top_queries: int = 100,
                opset: int = 17, batch_size: int = 1) -> Path:
    """Export with a fixed input size: the decoder's anchors, the deformable attention's level
    shapes and the encoder's position embeddings are computed from Python ints of the feature-map
    sizes (``int(p.shape[2])`` in ``decoder.py``), so the trace bakes them in for ``image_size``;
    ``run_onnx_raw`` names that size when given another (``predict_onnx`` resizes to it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(model, num_top_queries).eval()
    dummy = torch.rand(batch_size, 3, image_size, image_size)
    with torch.no_grad():
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=["images"],
                          output_names=["scores", "labels", "boxes", "mask_logits"], opset_version=opset,
                          dynamo=False)
    return path


def run_onnx_raw(path_or_session, images: np.ndarray):
    """images: float32 [B, 3, S, S] in [0, 1]. Returns (scores, labels, boxes, mask_logits)."""
    import onnxruntime as ort

    sess = path_or_session
    if not isinstance(sess, ort.InferenceSession):
        sess = ort.InferenceSession(str(path_or_session), providers=["CPUExecutionProvider"])
    want = sess.get_inputs()[0].shape  # [B, 3, S, S], fixed at export
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(want[1:]):
        raise ValueError(f"this Mask-RT-DETR graph was exported for {want[2]}x{want[3]} inputs "
                         f"([B, 3, {want[2]}, {want[3]}]; the size is fixed at export), got shape {tuple(images.shape)}: "
                         f"resize to {want[2]}x{want[3]} (predict_onnx does) or export again with image_size=...")
    return sess.run(None, {"images": images.astype(np.float32)})


def predict_onnx(path: str | Path, images: list[np.ndarray], threshold: float = 0.5, mask_threshold: float = 0.5) -> list[dict]:
    """Run an exported model on RGB uint8 images; decoded like every other inference path
    (``postprocess.image_detections``), output as ``engine.predict_images``."""
    import onnxruntime as ort

    from .data import to_model_input
    from .postprocess import image_detections

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = int(sess.get_inputs()[0].shape[-1])
    results = []
    for im in images:
        x = to_model_input(im, size).unsqueeze(0).numpy()
        scores, labels, boxes, masks = (torch.from_numpy(np.asarray(a)[0]) for a in run_onnx_raw(sess, x))
        d = image_detections(scores, labels, boxes, masks, im.shape[:2], threshold)
        results.append({"boxes": d["boxes"].numpy(), "scores": d["scores"].numpy(),
                        "labels": d["labels"].numpy().astype(np.int64),
                        "masks": (d["mask_probs"] >= mask_threshold).numpy()})
    return results
