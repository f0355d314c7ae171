"""Test doubles for the supervisor: a fake clock, fake processes, a fake spawner, a switchable health check."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from gpu_sharing.runtime.spawner import SpawnRequest
from gpu_sharing.runtime.supervisor import InstanceLaunch


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeProcess:
    """Behaves like a process group: SIGTERM ends it unless it ignores TERM; SIGKILL always does."""

    def __init__(self, pid: int, ignore_term: bool = False):
        self.pid = pid
        self.pgid = pid
        self.exit_code: int | None = None
        self.ignore_term = ignore_term
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.exit_code

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and not self.ignore_term):
            if self.exit_code is None:
                self.exit_code = -sig

    def group_empty(self) -> bool:
        return self.exit_code is not None

    def crash(self, code: int = 1) -> None:
        self.exit_code = code


@dataclass
class FakeSpawner:
    next_pid: int = 5000
    spawned: list[tuple[SpawnRequest, FakeProcess]] = field(default_factory=list)
    fail_with: OSError | None = None
    ignore_term: bool = False

    def spawn(self, request: SpawnRequest) -> FakeProcess:
        if self.fail_with is not None:
            raise self.fail_with
        self.next_pid += 1
        proc = FakeProcess(self.next_pid, ignore_term=self.ignore_term)
        self.spawned.append((request, proc))
        return proc

    def procs(self, instance_id: str) -> list[FakeProcess]:
        return [p for r, p in self.spawned if r.instance_id == instance_id]


class FakeHealth:
    """healthy URLs answer 200; everything else is refused."""

    def __init__(self) -> None:
        self.healthy: set[str] = set()
        self.calls = 0

    def __call__(self, url: str) -> bool:
        self.calls += 1
        return url in self.healthy


def launch(instance_id: str, partitions: tuple[str, ...] = ("0.0",), port: int = 8100) -> InstanceLaunch:
    return InstanceLaunch(
        instance_id=instance_id, model=instance_id.rsplit("-", 1)[0], replica=0, fingerprint="fp",
        served_names=(instance_id,), partitions=partitions, hip_indices=(0,), memory_bytes_per_rank=1 << 30,
        tp=len(partitions), argv=("vllm", "serve", "m"), env=(("HIP_VISIBLE_DEVICES", "0"),), port=port,
        url=f"http://127.0.0.1:{port}")
