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
from gpu_sharing.sizing.overheads import (ENGINE_ERAS, GRAPH_BASE_BYTES, GRAPH_PER_LAYER_BYTES,  # noqa: E402
                                          context_bytes, graph_bytes)

sys.path.insert(0, str(ROOT / "benchmarks"))
import profile_fit  # noqa: E402

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


def _median(v: list[float]) -> float:
    v = sorted(v)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2 if v else 0.0


def overhead_table(eras: dict | None = None, *, quiet: bool = False) -> dict[str, tuple[int, int]]:
    """Per point: logged vs predicted activation peak, non-torch memory and their sum (the non-KV overhead
    vLLM subtracts besides weights and graphs). Returns {split: (within 25%, total)}."""
    points, shapes = profile_fit.load()
    scored = profile_fit.score(points, shapes, eras or ENGINE_ERAS)
    if not quiet:
        header = (f"{'profile':<58} {'era':<14} {'split':<7} {'tp':>2} {'T':>6} {'S':>5} {'act log':>7} {'pred':>5} "
                  f"{'err':>7} {'nt log':>6} {'pred':>5} {'non-KV':>6} {'pred':>5} {'err':>7}")
        print(header)
        print("-" * len(header))
        for s in scored:
            p = s.point
            print(f"{p['name'][:58]:<58} {p['era']:<14} {p['split']:<7} {p['tp']:>2} {p['batched_tokens']:>6} "
                  f"{p['max_num_seqs']:>5} {s.act_log:>7.2f} {s.act_pred_gib:>5.2f} {_err(s.act_pred_gib, s.act_log)} "
                  f"{s.nt_log:>6.2f} {s.nt_pred_gib:>5.2f} {s.total_log:>6.2f} {s.total_pred:>5.2f} "
                  f"{_err(s.total_pred, s.total_log)}{'' if s.within_25 else '  *'}")
    out = {}
    for split in ("fit", "holdout", "all"):
        sel = [s for s in scored if split == "all" or s.point["split"] == split]
        out[split] = (sum(s.within_25 for s in sel), len(sel))
    if not quiet:
        for split, (w, n) in out.items():
            print(f"non-KV overhead (activation + non-torch) within 25%, {split:>7} points: {w}/{n} ({w / n:.0%})")
        act_err = [(s.act_pred_gib - s.act_log) / s.act_log for s in scored]
        nt_err = [s.nt_pred_gib - s.nt_log for s in scored]
        print(f"per term: activation median error {_median(act_err):+.0%}, median |error| "
              f"{_median([abs(e) for e in act_err]):.0%}, under-estimated on {sum(e < 0 for e in act_err)}/{len(act_err)}; "
              f"non-torch median error {_median(nt_err):+.2f} GiB (median |error| "
              f"{_median([abs(e) for e in nt_err]):.2f} GiB); * = outside 25%\n")
    return out


def graph_table() -> None:
    points, shapes = profile_fit.load()
    fit_pts = [p for p in points if p["split"] == "fit"]
    base, per_layer = profile_fit.fit_graph(fit_pts, shapes)
    print(f"graph term: committed {GRAPH_BASE_BYTES / GIB:.3f} + {GRAPH_PER_LAYER_BYTES / GIB:.4f} GiB/layer; "
          f"refit on the fit half {base:.3f} + {per_layer:.4f} GiB/layer")
    header = f"{'profile':<58} {'split':<7} {'layers':>6} {'estimate':>8} {'actual':>6} {'pred':>5} {'err vs est':>10}"
    print(header)
    print("-" * len(header))
    within = n = 0
    for p in points:
        est, act = p["logged"].get("graph_estimate_gib"), p["logged"].get("graph_actual_gib")
        if est is None and act is None:
            continue
        layers = shapes[p["shape"]].layers
        pred = graph_bytes(layers, p["enforce_eager"]) / GIB
        ref = est if est is not None else act
        n += 1
        within += abs(pred - ref) <= 0.25 * ref
        print(f"{p['name'][:58]:<58} {p['split']:<7} {layers:>6} {est if est is not None else float('nan'):>8.2f} "
              f"{act if act is not None else float('nan'):>6.2f} {pred:>5.2f} {_err(pred, ref):>10}")
    print(f"graph term within 25% of the logged estimate (else the actual capture): {within}/{n}\n")


def context_table() -> None:
    points, _ = profile_fit.load()
    rows = [p for p in points if p["logged"].get("context_gib") is not None]
    print("context before vLLM's first snapshot (outside its requested budget), logged vs the contract's term:")
    for tp in sorted({p["tp"] for p in rows}):
        v = [p["logged"]["context_gib"] for p in rows if p["tp"] == tp]
        print(f"  tp={tp}: logged {min(v):.2f}-{max(v):.2f} GiB on {len(v)} points; contract {context_bytes(tp) / GIB:.2f} GiB")
    print()


def refit() -> None:
    points, shapes = profile_fit.load()
    fitted = profile_fit.fit([p for p in points if p["split"] == "fit"], shapes)
    print("constants refitted on the fit half only (committed values in gpu_sharing/sizing/overheads.py):")
    for name, r in fitted.items():
        c = ENGINE_ERAS[name]
        print(f"  {name:<15} K {r.sampler_logit_copies:5.2f} (committed {c.sampler_logit_copies:4.2f})  "
              f"C_H {r.hidden_copies:4.1f} ({c.hidden_copies:3.1f})  M {r.moe_workspace:4.2f} ({c.moe_workspace:4.2f})  "
              f"non-torch tp1 {r.non_torch_tp1_bytes / GIB:4.2f} ({c.non_torch_tp1_bytes / GIB:4.2f}) "
              f"tp>1 {r.non_torch_tpn_bytes / GIB:4.2f} ({c.non_torch_tpn_bytes / GIB:4.2f}) GiB")
    res = overhead_table(fitted, quiet=True)
    print("  with the refitted constants: " + ", ".join(f"{k} {w}/{n}" for k, (w, n) in res.items()))
    swapped = profile_fit.fit([p for p in points if p["split"] == "holdout"], shapes)
    scored = profile_fit.score([p for p in points if p["split"] == "fit"], shapes, swapped)
    print(f"  halves swapped (fit on the held-out half, scored on the fit half): {sum(s.within_25 for s in scored)}"
          f"/{len(scored)} within 25%; v1-0.17+ K {swapped['v1-0.17+'].sampler_logit_copies:.2f}, "
          f"C_H {swapped['v1-0.17+'].hidden_copies:.1f}, M {swapped['v1-0.17+'].moe_workspace:.2f}\n")


def main() -> int:
    weights_table()
    overhead_table()
    refit()
    graph_table()
    context_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
