"""systemd/gpu-sharing.service passes `systemd-analyze verify` and keeps the choices the daemon relies on.

verify runs on a copy whose ExecStart points at this venv's gpu-sharing (verify checks that
the binary exists and is executable); any warning it prints fails the test.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "gpu-sharing.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_verifies(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd); cannot verify the unit")
    exe = Path(sys.executable).parent / "gpu-sharing"
    if not exe.exists():
        pytest.skip(f"{exe} missing: install the project into this venv (pip install -e .)")
    copy = tmp_path / "gpu-sharing.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/gpu-sharing", str(exe)))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_unit_choices():
    d = directives()
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == ["/usr/local/bin/gpu-sharing run -c /etc/gpu-sharing/gpu-sharing.yaml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["Restart"] == ["on-failure"] and int(d["WatchdogSec"][0]) > 0
    assert d["StateDirectory"] == d["ConfigurationDirectory"] == d["LogsDirectory"] == ["gpu-sharing"]
    assert d["KillMode"] == ["process"]  # on_exit: keep and adoption need the children to survive
    assert "CAP_SYS_MODULE" in d["CapabilityBoundingSet"][0].split()
    assert d.get("PrivateDevices", ["no"]) == ["no"] and d.get("ProtectKernelModules", ["no"]) == ["no"]
    assert {"/dev/kfd rw", "char-drm rw"} <= set(d["DeviceAllow"])
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
