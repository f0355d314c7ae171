"""The ``gpu-sharing`` command line.

Each subcommand lives in ``gpu_sharing/cli/commands/<name>.py`` and exposes
``register(subparsers)``; it sets ``func(args) -> int`` on its parser. ``COMMANDS``
lists them explicitly (a new verb is one import and one entry), so every import is static. Exit codes
scripts can rely on: 0 ok, 1 operation failed, 2 bad input or config (and for
``plan --detailed-exitcode``, 2 = changes pending). User errors print one clear
message, never a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Sequence

from gpu_sharing import __version__
from gpu_sharing.cli.commands import (apply, doctor, export, hold, isolation, kserve, logs, partition, plan, release,
                                      restart, run, schema, simulator, size, stage, status, stop, validate)
from gpu_sharing.errors import GpuSharingError

COMMANDS = (apply, doctor, export, hold, isolation, kserve, logs, partition, plan, release, restart, run, schema,
            simulator, size, stage, status, stop, validate)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its message short
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpu-sharing", description="Share AMD Instinct GPUs between many vLLM instances.")
    parser.add_argument("--version", action="version", version=f"gpu-sharing {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """Built once per process and reused: building it costs 30-90 ms (argparse looks up a translation for every
    argument of every verb), which in-process callers (the fuzzers: hundreds of calls) paid on every call.
    Reuse is safe: parsing never changes the parser, list defaults are copied, ``func`` finds its module's
    globals at call time."""
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GpuSharingError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except MemoryError:
        print("error: out of memory (an input too large for this machine?)", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # defence in depth: the exit-code contract holds even for a bug (0/1/2, no traceback)
        if args.debug:
            raise
        print(f"error: internal error ({type(e).__name__}: {str(e)[:300]}); rerun with --debug for the traceback",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
