"""Random config documents for fuzzing the loader: valid skeletons with mutated values and keys.

Used by tests/reliability (a bounded run in CI) and scripts/fuzz_configs.py (10,000+ documents).
Mutations: wrong types, huge and negative numbers, unicode, deep nesting, unknown keys,
duplicate keys and YAML alias bombs (text-level), dropped required keys.
"""

from __future__ import annotations

import random
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "version": "v1",
    "node": {"backend": "simulated", "allow_driver_reload": False, "simulator": {"gpu_model": "MI300X", "gpus": 8}},
    "gpus": [{"devices": "all", "compute_partition": "auto", "memory_partition": "auto"}],
    "models": [{"name": "m", "source": "org/m", "replicas": 1, "priority": 1, "max_model_len": 4096,
                "limits": {"compute_share": 0.5, "memory_bytes": "20GiB"}, "vllm_args": {"block-size": 16}}],
    "vllm": {"port_range": [8100, 8999], "stop_grace_s": 30},
    "api": {"host": "127.0.0.1", "port": 8080},
}
ODD_VALUES = [None, True, -1, 0, 2**63, -2**63, 1e308, float("nan"), "", "ünïcødé ☃", "x" * 5000, [], {}, [1, [2, [3]]],
              {"a": {"b": {"c": {}}}}, "--evil", "../../etc/passwd", "NPS8", "TPX", "24XB", 3.5, "auto"]


def _mutate(node: Any, rng: random.Random, depth: int = 0) -> Any:
    if isinstance(node, dict):
        out = {k: _mutate(v, rng, depth + 1) if rng.random() < 0.7 else v for k, v in node.items()}
        r = rng.random()
        if r < 0.15 and out:
            out.pop(rng.choice(list(out)))
        elif r < 0.3:
            out[rng.choice(["extra", "Version", "ÿ", "max_model_lenn", "replicas"])] = rng.choice(ODD_VALUES)
        return out
    if isinstance(node, list):
        out = [_mutate(v, rng, depth + 1) for v in node]
        if rng.random() < 0.2:
            out = out * rng.randint(0, 3)
        return out
    return rng.choice(ODD_VALUES) if rng.random() < 0.4 else node


def random_document(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.05:
        return "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n"
                                                                  for p, c in zip("abcdefgh", "bcdefghi"))
    if r < 0.1:
        return "version: v1\nversion: v1\n"
    if r < 0.15:
        return "[" * rng.randint(1, 2000)
    if r < 0.2:
        return "".join(rng.choice("{}[]:,-&*!|>'\"\n #%@`") for _ in range(rng.randint(0, 200)))
    doc = _mutate(BASE, rng)
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError, RecursionError):
        return "version: v1\n"
