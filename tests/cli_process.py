"""The CLI in a process of its own, without paying the interpreter's start and the CLI's imports every time.

Why: ``python -m gpu_sharing.cli.main`` spends 1.5-4 s on a loaded 2-core machine importing (pydantic models,
OR-Tools with numpy and pandas, aiohttp) before it does anything, and the fault matrix and the daemon tests
start it dozens of times. multiprocessing's forkserver imports the CLI once, in a single-threaded server
process started from a fresh interpreter, and forks every run from it. Each run is still a process of its own
(own pid, session, signal handlers, exit status; SIGKILL kills only it) running the same ``main(argv)`` the
``gpu-sharing`` console script runs, with the environment and the output files given here. What it does not
cover, the interpreter's start and ``-m`` entry, tests/cli/test_validate_cli.py checks with the real executable.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["gpu_sharing.cli.main"])


def _child(argv: list[str], env: dict[str, str], stdout_path: str, stderr_path: str, new_session: bool) -> None:
    if new_session:
        os.setsid()
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(out, fd)  # dup2 clears O_CLOEXEC on the copy: fake vLLMs the CLI starts inherit it, as with Popen
        os.close(out)
    os.environ.clear()
    os.environ.update(env)
    from gpu_sharing.cli.main import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)  # multiprocessing waits for non-daemon threads, then exits with this code


@dataclass
class CliProcess:
    """A started CLI run. ``poll()`` and ``wait()`` give its exit status as subprocess does (negative: killed by
    that signal); ``stdout`` and ``stderr`` what it wrote so far."""

    process: multiprocessing.process.BaseProcess
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise TimeoutError(f"gpu-sharing (pid {self.pid}) still running after {timeout}s")
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.poll() is None:
            self.send_signal(signal.SIGKILL)

    def stop(self, timeout: float) -> None:
        """Teardown: SIGTERM (the daemon's graceful stop), then SIGKILL after ``timeout`` seconds."""
        if self.poll() is not None:
            return
        self.send_signal(signal.SIGTERM)
        try:
            self.wait(timeout)
        except TimeoutError:
            self.kill()
            self.wait(10)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


_RUNS = itertools.count()


def start(argv: Sequence[str], out_dir: Path, *, env: Mapping[str, str] | None = None, log: Path | None = None,
          new_session: bool = True) -> CliProcess:
    """Start ``gpu-sharing argv``; its stdout and stderr go to files in ``out_dir``, or both to ``log``."""
    n = next(_RUNS)
    out = Path(log) if log else Path(out_dir) / f"cli-{os.getpid()}-{n}.out"
    err = Path(log) if log else Path(out_dir) / f"cli-{os.getpid()}-{n}.err"
    proc = _CTX.Process(target=_child, args=(list(argv), dict(os.environ if env is None else env), str(out), str(err),
                                             new_session))
    proc.start()
    return CliProcess(proc, out, err)


def run(argv: Sequence[str], out_dir: Path, *, timeout: float, env: Mapping[str, str] | None = None) -> CliProcess:
    """Run ``gpu-sharing argv`` to its end (killed and an error after ``timeout`` seconds)."""
    proc = start(argv, out_dir, env=env)
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.process.join(10)
    return proc
