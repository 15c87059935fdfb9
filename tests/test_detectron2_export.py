"""ONNX export of the Detectron2 family (docs/export.md): onnxruntime matches PyTorch on the same
image, at two input sizes (H/W are dynamic axes), with no detections too, and end to end
(``predict_onnx`` vs ``model.predict``); ``Global.mode=export`` through the CLI for Mask R-CNN
and Cascade Mask R-CNN.

Small random-init models (depth 18, 96-px short side, a 256-wide box head, 100 RPN proposals,
20 detections) keep export and onnxruntime runs within CPU budgets; the graph is the same one a
full-size model traces.

Tolerances (float32 on both sides; measured differences in the brackets): boxes 1e-3 px
(~3e-5: the same convolutions summed in another order by onnxruntime's kernels), scores 1e-5
(~3e-7), classes exact, 28x28 mask probabilities 1e-4 (~6e-8); end to end, pasted binary masks may
differ only at pixels whose probability is within rounding of the threshold (< 0.1 % of pixels).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from workbench.models import create_model

SMALL = {"MODEL.ROI_BOX_HEAD.FC_DIM": 256, "MODEL.RPN.PRE_NMS_TOPK_TEST": 300, "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
         "TEST.DETECTIONS_PER_IMAGE": 20}


def _small(name):
    torch.manual_seed(0)
    return create_model(name, device="cpu", depth=18, input_size=96, class_names=["a", "b", "c"], d2_overrides=SMALL)


def _close_raw(onnx_out, torch_out):
    boxes, scores, classes, masks = onnx_out
    tb, ts, tc, tm = (t.numpy() for t in torch_out)
    assert boxes.shape == tb.shape and masks.shape == tm.shape and len(scores) > 0
    np.testing.assert_allclose(boxes, tb, atol=1e-3)
    np.testing.assert_allclose(scores, ts, atol=1e-5)
    np.testing.assert_array_equal(classes, tc)
    np.testing.assert_allclose(masks, tm, atol=1e-4)


def _close_results(a, b):
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert a.class_names == b.class_names
    assert a.masks.shape == b.masks.shape
    assert (a.masks != b.masks).mean() < 1e-3


def _image(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_wrapper_is_detectron2_inference():
    """The exported wrapper, run eagerly, gives what ``GeneralizedRCNN.inference`` gives."""
    from workbench.models.detectron2.export import Detectron2ExportWrapper

    m = _small("Cascade-MaskRCNN-ResNet50-FPN")
    net = m.build()
    x = torch.rand(3, 96, 128) * 255
    with torch.no_grad():
        b, s, c, mk = Detectron2ExportWrapper(net, m.cfg.INPUT.FORMAT).eval()(x, torch.tensor(0.05))
        ref = net.inference([{"image": x[[2, 1, 0]]}], do_postprocess=False)[0]  # the BGR net input
    torch.testing.assert_close(b, ref.pred_boxes.tensor)
    torch.testing.assert_close(s, ref.scores)
    assert torch.equal(c, ref.pred_classes)
    torch.testing.assert_close(mk, ref.pred_masks[:, 0], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_onnx_matches_pytorch_at_two_sizes(tmp_path):
    from workbench.models.detectron2.export import Detectron2ExportWrapper, predict_onnx, read_metadata, run_onnx_raw

    m = _small("MaskRCNN-ResNet50-FPN")
    path = m.export(tmp_path / "m.onnx")
    meta = read_metadata(path)
    assert meta["input_size"] == 96 and meta["class_names"] == ["a", "b", "c"] and meta["score_threshold"] == 0.05
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [3, "height", "width"]
    wrapper = Detectron2ExportWrapper(m.build(), m.cfg.INPUT.FORMAT).eval()
    for shape in [(3, 96, 128), (3, 150, 96)]:  # the traced size and another (not a multiple of 32)
        x = torch.rand(*shape) * 255
        with torch.no_grad():
            ref = wrapper(x, torch.tensor(0.05))
        _close_raw(run_onnx_raw(sess, x.numpy()), ref)
    out = run_onnx_raw(sess, x.numpy(), score_threshold=1.0)  # no detections: empty outputs, no error
    assert [o.shape for o in out] == [(0, 4), (0,), (0,), (0, 28, 28)]
    img = _image(120, 150)
    _close_results(predict_onnx(path, [img], threshold=0.0)[0], next(iter(m.predict(img, threshold=0.0))))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MaskRCNN-ResNet50-FPN", "Cascade-MaskRCNN-ResNet50-FPN"])
def test_cli_export(tmp_path, name):
    """``Global.mode=export`` on saved weights writes inference/model.onnx; onnxruntime on it gives
    the PyTorch model's predictions for the same image."""
    from workbench.models.detectron2.export import predict_onnx

    weights, out = tmp_path / "weights", tmp_path / "out"
    _small(name).save(weights / "model.pth")
    r = subprocess.run([sys.executable, "-m", "workbench", "-c", name, "-o", "Global.mode=export",
                        "-o", f"Global.output={out}", "-o", f"Predict.model_dir={weights}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "export_result.json").read_text())
    assert res["done_flag"] is True and res["model_name"] == name
    path = out / "inference" / "model.onnx"
    assert res["onnx"] == str(path) and path.is_file()
    m = create_model(name, weights=str(weights), device="cpu")
    img = _image(100, 140, seed=1)
    _close_results(predict_onnx(path, [img], threshold=0.0)[0], next(iter(m.predict(img, threshold=0.0))))
