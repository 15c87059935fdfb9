"""ONNX export of a Detectron2 R-CNN's inference graph (Mask R-CNN, C4 or FPN, and Cascade Mask
R-CNN) and an onnxruntime runner that returns the same ``Result``s as ``model.predict``.

The graph (``Detectron2ExportWrapper``), traced with ``torch.onnx.export`` (TorchScript tracer):

* inputs: ``image`` float32 [3, H, W], **RGB**, 0..255, already resized as at test time
  (``ResizeShortestEdge``: short side ``input_size``, long side at most ``input_size*1333/800``);
  H and W are dynamic axes (the padding to the FPN's size divisibility, the anchors and the RoI
  levels are computed in the graph). ``score_threshold`` float32 scalar, optional (an
  initializer with the model's ``ROI_HEADS.SCORE_THRESH_TEST``, 0.05, as its default).
* outputs: ``boxes`` [N, 4] xyxy in the pixels of the input ``image``; ``scores`` [N];
  ``classes`` [N] int64 (0-based contiguous class index); ``mask_probs`` [N, M, M] float32, the
  mask head's sigmoid probabilities (M = 28) for the predicted class, in box coordinates (paste
  them into the image as ``predictor.PastedSoftMasks`` does). N <= ``TEST.DETECTIONS_PER_IMAGE``.

It runs Detectron2's own modules in the order ``GeneralizedRCNN.inference(do_postprocess=False)``
runs them (preprocess with the channel flip to ``INPUT.FORMAT``, backbone, RPN, box head(s),
mask head); two things differ, both for the trace: the score threshold is a graph input (so that
the trace always sees detections, whatever the image: a trace without detections would bake
torchvision's empty-NMS branch in), and the mask head is given one placeholder box after the
detections, whose mask is dropped again (onnxruntime cannot run GroupNorm's Reshape on zero RoIs).
``builtins.len`` is patched in the RoI-head modules during the trace as Detectron2's own
``export.TracingAdapter`` does (``patch_builtin_len``), so per-image detection counts stay
symbolic. (``detectron2.export`` itself is not imported: v0.6's package imports Caffe2.)

Known limits (decided at trace time): boxes or scores that are not finite are not filtered out
(Detectron2 drops them; a finite network never makes them); batch size 1.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn as nn

from . import predictor
from ._compat import import_detectron2

INPUT_NAMES = ["image", "score_threshold"]
OUTPUT_NAMES = ["boxes", "scores", "classes", "mask_probs"]
_LEN_MODULES = (
    "detectron2.modeling.roi_heads.fast_rcnn",
    "detectron2.modeling.roi_heads.mask_head",
)


@contextlib.contextmanager
def patch_builtin_len():
    """``len(x)`` as ``x.__len__()`` in Detectron2's RoI-head modules (traced, not a Python int);
    the same patch as ``detectron2.export.torchscript_patch.patch_builtin_len``."""
    with contextlib.ExitStack() as stack:
        for mod in _LEN_MODULES:
            stack.enter_context(mock.patch(mod + ".len", side_effect=lambda obj: obj.__len__(), create=True))
        yield


class Detectron2ExportWrapper(nn.Module):
    """``(image [3, H, W] RGB 0..255, score_threshold []) -> boxes, scores, classes, mask_probs``
    (see the module docstring) around a ``GeneralizedRCNN`` in eval mode."""

    def __init__(self, net: nn.Module, input_format: str = "BGR"):
        super().__init__()
        self.net = net
        self.bgr = input_format == "BGR"

    def forward(self, image: torch.Tensor, score_threshold: torch.Tensor):
        import_detectron2()
        from detectron2.structures import Boxes, Instances

        net = self.net
        if self.bgr:
            image = image[[2, 1, 0]]
        images = net.preprocess_image([{"image": image}])
        features = net.backbone(images.tensor)
        proposals, _ = net.proposal_generator(images, features, None)
        rh = net.roi_heads
        mask_on = rh.mask_on
        try:
            rh.mask_on = False  # boxes only; masks below, with the placeholder box
            with predictor.score_threshold(rh, score_threshold):
                inst = rh(images, features, proposals, None)[0][0]
        finally:
            rh.mask_on = mask_on
        boxes, scores, classes = inst.pred_boxes.tensor, inst.scores, inst.pred_classes
        n = scores.shape[0]
        padded = Instances(inst.image_size)
        padded.pred_boxes = Boxes(torch.cat([boxes, boxes.new_tensor([[0.0, 0.0, 1.0, 1.0]])]))
        padded.pred_classes = torch.cat([classes, classes.new_zeros(1)])
        padded = rh.forward_with_given_boxes(features, [padded])[0]
        masks = padded.pred_masks[:n, 0]
        return boxes, scores, classes, masks


def export_onnx(net: nn.Module, cfg, path: str | os.PathLike, *, sample_size: Sequence[int] | None = None,
                opset: int = 17, metadata: dict | None = None) -> Path:
    """Trace ``net`` (a copy is not made: pass one you may set to eval) on a random image of
    ``sample_size`` (H, W; default: the test size, 4:3) and write the ONNX graph to ``path`` with
    dynamic H/W and ``metadata`` (JSON-encoded values) in the model's metadata_props."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    short = int(cfg.INPUT.MIN_SIZE_TEST)
    h, w = (int(sample_size[0]), int(sample_size[1])) if sample_size else (short, int(round(short * 4 / 3)))
    wrapper = Detectron2ExportWrapper(net, cfg.INPUT.FORMAT).eval()
    gen = torch.Generator().manual_seed(0)
    dummy = (torch.rand(3, h, w, generator=gen) * 255, torch.tensor(0.0))  # threshold 0: detections in the trace
    tmp = path.with_name(path.name + ".tmp")
    import warnings

    with torch.no_grad(), patch_builtin_len(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on the branches the module docstring lists
        torch.onnx.export(wrapper, dummy, str(tmp), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "N"}, "scores": {0: "N"},
                                        "classes": {0: "N"}, "mask_probs": {0: "N"}},
                          opset_version=opset, dynamo=False)
    model = onnx.load(str(tmp))
    default_thresh = float(predictor.box_predictors(net.roi_heads)[-1].test_score_thresh)
    model.graph.initializer.append(numpy_helper.from_array(np.array(default_thresh, np.float32), "score_threshold"))
    meta = {"input_format": "RGB float32 0..255 [3, H, W], resized (short side input_size, long side <= max_size)",
            "input_size": short, "max_size": int(cfg.INPUT.MAX_SIZE_TEST), "score_threshold": default_thresh,
            "dynamic_axes": "image: height, width", **(metadata or {})}
    for k, v in meta.items():
        model.metadata_props.add(key=str(k), value=json.dumps(v))
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def read_metadata(path_or_session) -> dict:
    """The workbench metadata an exported graph carries (JSON-decoded)."""
    sess = _session(path_or_session)
    return {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


def _session(path_or_session):
    import onnxruntime as ort

    if isinstance(path_or_session, ort.InferenceSession):
        return path_or_session
    so = ort.SessionOptions()
    so.log_severity_level = 3  # not the warning that score_threshold, an input, has an initializer (its default)
    return ort.InferenceSession(str(path_or_session), so, providers=["CPUExecutionProvider"])


def run_onnx_raw(path_or_session, image: np.ndarray, score_threshold: float | None = None):
    """image: float32 [3, H, W] RGB 0..255 (already resized). Returns (boxes, scores, classes, mask_probs)."""
    sess = _session(path_or_session)
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W] (one RGB image, batch size 1), got shape {image.shape}")
    feed = {"image": image}
    if score_threshold is not None:
        feed["score_threshold"] = np.array(score_threshold, np.float32)
    return sess.run(None, feed)


