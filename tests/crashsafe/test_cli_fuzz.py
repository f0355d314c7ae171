"""The CLI exit-code contract under hostile input: every subcommand (scripts/cli_fuzz.py: 156 argvs with the
values of issue 16), run under a 1 GiB address-space limit, exits 0, 1 or 2 with a message: no traceback, no
internal error, never over the limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_cli_fuzz_keeps_the_exit_code_contract_under_1_gib():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_fuzz.py"), "--json", "--limit-bytes", str(1 << 30)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    summary = json.loads(r.stdout)
    assert r.returncode == 0, summary["failures"]
    assert summary["cases"] >= 150
    assert summary["tracebacks"] == 0 and summary["contract_broken"] == 0
    assert summary["internal_errors"] == 0, summary["failures"]
    assert set(summary["exit_codes"]) <= {"0", "1", "2"}
