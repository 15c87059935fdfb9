"""Converter round trip on a synthetic .pdparams built from the Paddle S manifest."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.models.mask_rtdetr import convert
from workbench.models.mask_rtdetr.model import build_mask_rtdetr

MANIFEST = Path(__file__).parent / "mask_rtdetr_data" / "pd_keys_s.json"


@pytest.fixture(scope="module")
def synthetic_pdparams(tmp_path_factory):
    names = json.loads(MANIFEST.read_text())
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(tuple(s)).astype(np.float32) for k, s in names.items()}
    for k in params:
        if k.endswith("_variance"):
            params[k] = np.abs(params[k]) + 0.5
    path = tmp_path_factory.mktemp("pd") / "mask_rtdetr_s.pdparams"
    d = dict(params)
    d[convert.PADDLE_META_KEY] = {k: f"param_{i}" for i, k in enumerate(params)}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)
    return path, params


def test_manifest_is_complete():
    names = json.loads(MANIFEST.read_text())
    assert len(names) == 646


def test_round_trip(synthetic_pdparams, tmp_path):
    path, params = synthetic_pdparams
    out = tmp_path / "s.pth"
    assert convert.main([str(path), str(out)]) == 0
    ckpt = torch.load(out, weights_only=False)
    assert ckpt["variant"] == "S" and ckpt["num_classes"] == 80
    model = build_mask_rtdetr("S", 80)
    model.load_state_dict(ckpt["model"], strict=True)
    sd = model.state_dict()
    transposed = 0
    for pname, arr in params.items():
        t = sd[convert.paddle_to_torch_name(pname)].numpy()
        if arr.ndim == 2 and pname != "transformer.denoising_class_embed.weight":
            np.testing.assert_array_equal(t, arr.T)
            transposed += 1
        else:
            np.testing.assert_array_equal(t, arr)
    assert transposed > 50
    # specific spots: MHA in_proj [E, 3E] -> [3E, E]; embedding kept; BN stats renamed
    assert sd["neck.encoder.0.layers.0.self_attn.in_proj_weight"].shape == (768, 256)
    assert sd["transformer.denoising_class_embed.weight"].shape == (80, 256)
    np.testing.assert_array_equal(sd["backbone.stages_0.blocks.0.aggregation.0.bn.running_var"].numpy(),
                                  params["backbone.stages.0.blocks.0.aggregation_squeeze_conv.bn._variance"])
    # inverse conversion gives back the Paddle dict exactly
    back = convert.torch_to_paddle(sd)
    assert set(back) == set(params)
    for k, v in params.items():
        np.testing.assert_array_equal(back[k], v)
    # and the inverse can be written as .pdparams and read again
    p2 = tmp_path / "back.pdparams"
    convert.save_pdparams(back, p2)
    again = convert.load_pdparams(p2)
    assert set(again) == set(params)


def test_converted_model_runs(synthetic_pdparams):
    path, _ = synthetic_pdparams
    ckpt = convert.convert_pdparams(path, variant="s")
    model = build_mask_rtdetr("S", 80)
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))
    assert out["pred_masks"].shape == (1, 300, 32, 32)


def test_unmapped_and_missing_names_raise(synthetic_pdparams):
    _, params = synthetic_pdparams
    ref = convert.reference_state_dict("S", 80)
    bad = dict(params)
    bad["transformer.some_new_head.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="transformer.some_new_head.weight"):
        convert.convert_state_dict(bad, ref)
    short = dict(params)
    del short["neck.enc_mask_output.1.bias"]
    with pytest.raises(ValueError, match="neck.enc_mask_output.1.bias"):
        convert.convert_state_dict(short, ref)
    wrong = dict(params)
    wrong["transformer.score_head.bias"] = np.zeros(81, np.float32)
    with pytest.raises(ValueError, match="shape"):
        convert.convert_state_dict(wrong, ref)


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil.pdparams"
    with open(p, "wb") as f:
        pickle.dump({"x": Evil()}, f, protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        convert.load_pdparams(p)
    assert convert.main([str(p), str(tmp_path / "o.pth")]) == 1
