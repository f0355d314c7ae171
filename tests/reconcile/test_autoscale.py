"""The autoscaler's rules with an injected clock: cold start, scale up after the delay, hysteresis on the way
down, idle unload to min_replicas, eviction of idle lower-or-equal priority models only."""

from __future__ import annotations

from gpu_sharing.config.schema import Config
from gpu_sharing.reconcile.autoscale import Autoscaler, DemandSample, ScaleKind


def config(**scaling):
    base = {"min_replicas": 0, "max_replicas": 3, "idle_unload_s": 60, "target_queue_per_replica": 2,
            "scale_up_after_s": 5, "scale_down_after_s": 20}
    return Config.model_validate({"version": "v1", "models": [
        {"name": "chat", "source": "org/chat", "priority": 10, "replicas": 0, "scaling": {**base, **scaling}},
        {"name": "low", "source": "org/low", "priority": 1, "replicas": 1, "scaling": base},
        {"name": "high", "source": "org/high", "priority": 99, "replicas": 1, "scaling": base},
        {"name": "fixed", "source": "org/fixed", "replicas": 2}]})


def test_cold_start_then_scale_up_after_the_delay_then_down_with_hysteresis():
    cfg, a = config(), Autoscaler()
    assert a.decide(cfg, {}, 0.0) == [] and a.targets()["chat"] == 0
    (d,) = [d for d in a.decide(cfg, {"chat": DemandSample("chat", held=1, last_request_at=1.0)}, 1.0) if d.model == "chat"]
    assert (d.kind, d.to_replicas) == (ScaleKind.COLD_START, 1)
    busy = {"chat": DemandSample("chat", in_flight=5, last_request_at=2.0)}
    assert not [d for d in a.decide(cfg, busy, 2.0) if d.model == "chat"]  # above target, but not for 5 s yet
    assert not [d for d in a.decide(cfg, busy, 6.9) if d.model == "chat"]
    (up,) = [d for d in a.decide(cfg, busy, 7.0) if d.model == "chat"]
    assert (up.kind, up.to_replicas) == (ScaleKind.SCALE_UP, 2)
    # 2 outstanding on 2 replicas: not above target (2 per replica), not low enough to drop (<= 1 * 2 / 2 = 1)
    calm = {"chat": DemandSample("chat", in_flight=2, last_request_at=30.0)}
    assert not [d for d in a.decide(cfg, calm, 30.0) if d.model == "chat"]
    assert not [d for d in a.decide(cfg, calm, 100.0) if d.model == "chat"]
    quiet = {"chat": DemandSample("chat", in_flight=1, last_request_at=100.0)}
    assert not [d for d in a.decide(cfg, quiet, 100.0) if d.model == "chat"]
    (down,) = [d for d in a.decide(cfg, quiet, 120.0) if d.model == "chat"]
    assert (down.kind, down.to_replicas) == (ScaleKind.SCALE_DOWN, 1)
    assert a.targets()["chat"] == 1  # never below 1 while a request runs


def test_idle_unload_counts_from_the_last_request_and_never_touches_fixed_models():
    cfg, a = config(), Autoscaler()
    a.decide(cfg, {}, 0.0)
    assert a.targets() == {"chat": 0, "low": 0, "high": 0}  # start at min_replicas; 'fixed' is not the autoscaler's
    a.decide(cfg, {"low": DemandSample("low", held=1, last_request_at=0.0)}, 0.0)
    assert a.targets()["low"] == 1
    assert not [d for d in a.decide(cfg, {"low": DemandSample("low", last_request_at=30.0)}, 59.0) if d.model == "low"]
    assert not [d for d in a.decide(cfg, {"low": DemandSample("low", last_request_at=30.0)}, 89.0) if d.model == "low"]
    (d,) = [d for d in a.decide(cfg, {"low": DemandSample("low", last_request_at=30.0)}, 90.0) if d.model == "low"]
    assert (d.kind, d.to_replicas) == (ScaleKind.IDLE_UNLOAD, 0)


def test_eviction_takes_only_idle_models_of_lower_or_equal_priority():
    cfg, a = config(), Autoscaler()
    a.decide(cfg, {m: DemandSample(m, held=1, last_request_at=0.0) for m in ("low", "high")}, 0.0)
    assert a.targets() == {"chat": 0, "low": 1, "high": 1}
    held = DemandSample("chat", held=3, last_request_at=1.0)
    a.decide(cfg, {"chat": held}, 1.0)  # cold start: target 1
    busy_low = {"chat": held, "low": DemandSample("low", in_flight=1, last_request_at=1.0),
                "high": DemandSample("high", last_request_at=0.5)}
    evictions = [d for d in a.decide(cfg, busy_low, 2.0, unplaced=["chat"]) if d.kind == ScaleKind.EVICT]
    assert evictions == []  # 'low' is busy, 'high' has a higher priority: nobody is evicted
    idle_low = {**busy_low, "low": DemandSample("low", last_request_at=0.5)}
    (e,) = [d for d in a.decide(cfg, idle_low, 3.0, unplaced=["chat"]) if d.kind == ScaleKind.EVICT]
    assert (e.model, e.to_replicas) == ("low", 0) and "chat" in e.reason
    assert a.targets()["high"] == 1
