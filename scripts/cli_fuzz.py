"""CLI exit-code fuzz: every subcommand with hostile values, in-process, under an address-space limit.

Usage: python scripts/cli_fuzz.py [--limit-bytes N] [--json]
Sets RLIMIT_AS (default 1 GiB) before importing the CLI, builds a scratch dir (a simulated
node, valid and hostile configs and config.json files), runs ``gpu_sharing.cli.main.main``
on each argv with stdout/stderr captured, and reports per case the exit code and whether a
traceback escaped. The contract (docs/reliability.md): exit 0, 1 or 2 only, a message, no
traceback, never over the limit. ``tests/crashsafe/test_cli_fuzz.py`` runs it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

QWEN = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}


def scratch(d: Path) -> dict[str, str]:
    from simulator.node import SimNode
    SimNode.create(d / "sim", "MI300X", 2, reload_time_s=0)
    f = {"sim": str(d / "sim")}

    def cfg(name: str, text: str) -> None:
        (d / name).write_text(text)
        f[name] = str(d / name)
    cfg("empty.yaml", "version: v1\nmodels: []\n")
    cfg("nan.yaml", f"version: v1\nmodels:\n  - {{name: a, source: org/a, max_model_len: 1024, config_json: "
                    f"{json.dumps({**QWEN, 'num_attention_heads': 0}).replace('0}', '.nan}')}}}\n")
    cfg("nines.yaml", "version: v1\nmodels:\n  - {name: a, source: org/a, config_json: %s, limits: {memory_bytes: %s}}\n"
        % (json.dumps(QWEN), "9" * 400))
    cfg("inf.yaml", "version: v1\nreconcile: {vram_check_interval_s: .inf, interval_s: .nan}\nmodels: []\n")
    levels = ["x-a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    cfg("bomb.yaml", "version: v1\n" + "\n".join(levels) + "\nmodels: []\n")
    cfg("catalog.yaml", "version: v1\nsizing: {catalog: /etc/shadow}\nmodels: []\n")
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 10)
    f["binary.yaml"] = str(d / "binary.yaml")
    for name, data in {"cj-nan.json": '{"model_type": "qwen2", "num_attention_heads": NaN, "hidden_size": 896}',
                       "cj-big.json": json.dumps({**QWEN, "hidden_size": 1e308}),
                       "cj-deep.json": "[" * 50000 + "]" * 50000,
                       "cj-list.json": "[1, 2, 3]", "cj-zero.json": json.dumps({**QWEN, "num_attention_heads": 0})}.items():
        (d / name).write_text(data)
        f[name] = str(d / name)
    return f


def cases(f: dict[str, str]) -> list[list[str]]:
    sim = ["--simulate", "--sim-state", f["sim"]]
    out: list[list[str]] = []
    for c in ("/dev/zero", "/nonexistent/x.yaml", "/", f["nan.yaml"], f["nines.yaml"], f["inf.yaml"], f["bomb.yaml"],
              f["catalog.yaml"], f["binary.yaml"], "/etc/shadow"):
        out += [["validate", "-c", c], ["validate", "-c", c, "--json"], ["plan", "-c", c, *sim],
                ["kserve", "export", "-c", c, *sim], ["size", "a", "-c", c]]
    for flag, values in {"--tp": ["0", "-1", "99999999999999999999", "x"],
                         "--max-model-len": ["0", "-5", "nan", "1e308", "9" * 400],
                         "--max-num-seqs": ["0", "-1", "abc"], "--quantization": ["bogus", "", "../x"],
                         "--kv-cache-dtype": ["bogus", "fp4"]}.items():
        out += [["size", "--config-json", f["cj-zero.json"].replace("zero", "big"), flag, v] for v in values]
        out += [["size", "org/x", flag, v] for v in values]
    for cj in ("cj-nan.json", "cj-big.json", "cj-deep.json", "cj-list.json", "cj-zero.json"):
        out += [["size", "--config-json", f[cj]], ["size", "--config-json", f[cj], "--json"]]
    out += [["size", "--config-json", "/dev/zero"], ["size", "--config-json", "/proc/self/mem"], ["size"],
            ["size", "../../etc/passwd"]]
    out += [["stop", "--timeout", v, "--all", "-c", f["empty.yaml"], *sim] for v in ("nan", "inf", "-1", "1e308")]
    out += [["stop", "-c", f["empty.yaml"], *sim], ["stop", "--all", "x", "-c", f["empty.yaml"], *sim],
            ["stop", "--all", "-c", f["empty.yaml"], *sim]]
    out += [["apply", "--timeout", v, "--yes", "-c", f["empty.yaml"], *sim] for v in ("nan", "-inf", "x")]
    out += [["apply", "--yes", "-c", f[c], *sim] for c in ("nan.yaml", "nines.yaml", "inf.yaml", "empty.yaml")]
    out += [["kserve", "export", "-c", f["empty.yaml"], *sim, "--namespace", v] for v in ("../x", "", "A" * 70, "ok-ns")]
    out += [["kserve", "export", "-c", f["empty.yaml"], *sim, "--out", v] for v in ("/proc/nope/x", "/dev/null")]
    out += [["isolation", "masks", "--cus", c, "--xccs", x, "--share", s]
            for c, x, s in (("1000000000", "8", "a=0.5"), ("38", "0", "a=0.5"), ("-1", "1", "a=1"),
                            ("38", "4", "a=nan"), ("38", "4", "a=1e308"), ("38", "4", "garbage"),
                            ("38", "4", "a=-1"), ("38", "4", "=0.5"))]
    out += [["partition", "set", *sim, "--gpu", g, "--compute", "CPX"] for g in ("99", "-1", "abc", "9" * 50)]
    out += [["partition", "set", *sim, "--gpu", "0", "--compute", "BOGUS"], ["partition", "set", *sim, "--gpu", "0"],
            ["partition", "show", *sim], ["partition", "show", *sim, "--json"]]
    out += [["simulator", "init", "--state", f["sim"] + "-x", "--gpus", v] for v in ("1000000000", "0", "-3")]
    out += [["simulator", "init", "--state", f["sim"] + "-y", "--reload-time-s", v] for v in ("nan", "inf", "-1")]
    out += [["simulator", "fault", "--state", f["sim"], "bogus", "BUSY"],
            ["simulator", "fault", "--state", f["sim"], "list", "BUSY", "--count", "9" * 30]]
    out += [["status", "--api", a, "--timeout", t] for a, t in (("http://127.0.0.1:1", "0.5"), ("bogus://x", "1"),
                                                                ("http://127.0.0.1:1", "nan"), ("", "1"))]
    out += [["stage", "--budget-bytes", "-1", "-c", f["empty.yaml"]], ["stage", "nope", "-c", f["empty.yaml"]]]
    out += [["export", "--backend", "bogus"], ["schema"], ["schema", "--bogus"], ["bogus-command"], [],
            ["run", "--api-port", "70000", "-c", f["empty.yaml"], *sim], ["run", "-c", f["inf.yaml"], *sim],
            ["run", "-c", f["nan.yaml"], "--api-port", "-1", *sim]]
    return out


def run_case(argv: list[str]) -> dict:
    from gpu_sharing.cli.main import main
    err, outb = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    escaped = ""
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outb):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - this is what the fuzz looks for
            code, escaped = None, traceback.format_exc()
    text = err.getvalue()
    return {"argv": argv, "code": code, "traceback": bool(escaped) or "Traceback (most recent call last)" in text,
            "internal": "internal error" in text, "seconds": round(time.monotonic() - t0, 3),
            "stderr": (escaped or text)[-400:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-bytes", type=int, default=1 << 30)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (a.limit_bytes, a.limit_bytes))
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(argv) for argv in cases(scratch(Path(tmp)))]
    bad = [r for r in results if r["code"] not in (0, 1, 2) or r["traceback"]]
    counts = {str(c): sum(1 for r in results if r["code"] == c) for c in sorted({str(r["code"]) for r in results})}
    counts = {k: sum(1 for r in results if str(r["code"]) == k) for k in counts}
    summary = {"cases": len(results), "exit_codes": counts, "tracebacks": sum(r["traceback"] for r in results),
               "internal_errors": sum(r["internal"] for r in results), "contract_broken": len(bad),
               "limit_bytes": a.limit_bytes, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               "failures": bad + [r for r in results if r["internal"] and r not in bad]}
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"cases {summary['cases']}, exit codes {counts}, tracebacks {summary['tracebacks']}, internal errors "
              f"{summary['internal_errors']}, contract broken {summary['contract_broken']}, max RSS "
              f"{summary['max_rss_kib'] // 1024} MiB under a {a.limit_bytes >> 20} MiB address-space limit")
        for r in summary["failures"]:
            print(f"  {r['code']} {' '.join(r['argv'])[:150]}\n    {r['stderr'][-300:]!r}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
