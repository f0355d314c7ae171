"""Sizing accuracy: published checkpoint sizes vs computed, for every model in tests/data.

    python benchmarks/sizing.py

Prints one row per model: published tensor bytes (or file bytes, which include a 14-39 KB
safetensors header), computed weights bytes, the difference, and the same for parameter counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_sharing.sizing import size_from_config_json  # noqa: E402


def main() -> int:
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
    print(f"\nlargest error where total_size_bytes is published: {worst} bytes; file rows differ by the header only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
