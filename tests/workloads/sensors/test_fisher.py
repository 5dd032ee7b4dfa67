"""Fisher history and the FGSF trigger on scripted sequences."""

from __future__ import annotations

import pytest
import torch

from esper.workloads.sensors import TOTAL, FGSFTrigger, FisherHistory, rigid_weights

RISE = [1.0, 2.0, 4.0, 7.0, 9.0, 10.0]
PLATEAU = [10.1, 10.05, 10.1, 10.08, 10.1, 10.12, 10.1, 10.11]
FALLING = [1.0] * 6 + [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35]


def _run(traces: list[float], gsnrs: list[float], trigger: FGSFTrigger) -> list[int]:
    history = FisherHistory()
    fired = []
    for t, (trace, gsnr) in enumerate(zip(traces, gsnrs, strict=True)):
        history.append({"a": trace, "b": 1.0}, {"a": gsnr, "b": 1.0}, trace + 1.0, gsnr)
        signal = trigger.update(history)
        if "a" in signal.layers:
            fired.append(t)
    return fired


def test_fires_on_saturating_trace_with_falling_gsnr() -> None:
    fired = _run(RISE + PLATEAU, FALLING, FGSFTrigger(window=5, cooldown=10))
    assert fired == [10]  # first reading whose window is flat and whose GSNR has fallen
    assert _run(RISE + PLATEAU, FALLING, FGSFTrigger(window=5, cooldown=0)) == [10, 11, 12, 13]


def test_silent_on_healthy_sequences() -> None:
    trigger = FGSFTrigger(window=5)
    rising = [1.0 + 0.5 * t for t in range(14)]
    assert _run(rising, FALLING, trigger) == []  # still learning: not saturated
    assert _run(RISE + PLATEAU, [1.0] * 14, FGSFTrigger(window=5)) == []  # GSNR holds
    flat = [10.0 + 0.01 * (t % 2) for t in range(14)]
    assert _run(flat, FALLING, FGSFTrigger(window=5)) == []  # never rose


def test_network_series_and_trends() -> None:
    history = FisherHistory()
    trigger = FGSFTrigger(window=5)
    fired_total = []
    for t, (trace, gsnr) in enumerate(zip(RISE + PLATEAU, FALLING, strict=True)):
        history.append({"a": trace}, {"a": gsnr}, trace, gsnr)
        if trigger.update(history).fired:
            fired_total.append(t)
    assert fired_total == [10]
    assert history.names() == ["a", TOTAL]
    trace_trend, gsnr_trend = history.trend("a", 5)
    assert trace_trend == pytest.approx((10.11 - 10.1) / 10.1)
    assert gsnr_trend == pytest.approx((0.35 - 0.7) / 0.7)
    assert history.trend("missing", 5) == (0.0, 0.0)


def test_state_dict_round_trip_continues_exactly() -> None:
    traces, gsnrs = RISE + PLATEAU, FALLING
    a_hist, a_trig = FisherHistory(maxlen=8), FGSFTrigger(window=5, cooldown=1)
    for t in range(10):
        a_hist.append({"a": traces[t]}, {"a": gsnrs[t]}, traces[t], gsnrs[t])
        a_trig.update(a_hist)
    b_hist, b_trig = FisherHistory(), FGSFTrigger(window=5, cooldown=1)
    b_hist.load_state_dict(a_hist.state_dict())
    b_trig.load_state_dict(a_trig.state_dict())
    for t in range(10, len(traces)):
        for h in (a_hist, b_hist):
            h.append({"a": traces[t]}, {"a": gsnrs[t]}, traces[t], gsnrs[t])
        assert a_trig.update(a_hist) == b_trig.update(b_hist)
    assert torch.equal(a_hist.trace("a"), b_hist.trace("a"))
    assert len(b_hist.trace("a")) == 8


def test_rigid_weights_and_validation() -> None:
    fisher = torch.tensor([[0.1, 5.0], [3.0, 0.2]])
    assert rigid_weights(fisher, 0.5).tolist() == [1, 2]
    mask = torch.tensor([[True, False], [True, True]])
    assert rigid_weights(fisher, 0.34, mask).tolist() == [2]
    with pytest.raises(ValueError, match="gsnr_drop"):
        FGSFTrigger(gsnr_drop=1.5)
