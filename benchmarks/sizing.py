"""Sizing accuracy: published checkpoint sizes vs computed weights, and published vLLM memory
profiles vs the overhead model (gpu_sharing/sizing/overheads.py).

    python benchmarks/sizing.py

Table 1: one row per model in tests/data/published_sizes.json: published tensor bytes (or file
bytes, which include a 14-39 KB safetensors header), computed weights bytes, the difference, and
the same for parameter counts.
Table 2: one row per profile in tests/data/vllm_memory_profiles.json: logged non-torch memory and
activation peak (vLLM's own log line) vs predicted, with the error of each term and of their sum
(the non-KV overhead vLLM subtracts before sizing the KV pool), and the share within 25%.
Table 3: logged graph-capture memory vs the graph term.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_sharing.sizing import size_from_config_json  # noqa: E402
from gpu_sharing.sizing.overheads import NON_TORCH_BYTES, NON_TORCH_TP_BYTES, estimate_overheads  # noqa: E402

GIB = 1024**3


def weights_table() -> None:
    data = json.loads((ROOT / "tests" / "data" / "published_sizes.json").read_text())
    header = f"{'model':<36} {'published bytes':>16} {'computed':>16} {'diff':>8} {'params (pub)':>15} {'params':>15} {'diff':>6}"
    print(header)
    print("-" * len(header))
    worst = 0
    for e in data:
        s = size_from_config_json(e["config"], max_model_len=2048, max_num_seqs=1)
        t = e["truth"]
        pub = t.get("total_size_bytes") or t.get("file_size_bytes")
        kind = "" if t.get("total_size_bytes") else " (file)"
        diff = (pub - s.weights_bytes) if pub else 0
        pdiff = (t["param_count"] - s.param_count) if "param_count" in t else 0
        if t.get("total_size_bytes"):
            worst = max(worst, abs(diff))
        print(f"{e['model_id']:<36} {pub:>16,} {s.weights_bytes:>16,} {diff:>8,}{kind} "
              f"{t.get('param_count', 0):>15,} {s.param_count:>15,} {pdiff:>6,}")
    print(f"\nlargest error where total_size_bytes is published: {worst} bytes; file rows differ by the header only\n")


def _err(pred: float, obs: float) -> str:
    return f"{(pred - obs) / obs * 100:+6.0f}%" if obs else "   n/a"


def overhead_table() -> tuple[int, int]:
    data = json.loads((ROOT / "tests" / "data" / "vllm_memory_profiles.json").read_text())
    header = (f"{'profile':<70} {'T':>6} {'S':>4} {'act log':>8} {'act pred':>8} {'err':>7} {'nt log':>7} "
              f"{'nt pred':>7} {'non-KV log':>10} {'pred':>6} {'err':>7}")
    print(header)
    print("-" * len(header))
    within = 0
    for p in data["points"]:
        o = estimate_overheads(hidden=p["hidden"], intermediate=p["intermediate"], vocab=p["vocab"], tp=p["tp"],
                               batched_tokens=p["batched_tokens"], max_num_seqs=p["max_num_seqs"], act_dtype_bytes=2,
                               enforce_eager=p["enforce_eager"])
        act, nt = o.activation_bytes / GIB, (NON_TORCH_TP_BYTES if p["tp"] > 1 else NON_TORCH_BYTES) / GIB
        la, ln = p["logged"]["activation_gib"], p["logged"]["non_torch_gib"]
        total_pred, total_log = act + nt, la + ln
        ok = abs(total_pred - total_log) <= 0.25 * total_log
        within += ok
        print(f"{p['name'][:70]:<70} {p['batched_tokens']:>6} {p['max_num_seqs']:>4} {la:>8.2f} {act:>8.2f} "
              f"{_err(act, la)} {ln:>7.2f} {nt:>7.2f} {total_log:>10.2f} {total_pred:>6.2f} {_err(total_pred, total_log)}"
              f"{'' if ok else '  *'}")
    n = len(data["points"])
    print(f"\nnon-KV overhead (activation + non-torch) within 25%: {within}/{n} points ({within / n:.0%}); "
          "* = outside 25%. The HIP context (CONTEXT_BYTES) is not in these logs and not compared.\n")
    header = f"{'graph profile':<70} {'S':>4} {'logged':>7} {'pred':>6} {'err':>7}"
    print(header)
    print("-" * len(header))
    for g in data["graph_points"]:
        o = estimate_overheads(hidden=4096, intermediate=14336, vocab=128256, tp=1, batched_tokens=2048,
                               max_num_seqs=g["max_num_seqs"], act_dtype_bytes=2, enforce_eager=False)
        pred = o.graph_bytes / GIB
        print(f"{g['name'][:70]:<70} {g['max_num_seqs']:>4} {g['logged_graph_gib']:>7.2f} {pred:>6.2f} "
              f"{_err(pred, g['logged_graph_gib'])}")
    return within, n


def main() -> int:
    weights_table()
    overhead_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
