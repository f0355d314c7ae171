"""Launched vLLMs keep their caches under the state dir (systemd: ProtectHome=read-only), unless the
config's env or the daemon's environment already says where."""

from __future__ import annotations

from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.reconcile.cache_env import CACHE_VARS, cache_env
from gpu_sharing.reconcile.launch import build_launch

from reconcile_fakes import RecordingBackend, placement
from gpu_sharing.hardware.modes import ComputePartitionMode as C

QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def config(tmp_path, extra: str = "", launcher: str = "direct"):
    return parse_config_text(f"""
version: v1
node: {{state_dir: {tmp_path / 'state'}, launcher: {launcher}}}
models:
  - name: m
    source: org/m
    config_json: {QWEN}
    max_model_len: 2048
{extra}
""", "t.yaml")


def test_defaults_under_state_dir_and_created(tmp_path):
    cfg = config(tmp_path)
    env = cache_env(cfg, {"HIP_VISIBLE_DEVICES": "0"}, inherited={})
    root = tmp_path / "state" / "cache"
    assert env["HF_HOME"] == str(root / "huggingface") and env["VLLM_CACHE_ROOT"] == str(root / "vllm")
    assert env["TRITON_CACHE_DIR"] == str(root / "triton") and env["XDG_CACHE_HOME"] == str(root / "xdg")
    assert env["HIP_VISIBLE_DEVICES"] == "0"
    assert all((root / sub).is_dir() for _, sub in CACHE_VARS)


def test_config_env_daemon_env_and_cache_dir_win(tmp_path):
    cfg = config(tmp_path, f"vllm: {{cache_dir: {tmp_path / 'c'}, env: {{HF_HOME: /models/hf}}}}")
    env = cache_env(cfg, dict(cfg.vllm.env), inherited={"TRITON_CACHE_DIR": "/fast/triton"})
    assert env["HF_HOME"] == "/models/hf"
    assert "TRITON_CACHE_DIR" not in env  # inherited from the daemon's own environment
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "c" / "vllm")


def test_build_launch_carries_cache_env_into_systemd_run_argv(tmp_path, monkeypatch):
    for var, _ in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    backend = RecordingBackend({0: C.SPX})
    inv = backend.inventory()
    p = placement("m-0", ((0, 0),))
    for launcher in ("direct", "systemd-run"):
        cfg = config(tmp_path, launcher=launcher)
        launch = build_launch(p, [inv.partition(p.partitions[0])], 9100, None, inv, config=cfg, fingerprint="fp")
        hf = str(tmp_path / "state" / "cache" / "huggingface")
        assert dict(launch.env)["HF_HOME"] == hf
        if launcher == "systemd-run":  # the transient unit does not inherit systemd-run's env: it must be in argv
            assert any(hf in a for a in launch.argv), launch.argv


def test_simulated_launches_keep_their_caches_in_the_simulation(tmp_path, monkeypatch):
    """Under --simulate the caches go under the state dir the simulation runs in, not node.state_dir's default
    (/var/lib/gpu-sharing), whether or not the config sets node.state_dir."""
    from gpu_sharing.reconcile.desired import effective_config
    from gpu_sharing.reconcile.reconciler import Reconciler

    for var, _ in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    backend = RecordingBackend({0: C.SPX})
    inv = backend.inventory()
    p = placement("m-0", ((0, 0),))
    for cfg in (config(tmp_path), parse_config_text(f"version: v1\nmodels: [{{name: m, source: org/m, config_json: "
                                                    f"{QWEN}, max_model_len: 2048}}]\n", "t.yaml")):
        rec = Reconciler(cfg, backend, state_dir=tmp_path / "sim" / "daemon", simulate=True,
                         sim_state_dir=tmp_path / "sim")
        launch = build_launch(p, [inv.partition(p.partitions[0])], 9100, None, inv, config=rec.config, fingerprint="fp")
        assert dict(launch.env)["HF_HOME"] == str(tmp_path / "sim" / "daemon" / "cache" / "huggingface")
        assert (tmp_path / "sim" / "daemon" / "cache" / "vllm").is_dir()
    # without a state dir of its own (plan, kserve export): <sim-state>/daemon, the daemon's default there
    assert effective_config(cfg, sim_state_dir=tmp_path / "s2").node.state_dir == str(tmp_path / "s2" / "daemon")
    assert effective_config(cfg).node.state_dir == "/var/lib/gpu-sharing"  # a real node: as configured
