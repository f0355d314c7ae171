"""Fuzzed configs never produce a traceback (bounded run; scripts/fuzz_configs.py does 10,000+)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from fuzz_configs import run  # noqa: E402


def test_fuzzed_configs_exit_0_or_2_without_traceback():
    stats = run(200, seed=7)
    assert stats["unexpected"] == 0
    assert stats["rejected"] > 50 and stats["documents"] == 200
