"""Parse gpu-sharing's generated `vllm serve` argv with vLLM 0.33.0's own argument parser.

Runs in a SEPARATE virtual environment that has the real vLLM (it pulls a multi-GB torch, so it is
not a test dependency):

    python3 -m venv /tmp/vllm-venv
    /tmp/vllm-venv/bin/pip install torch==2.13.0            # the CPU build on disk here
    /tmp/vllm-venv/bin/pip install --no-deps vllm==0.33.0    # its certifi pin is newer than the registry
    /tmp/vllm-venv/bin/pip install <the modules its parser imports>   # repeat for each ImportError it prints
    /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec  # CUDA builds pulled in by those
                                                                           # modules break `import torch` here
    VLLM_TARGET_DEVICE=cpu /tmp/vllm-venv/bin/python tests/vllm_parser_check.py argvs.json

argvs.json is a JSON list of argv lists as gpu-sharing builds them (``vllm serve MODEL --flag ...``),
or of {"argv": [...], "expect": {"max_model_len": 8192, ...}} objects whose parsed values must equal
``expect``. Exit 0 when vLLM's parser accepts every one; 1 with the first rejection otherwise.
In 0.33 the parser is vllm.entrypoints.common.cli_args.make_arg_parser (cli_args.py:431). The pytest test
tests/runtime/test_vllm_real_parser.py runs it when $GPU_SHARING_VLLM_PYTHON points at that python.
"""

from __future__ import annotations

import json
import os
import sys


def main(path: str) -> int:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.entrypoints.common.cli_args import make_arg_parser  # noqa: PLC0415
    from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: PLC0415

    argvs = json.load(open(path))
    for item in argvs:
        argv, expect = (item["argv"], item.get("expect", {})) if isinstance(item, dict) else (item, {})
        args = list(argv)
        while args and args[0] != "serve":
            args.pop(0)
        args = args[1:]
        parser = make_arg_parser(FlexibleArgumentParser())  # adds the positional model_tag itself
        try:
            ns = parser.parse_args(args)
        except SystemExit:
            print(f"REJECTED: {' '.join(argv)}", file=sys.stderr)
            return 1
        assert ns.model_tag == args[0], (ns.model_tag, args[0])
        for key, want in expect.items():
            got = getattr(ns, key)
            if got != want:
                print(f"MISMATCH {key}: parsed {got!r}, expected {want!r}: {' '.join(argv)}", file=sys.stderr)
                return 1
    print(f"vLLM's parser accepted {len(argvs)} argv lists")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
