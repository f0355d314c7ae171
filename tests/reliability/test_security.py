"""Security review items, tested: loopback default, no shell=True, no flag/path injection, file modes."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from gpu_sharing.config import parse_config_text
from gpu_sharing.config.schema import ApiSettings, VllmSettings
from gpu_sharing.errors import ConfigError
from gpu_sharing.sizing.measured_store import MeasuredSizes

ROOT = Path(__file__).resolve().parents[2]


def test_api_and_instances_bind_loopback_by_default():
    assert ApiSettings().host == "127.0.0.1" and VllmSettings().host == "127.0.0.1"


def test_no_shell_true_anywhere():
    offenders = []
    for path in [*ROOT.joinpath("gpu_sharing").rglob("*.py"), *ROOT.joinpath("simulator").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "shell" and getattr(node.value, "value", False) is True:
                offenders.append(f"{path}:{node.value.lineno}")
    assert offenders == []


@pytest.mark.parametrize("name", ["--foo", "../../etc", "a/b", "-x", "a b", ".hidden", ""])
def test_model_names_cannot_inject_flags_or_paths(name):
    with pytest.raises(ConfigError):
        parse_config_text(f"version: v1\nmodels:\n  - {{name: '{name}', source: org/m}}\n")


def test_sources_and_vllm_args_cannot_inject_flags():
    with pytest.raises(ConfigError, match="source"):
        parse_config_text("version: v1\nmodels:\n  - {name: a, source: --served-model-name}\n")
    with pytest.raises(ConfigError, match="vllm_args"):
        parse_config_text("version: v1\nmodels:\n  - {name: a, source: x, vllm_args: {'--port': 1}}\n")


def test_state_files_are_not_world_writable(tmp_path):
    from gpu_sharing.runtime import state_file

    MeasuredSizes({"k": 1}).save(tmp_path / "measured_sizes.json")
    writer = next(getattr(state_file, n) for n in ("write_state", "save_state") if hasattr(state_file, n))
    writer(tmp_path, [])
    for p in tmp_path.iterdir():
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert not mode & stat.S_IWOTH, f"{p} is world-writable ({oct(mode)})"
