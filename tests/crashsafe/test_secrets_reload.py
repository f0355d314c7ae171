"""Token and API settings on reload: a rotated token applies at once (the old one is refused), an unreadable
token file keeps the old token, API host/port changes are reported as needing a restart, a non-loopback bind
without a token is a loud warning, and the sizing catalog's content never appears in an error."""

from __future__ import annotations

import asyncio

import pytest

from gpu_sharing.config.loader import load_config, load_sizing_catalog
from gpu_sharing.daemon.http_api import read_token
from gpu_sharing.daemon.service import Daemon
from gpu_sharing.errors import ConfigError, UserError
from gpu_sharing.hardware.modes import ComputePartitionMode as C

from reconcile_fakes import RecordingBackend
from test_reconciler import new_reconciler


def daemon_with(tmp_path, text):
    path = tmp_path / "gs.yaml"
    path.write_text(text)
    rec = new_reconciler(tmp_path, RecordingBackend({0: C.CPX}), cfg=load_config(path))
    return Daemon(str(path), rec), path


def test_token_is_reread_on_reload_and_api_changes_need_a_restart(tmp_path):
    token = tmp_path / "token"
    token.write_text("old-token\n")
    d, path = daemon_with(tmp_path, f"version: v1\napi: {{token_file: {token}}}\nmodels: []\n")
    d._token = read_token(str(token))  # noqa: SLF001 - what run() does at start
    try:
        token.write_text("new-token\n")
        path.write_text(f"version: v1\napi: {{token_file: {token}, port: 9999}}\nmodels: []\n")
        assert asyncio.run(d.reload("test"))["ok"]
        assert d._token == "new-token"  # noqa: SLF001
        assert any(e["kind"] == "reload-warning" and "api.port" in e["message"] for e in d.events)
        token.unlink()
        assert asyncio.run(d.reload("test"))["ok"]
        assert d._token == "new-token"  # noqa: SLF001 - kept, never dropped to "no token"
        assert any(e["kind"] == "reload-error" and "api.token_file" in e["message"] for e in d.events)
    finally:
        d._executor.shutdown(wait=True)  # noqa: SLF001


def test_non_loopback_without_token_is_a_loud_warning(tmp_path):
    d, path = daemon_with(tmp_path, "version: v1\nmodels: []\n")
    try:
        path.write_text("version: v1\napi: {host: 0.0.0.0}\nmodels: []\n")
        asyncio.run(d.reload("test"))
        warn = [e for e in d.events if e["kind"] == "security-warning"]
        assert warn and "0.0.0.0" in warn[0]["message"] and "WITHOUT a token" in warn[0]["message"]
    finally:
        d._executor.shutdown(wait=True)  # noqa: SLF001


def test_missing_or_empty_token_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="api.token_file"):
        read_token(str(tmp_path / "nope"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        read_token(str(tmp_path / "empty"))


def test_catalog_errors_never_echo_its_content(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$SECRETHASH:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n")
    with pytest.raises(ConfigError) as e:
        load_sizing_catalog(shadow)
    assert "SECRETHASH" not in str(e.value) and "19000" not in str(e.value) and "unknown key" in str(e.value)
