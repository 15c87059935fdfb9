"""ONNX export of the inference graph (with masks) runs in onnxruntime and matches PyTorch."""
import numpy as np
import pytest
import torch

from workbench.models.mask_rtdetr.engine import predict_images
from workbench.models.mask_rtdetr.export import ExportWrapper, export_onnx, predict_onnx, run_onnx_raw
from workbench.models.mask_rtdetr.model import build_mask_rtdetr


@pytest.mark.slow
def test_onnx_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = build_mask_rtdetr("S", num_classes=3, num_queries=50, num_decoder_layers=2).eval()
    path = export_onnx(model, tmp_path / "m.onnx", image_size=160, num_top_queries=20)
    x = torch.rand(1, 3, 160, 160)
    scores, labels, boxes, masks = run_onnx_raw(path, x.numpy())
    with torch.no_grad():
        ref = ExportWrapper(model, 20)(x)
    assert scores.shape == (1, 20) and boxes.shape == (1, 20, 4) and masks.shape == (1, 20, 40, 40)
    np.testing.assert_allclose(scores, ref[0].numpy(), atol=1e-4)
    np.testing.assert_array_equal(labels, ref[1].numpy())
    np.testing.assert_allclose(boxes, ref[2].numpy(), atol=1e-4)
    np.testing.assert_allclose(masks, ref[3].numpy(), atol=1e-3)
    # end-to-end on a uint8 image: same detections as the PyTorch predictor
    img = (np.random.default_rng(0).random((120, 150, 3)) * 255).astype(np.uint8)
    a = predict_onnx(path, [img], threshold=0.0)[0]
    b = predict_images(model, [img], threshold=0.0, size=160, num_top_queries=20)[0]
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-2)
    assert a["masks"].shape == b["masks"].shape == (20, 120, 150)
    assert (a["masks"] != b["masks"]).mean() < 1e-3


def test_onnx_other_size_is_a_clear_error(tmp_path):
    """The graph's input size is fixed (anchors and level shapes are traced as constants): another
    size is an error naming the exported one, before onnxruntime runs."""
    torch.manual_seed(0)
    model = build_mask_rtdetr("S", num_classes=2, num_queries=20, num_decoder_layers=1).eval()
    path = export_onnx(model, tmp_path / "m.onnx", image_size=96, num_top_queries=10)
    scores, *_ = run_onnx_raw(path, np.random.rand(1, 3, 96, 96).astype(np.float32))
    assert scores.shape == (1, 10)
    with pytest.raises(ValueError, match="exported for 96x96"):
        run_onnx_raw(path, np.random.rand(1, 3, 128, 128).astype(np.float32))
