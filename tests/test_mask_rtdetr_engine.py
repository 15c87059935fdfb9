"""Optimiser groups, warmup and EMA schedule of the training engine."""
import math

import pytest
import torch

from workbench.models.mask_rtdetr.engine import ModelEMA, build_optimizer, build_warmup_scheduler
from workbench.models.mask_rtdetr.model import build_mask_rtdetr


@pytest.fixture(scope="module")
def model():
    return build_mask_rtdetr("S", 2, num_queries=10, num_decoder_layers=1)


def test_optimizer_groups(model):
    opt = build_optimizer(model, lr=1e-4, weight_decay=1e-4)
    mults = {g["lr_mult"]: g for g in opt.param_groups}
    assert set(mults) == {1.0, 0.1}  # stem (x0) excluded, backbone stages x0.1 for S
    ids = {id(p) for p in mults[0.1]["params"]}
    assert ids == {id(p) for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad}
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    # frozen BN: no grad and eval mode even when the model trains
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)
    assert mults[1.0]["lr"] == pytest.approx(1e-4) and mults[0.1]["lr"] == pytest.approx(1e-5)


def test_warmup_linear_then_constant(model):
    opt = build_optimizer(model, lr=1e-4)
    sched = build_warmup_scheduler(opt, warmup_steps=10, start_factor=0.001)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"] / opt.param_groups[0]["lr_mult"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-7)
    assert lrs[5] == pytest.approx(1e-4 * (0.001 + 0.999 * 0.5))
    assert lrs[10:] == pytest.approx([1e-4] * 5)


def test_ema_decay_schedule_and_update():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(net, decay=0.9999, warmup=2000)
    assert ema.current_decay() == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.add_(2.0)
    d = ema.current_decay()
    ema.update(net)
    torch.testing.assert_close(ema.module[0].weight, before * d + net[0].weight * (1 - d))
    torch.testing.assert_close(ema.module[1].running_mean, net[1].running_mean * (1 - d))  # BN stats included
    assert ema.updates == 1