def predict_onnx(path: str | os.PathLike, images: Sequence[np.ndarray], threshold: float = 0.5,
                 mask_threshold: float = 0.5, paths: Sequence[str | None] | None = None,
                 keep_image: bool = True) -> list:
    """Run an exported graph on RGB uint8 images: resized as ``predictor.NetPredictor`` resizes
    (the test size in the graph's metadata), decoded as it decodes (boxes scaled to the image and
    clipped, empty boxes and ``score < threshold`` dropped, masks pasted one at a time), giving the
    same ``Result``s as ``model.predict``."""
    import_detectron2()
    import detectron2.data.transforms as T
    from detectron2.structures import Boxes

    from ...engine.result import Result
    from .predictor import PastedSoftMasks

    sess = _session(path)
    meta = read_metadata(sess)
    aug = T.ResizeShortestEdge([meta["input_size"], meta["input_size"]], meta["max_size"])
    names = list(meta.get("class_names") or [])
    cat_ids = np.asarray(meta.get("category_ids") or list(range(1, len(names) + 1)), np.int64)
    paths = list(paths) if paths is not None else [None] * len(images)
    results = []
    for img, p in zip(images, paths):
        h, w = img.shape[:2]
        arr = aug.get_transform(img).apply_image(img)
        x = np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32)
        b, s, c, m = run_onnx_raw(sess, x)
        boxes = Boxes(torch.from_numpy(b).clone())
        boxes.scale(w / x.shape[2], h / x.shape[1])
        boxes.clip((h, w))
        keep = (boxes.nonempty() & (torch.from_numpy(s) >= threshold)).numpy()
        bt = boxes.tensor.numpy()[keep]
        lab = c[keep].astype(np.int64)
        results.append(Result(
            input_path=p, image_size=(h, w), boxes=bt, scores=s[keep],
            class_ids=cat_ids[lab] if len(lab) else np.zeros(0, np.int64),
            class_names=[names[i] if i < len(names) else str(i) for i in lab],
            mask_probs=PastedSoftMasks((h, w), m[keep], bt), mask_threshold=mask_threshold, threshold=threshold,
            image=img if keep_image else None, model_name=meta.get("model_name", "")))
    return results
