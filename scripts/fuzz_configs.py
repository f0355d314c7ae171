"""Fuzz the config loader and `gpu-sharing validate`: never a traceback, always exit 0 or 2.

    python scripts/fuzz_configs.py [--count 10000] [--seed 0]

Runs in-process through gpu_sharing.cli.main (the same path as the command) and prints
counts: documents, valid, rejected (exit 2), unexpected exceptions (must be 0), time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_sharing.cli.main import main as cli  # noqa: E402
from gpu_sharing.config.fuzz import random_document  # noqa: E402


def run(count: int, seed: int) -> dict:
    rng = random.Random(seed)
    stats = {"documents": 0, "valid": 0, "rejected": 0, "unexpected": 0}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.yaml"
        for _ in range(count):
            path.write_text(random_document(rng), encoding="utf-8")
            err = io.StringIO()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    rc = cli(["validate", "-c", str(path)])
            except SystemExit as e:
                rc = e.code
            except Exception:  # noqa: BLE001 - exactly what the fuzzer hunts
                stats["unexpected"] += 1
                print("UNEXPECTED:", traceback.format_exc().splitlines()[-1], file=sys.stderr)
                continue
            stats["documents"] += 1
            if rc == 0:
                stats["valid"] += 1
            elif rc == 2 and "Traceback" not in err.getvalue():
                stats["rejected"] += 1
            else:
                stats["unexpected"] += 1
    return stats


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    s = run(a.count, a.seed)
    print(f"documents {s['documents']}, valid {s['valid']}, rejected (exit 2) {s['rejected']}, "
          f"unexpected {s['unexpected']}, {time.perf_counter() - t0:.1f} s")
    sys.exit(1 if s["unexpected"] else 0)
