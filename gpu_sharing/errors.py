"""Error taxonomy shared by every layer.

Why one small module: the CLI maps these to exit codes scripts rely on
(0 ok, 1 operation failed, 2 bad input), and the daemon maps them to
log lines and metrics. Each layer wraps lower errors with context
("setting compute partition CPX on GPU 3: BUSY: ...") instead of inventing
new types.
"""

from __future__ import annotations


class GpuSharingError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UserError(GpuSharingError):
    """Bad input: a config, a flag, a model path. Exit code 2, never a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config file is invalid. ``problems`` are (key_path, message) pairs."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: invalid configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''})"]
        lines += [f"  {key}: {msg}" if key else f"  {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class OperationError(GpuSharingError):
    """An operation failed (backend call, launch, apply). Exit code 1."""

    exit_code = 1
