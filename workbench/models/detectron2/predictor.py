"""Inference with a Detectron2 R-CNN: RGB arrays in, ``Result`` out.

The network runs as in Detectron2's ``DefaultPredictor`` (``ResizeShortestEdge`` to the test size,
``INPUT.FORMAT`` channel order, ``model.inference``), but the post-processing is ours so that the
soft mask probabilities are kept: boxes are scaled to the image and clipped as in
``detector_postprocess`` and detections under ``threshold`` are dropped. A ``threshold`` under the
model's ``ROI_HEADS.SCORE_THRESH_TEST`` (0.05) lowers it for that call, so ``threshold=0`` (what
evaluation asks for) gets every detection up to ``TEST.DETECTIONS_PER_IMAGE``, as a Mask-RT-DETR
model gives every query: the two families are scored on the same terms. The masks are never
pasted for all instances at once: ``Result`` gets the 28x28 mask-head probabilities with their
boxes (``PastedSoftMasks``) and pastes one instance at a time into its box region only, as
``paste_masks_in_image`` does on CPU (uint8 probabilities, ``threshold=-1``), thresholding and
encoding each to RLE at once. Memory added by a prediction therefore does not grow with
resolution x detections (one box-sized crop at a time).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from ...engine.result import Result, SoftMasks
from ._compat import import_detectron2


class PastedSoftMasks(SoftMasks):
    """Soft masks of R-CNN detections: the mask head's (N, M, M) probabilities and the (N, 4) xyxy
    boxes in image pixels, pasted one instance at a time into its box region (Detectron2's
    ``_do_paste_mask`` with ``skip_empty``: the box +-1 pixel), as uint8 ``p * 255``."""

    def __init__(self, image_size: Sequence[int], probs, boxes):
        import torch

        super().__init__(image_size)
        probs = torch.as_tensor(probs, dtype=torch.float32).cpu()
        self.probs = probs.reshape(len(probs), *probs.shape[-2:])
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32).cpu().reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.probs)

    def crop(self, i: int) -> tuple[int, int, np.ndarray]:
        import torch
        from detectron2.layers.mask_ops import _do_paste_mask

        h, w = self.image_size
        m, (ys, xs) = _do_paste_mask(self.probs[i:i + 1, None], self.boxes[i:i + 1], h, w, skip_empty=True)
        return int(ys.start), int(xs.start), (m[0] * 255).to(dtype=torch.uint8).numpy()

    def take(self, idx) -> PastedSoftMasks:
        idx = [int(i) for i in idx]
        return PastedSoftMasks(self.image_size, self.probs[idx], self.boxes[idx])


def box_predictors(roi_heads) -> list:
    """The box predictors of ``roi_heads``: one, or one per stage for Cascade (the last decides)."""
    import torch

    bp = roi_heads.box_predictor
    return list(bp) if isinstance(bp, torch.nn.ModuleList) else [bp]


@contextmanager
def score_threshold(roi_heads, value: float) -> Iterator[None]:
    """Every box predictor of ``roi_heads`` keeps detections scoring ``>= value`` inside the block
    (``test_score_thresh``), and gets its own value back afterwards."""
    preds = box_predictors(roi_heads)
    saved = [p.test_score_thresh for p in preds]
    try:
        for p in preds:
            p.test_score_thresh = value
        yield
    finally:
        for p, s in zip(preds, saved):
            p.test_score_thresh = s


class NetPredictor:
    def __init__(self, net, cfg, category_ids: Sequence[int], class_names: Sequence[str], model_name: str = ""):
        import_detectron2()
        import detectron2.data.transforms as T

        self.net = net
        self.cfg = cfg
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.category_ids = np.asarray(list(category_ids), np.int64)
        self.class_names = list(class_names)
        self.model_name = model_name

    def _inputs(self, images: Sequence[np.ndarray]) -> list[dict]:
        import torch

        out = []
        for img in images:
            arr = img[:, :, ::-1] if self.input_format == "BGR" else img
            h, w = img.shape[:2]
            arr = self.aug.get_transform(arr).apply_image(arr)
            out.append({"image": torch.as_tensor(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype("float32")),
                        "height": h, "width": w})
        return out

    def __call__(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None,
                 threshold: float = 0.5, mask_threshold: float = 0.5, keep_image: bool = True) -> list[Result]:
        import torch
        from detectron2.structures import Boxes

        paths = list(paths) if paths is not None else [None] * len(images)
        inputs = self._inputs(images)
        net = self.net
        was_training = net.training
        net.eval()
        rh = net.roi_heads
        floor = min([threshold, *(p.test_score_thresh for p in box_predictors(rh))])
        try:
            with torch.no_grad(), score_threshold(rh, floor):
                outputs = net.inference(inputs, do_postprocess=False)
        finally:
            net.train(was_training)
        results = []
        for img, path, inp, inst in zip(images, paths, inputs, outputs):
            h, w = inp["height"], inp["width"]
            inst = inst.to("cpu")
            boxes = Boxes(inst.pred_boxes.tensor.clone())
            boxes.scale(w / inst.image_size[1], h / inst.image_size[0])
            boxes.clip((h, w))
            keep = boxes.nonempty() & (inst.scores >= threshold)
            idx = torch.nonzero(keep).flatten()
            boxes = Boxes(boxes.tensor[idx])
            scores = inst.scores[idx]
            labels = inst.pred_classes[idx]
            probs = None
            if inst.has("pred_masks"):
                probs = PastedSoftMasks((h, w), inst.pred_masks[idx][:, 0], boxes.tensor)
            lab = labels.numpy()
            results.append(Result(
                input_path=path, image_size=(h, w), boxes=boxes.tensor.numpy(), scores=scores.numpy(),
                class_ids=self.category_ids[lab] if len(lab) else np.zeros(0, np.int64),
                class_names=[self.class_names[i] for i in lab], mask_probs=probs, mask_threshold=mask_threshold,
                threshold=threshold, image=img if keep_image else None, model_name=self.model_name))
        return results
