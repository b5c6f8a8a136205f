"""Weight averaging: the EMA must not keep the random init in short runs (measured failure: fixed 0.997 decay left
31% weight on the init after 390 steps, 2.17 -> 6.8 bpb); reset, copy_to, fp32 shadow; SWA uniform average."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from trainer.ema import WeightEMA, WeightSWA, ema_decay_at, ema_init_weight
from trainer.errors import PgolfError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3, 4))
        self.v = nn.Parameter(torch.ones(5))
        self.register_buffer("counter", torch.zeros(2, dtype=torch.long))


def _fill(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_init_weight_analytic():
    # Fixed decay: d^N. The measured failure case: 0.997^390 = 0.31.
    assert ema_init_weight(390, 0.997, warmup=False) == pytest.approx(0.997 ** 390)
    assert 0.30 < ema_init_weight(390, 0.997, warmup=False) < 0.32
    # Warm-up min(d, (1+t)/(10+t)): the product telescopes to 9! N! / (N+9)!.
    closed = math.exp(math.lgamma(10) + math.lgamma(391) - math.lgamma(400))
    assert ema_init_weight(390, 0.997, warmup=True) == pytest.approx(closed, rel=1e-9)
    assert ema_init_weight(390, 0.997, warmup=True) < 1e-15
    # Even a very short run forgets the init: 20 updates leave 9!20!/29! ~ 2e-5.
    assert ema_init_weight(20, 0.997, warmup=True) < 1e-4


@pytest.mark.parametrize("warmup, expected", [(False, 0.997 ** 390), (True, None)])
def test_init_weight_empirical(warmup, expected):
    """Start the EMA at weights 1, then every step the model sits at 0: the shadow IS the weight on the init."""
    model = Net()
    ema = WeightEMA(model, 0.997, warmup=warmup)
    _fill(model, 0.0)
    for _ in range(390):
        ema.update(model)
    got = ema.shadow["w"]
    assert torch.allclose(got, got.flatten()[0].expand_as(got))
    if warmup:
        assert got.max().item() < 1e-12
    else:
        assert got.flatten()[0].item() == pytest.approx(expected, rel=1e-4)  # ~31%: the documented failure


def test_decay_warmup_schedule():
    assert ema_decay_at(0, 0.997) == pytest.approx(0.1)
    assert ema_decay_at(1, 0.997) == pytest.approx(2 / 11)
    assert ema_decay_at(90, 0.997) == pytest.approx(91 / 100)
    assert ema_decay_at(10_000, 0.997) == 0.997
    assert ema_decay_at(0, 0.997, warmup=False) == 0.997
    model = Net()
    ema = WeightEMA(model, 0.99)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.update(model)
    assert ema.num_updates == 1 and ema.current_decay() == pytest.approx(2 / 11)


def test_update_formula_and_integer_buffers_untouched():
    model = Net()
    ema = WeightEMA(model, 0.9, warmup=False)
    assert set(ema.shadow) == {"w", "v"}  # the long buffer is not averaged
    _fill(model, 3.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["w"], torch.full((3, 4), 0.9 * 1 + 0.1 * 3))
    _fill(model, -1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["v"], torch.full((5,), 0.9 * 1.2 + 0.1 * -1))


def test_reset_and_copy_to():
    model = Net()
    ema = WeightEMA(model, 0.997)
    for value in (2.0, 4.0, 8.0):
        _fill(model, value)
        ema.update(model)
    assert not torch.equal(ema.shadow["w"], model.w.detach())
    ema.reset(model)  # e.g. QAT switched on: restart the average at the current weights
    assert ema.num_updates == 0 and ema.current_decay() == pytest.approx(0.1)
    assert torch.equal(ema.shadow["w"], model.w.detach()) and torch.equal(ema.shadow["v"], model.v.detach())
    _fill(model, 0.0)
    ema.update(model)  # decay 0.1 after the reset: 0.1*8 + 0.9*0
    target = Net()
    ema.copy_to(target)
    torch.testing.assert_close(target.w.detach(), torch.full((3, 4), 0.8))
    with pytest.raises(PgolfError, match="no tensor named"):
        ema.copy_to(nn.Linear(2, 2))


def test_shadow_is_fp32_for_bf16_weights():
    model = Net().to(torch.bfloat16)
    ema = WeightEMA(model, 0.999, warmup=False)
    assert ema.shadow["w"].dtype == torch.float32
    _fill(model, 2.0)
    for _ in range(100):
        ema.update(model)
    # In bf16 each 0.001 nudge would round away (spacing at 1.0 is 2^-7); the fp32 shadow accumulates it.
    expected = 2.0 - 0.999 ** 100
    assert ema.shadow["w"].flatten()[0].item() == pytest.approx(expected, rel=1e-5)
    ema.copy_to(model)
    assert model.w.dtype == torch.bfloat16


def test_ema_state_dict_roundtrip():
    model = Net()
    ema = WeightEMA(model, 0.99)
    _fill(model, 5.0)
    ema.update(model)
    snap = ema.state_dict()
    ema.update(model)
    ema.load_state_dict(snap)
    assert ema.num_updates == 1
    torch.testing.assert_close(ema.shadow["w"], torch.full((3, 4), 0.1 + 0.9 * 5))


def test_swa_uniform_average_of_snapshots_in_window():
    model = Net()
    swa = WeightSWA(model, every=10, start_scale=0.2)
    taken = []
    for step in range(0, 61):
        _fill(model, float(step))
        scale = 1.0 if step < 30 else (60 - step) / 150  # warm-down: scale < 0.2 from step 31 on
        if swa.maybe_update(model, step, scale):
            taken.append(step)
    assert taken == [40, 50, 60] and swa.count == 3
    target = Net()
    swa.copy_to(target)
    torch.testing.assert_close(target.w.detach(), torch.full((3, 4), 50.0))
    torch.testing.assert_close(swa.average()["v"], torch.full((5,), 50.0))


def test_swa_errors():
    with pytest.raises(PgolfError, match="no snapshots"):
        WeightSWA(Net(), every=5).copy_to(Net())
    with pytest.raises(PgolfError, match="SWA_EVERY"):
        WeightSWA(Net(), every=0)
    with pytest.raises(PgolfError, match="EMA_DECAY"):
        WeightEMA(Net(), 1.0)
