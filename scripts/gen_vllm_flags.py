"""Generate gpu_sharing/data/vllm_serve_flags.json from vLLM 0.33.0's own `vllm serve` parser.

Why generated: the argv builder, the config schema and the fake vLLM must agree with the real
parser on each flag's type, choices, nargs/action and negation form; copying them by hand drifts.
Runs in a SEPARATE venv with the real vLLM (recipe in tests/vllm_parser_check.py):

    VLLM_TARGET_DEVICE=cpu /tmp/vllm-venv/bin/python scripts/gen_vllm_flags.py gpu_sharing/data/vllm_serve_flags.json

What it reads (vLLM 0.33.0):
- vllm/entrypoints/common/cli_args.py:431 make_arg_parser (every action of the real parser);
- vllm/engine/arg_utils.py:2940-3040 EngineArgs.get_batch_defaults, called with the platform's
  device memory patched to each tier (the defaults of max_num_batched_tokens/max_num_seqs
  depend on the device's total memory);
- vllm/platforms/rocm.py:668 RocmPlatform.supported_quantization;
- vllm/model_executor/layers/quantization QUANTIZATION_METHODS; vllm/config/cache.py CacheDType.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing

GIB = 1024**3
DEVICE_TIERS_GIB = (24, 64, 70, 96, 160, 192, 256)
"""Device sizes probed: partitions of MI300X/MI325X/MI355X and whole GPUs; the tiers change at 70 and 160."""


def _type_name(fn) -> str | None:
    if fn is None:
        return None
    name = getattr(fn, "__name__", repr(fn))
    if name == "_optional_type":  # vllm/engine/arg_utils.py:173 optional_type(return_type)
        inner = fn.__closure__[0].cell_contents if fn.__closure__ else None
        return f"optional[{_type_name(inner)}]"
    if name == "loads":
        return "json"
    return name


def _action_kind(action: argparse.Action) -> str:
    cls = type(action).__name__
    return {"_StoreAction": "store", "_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false",
            "_AppendAction": "append", "_StoreConstAction": "store_const", "_HelpAction": "help",
            "_VersionAction": "version", "BooleanOptionalAction": "boolean_optional",
            "EnableDisableAction": "enable_disable"}.get(cls, cls)


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def flags(parser: argparse.ArgumentParser) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for a in parser._actions:
        longs = [s for s in a.option_strings if s.startswith("--")]
        if not longs:
            continue
        kind = _action_kind(a)
        primary = longs[0]
        negation = longs[1] if kind in ("enable_disable", "boolean_optional") and len(longs) > 1 else None
        entry = {"dest": a.dest, "action": kind, "type": _type_name(a.type),
                 "choices": [_jsonable(c) for c in a.choices] if a.choices is not None else None,
                 "nargs": a.nargs if a.nargs is None or isinstance(a.nargs, (int, str)) else str(a.nargs),
                 "negation": negation, "aliases": [s for s in a.option_strings if s not in (primary, negation)],
                 "default": _jsonable(a.default) if a.default is not argparse.SUPPRESS else None}
        out[primary] = entry
        if negation:
            out[negation] = {"negation_of": primary}
        for alias in entry["aliases"]:
            if alias.startswith("--"):
                out[alias] = {"alias_of": primary}
    return dict(sorted(out.items()))


def batch_defaults() -> list[dict]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.usage.usage_lib import UsageContext

    rows = []
    for gib in DEVICE_TIERS_GIB:
        for name in ("amd instinct mi300x", "nvidia a100-sxm4-80gb"):
            current_platform.get_device_total_memory = lambda device_id=0, g=gib: g * GIB  # noqa: E731
            current_platform.get_device_name = lambda device_id=0, n=name: n  # noqa: E731
            current_platform.is_device_capability = lambda cap, device_id=0: False  # noqa: E731
            current_platform.is_cpu = lambda: False  # noqa: E731
            current_platform.is_tpu = lambda: False  # noqa: E731
            tokens, seqs = EngineArgs.get_batch_defaults(world_size=1)
            rows.append({"device_total_gib": gib, "device_name": name,
                         "max_num_batched_tokens": tokens[UsageContext.OPENAI_API_SERVER],
                         "max_num_seqs": seqs[UsageContext.OPENAI_API_SERVER]})
    return rows


def rocm_supported_quantization() -> list[str]:
    """RocmPlatform.supported_quantization, read from the source: importing vllm.platforms.rocm needs a GPU
    (it queries the gcn arch at import)."""
    import ast

    import vllm

    src = os.path.join(os.path.dirname(vllm.__file__), "platforms", "rocm.py")
    tree = ast.parse(open(src).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "RocmPlatform":
            for stmt in node.body:
                target = getattr(stmt, "target", None) or (getattr(stmt, "targets", [None])[0])
                if getattr(target, "id", None) == "supported_quantization":
                    return list(ast.literal_eval(stmt.value))
    raise SystemExit("RocmPlatform.supported_quantization not found in " + src)


def main(path: str) -> int:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    import vllm
    from vllm.config.cache import CacheDType
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    data = {
        "vllm_version": vllm.__version__,
        "generated_by": "scripts/gen_vllm_flags.py from vllm.entrypoints.common.cli_args.make_arg_parser",
        "flags": flags(parser),
        "batch_defaults_openai_server": batch_defaults(),
        "batch_defaults_source": "vllm/engine/arg_utils.py:2940 EngineArgs.get_batch_defaults (OPENAI_API_SERVER)",
        "quantization_methods": sorted(QUANTIZATION_METHODS),
        "rocm_supported_quantization": rocm_supported_quantization(),
        "rocm_supported_quantization_source": "vllm/platforms/rocm.py:668 RocmPlatform.supported_quantization",
        "kv_cache_dtypes": list(typing.get_args(CacheDType)),
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"{len(data['flags'])} flag names from vLLM {vllm.__version__} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
