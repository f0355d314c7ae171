"""Schedule windows: APScheduler's CronTrigger parses `days` (validated at `validate`, with the timezone), and
`plan` honours a window that excludes now (it used to print `+ start` for it)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings, strategies as st

from gpu_sharing.cli.main import main
from gpu_sharing.config.schedule import window_open
from gpu_sharing.config.schema import ScheduleWindow

QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16"}


def write_config(tmp_path, schedule: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "version": "v1", "node": {"simulator": {"startup_time_s": 0.1}},
        "models": [{"name": "night-batch", "source": "org/n", "config_json": QWEN_05B, "max_model_len": 2048,
                    "schedule": schedule},
                   {"name": "always", "source": "org/a", "config_json": QWEN_05B, "max_model_len": 2048}],
        "vllm": {"port_range": [24300, 24399]}}))
    return str(path)


@pytest.mark.parametrize("schedule, key", [({"days": "1-5x"}, "days"), ({"timezone": "Mars/Olympus"}, "timezone"),
                                           ({"days": "sun-tue"}, "days")])
def test_validate_exits_2_for_bad_days_and_timezone(tmp_path, capsys, schedule, key):
    assert main(["validate", "-c", write_config(tmp_path, schedule)]) == 2
    err = capsys.readouterr().err
    assert f"models[0].schedule.{key}" in err and "Traceback" not in err


DAY_TOKENS = st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun", "0", "1", "3", "6", "7", "*",
                              "x", "monday", "-", ",", "/2", "*/2", "mon-fri", "5-1", "1-5", "last", " "])


@settings(max_examples=150, deadline=None)
@given(st.lists(DAY_TOKENS, min_size=1, max_size=4).map("".join))
def test_days_accepted_exactly_when_crontrigger_accepts(days):
    try:
        CronTrigger(day_of_week=days)
        cron_ok = True
    except ValueError:
        cron_ok = False
    try:
        ScheduleWindow(days=days)
        ours_ok = True
    except ValueError:
        ours_ok = False
    assert ours_ok == cron_ok, days


def test_window_open_follows_days_times_and_timezone():
    w = ScheduleWindow(days="mon-fri", start="22:00", end="02:00", timezone="UTC")
    monday_2300 = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)
    assert window_open(w, monday_2300)
    assert not window_open(w, monday_2300.replace(hour=12))
    assert not window_open(w, datetime(2026, 12, 5, 23, 0, tzinfo=timezone.utc))  # Saturday
    berlin = ScheduleWindow(days="*", start="09:00", end="10:00", timezone="Europe/Berlin")
    assert window_open(berlin, datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc))  # 09:30 in Berlin (CET)
    assert not window_open(berlin, datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc))


@pytest.mark.integration
def test_plan_does_not_start_a_model_outside_its_window(tmp_path, capsys):
    now = datetime.now(timezone.utc)
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    cfg = write_config(tmp_path, {"days": "*", "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
                                  "timezone": "UTC"})
    assert main(["plan", "--simulate", "--sim-state", str(tmp_path / "sim"), "-c", cfg, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    started = {a["target"] for a in out["actions"] if a["kind"] == "start"}
    assert any(t.startswith("always") for t in started)
    assert not any(t.startswith("night-batch") for t in started), started
