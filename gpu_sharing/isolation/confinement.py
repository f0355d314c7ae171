"""Host-side confinement of one vLLM instance: CPUs, user, devices, host memory.

Two launchers (config ``node.launcher``):

* ``direct``: the spawner starts ``vllm serve`` itself (own session); we give
  it a preexec hook that pins the child to the CPUs of its GPU's NUMA node
  (host<->GPU copies and the tokenizer stay NUMA-local) and optionally drops
  root to an unprivileged user.  No device confinement: HIP_VISIBLE_DEVICES
  only restricts the runtime, not the kernel.
* ``systemd-run``: a transient service per instance with
  ``DevicePolicy=closed`` + ``DeviceAllow=`` of the partition's render node
  and /dev/kfd (kernel-enforced via the cgroup-v2 BPF device controller),
  ``AllowedCPUs=``, ``MemoryMax=``, ``User=``.  The unit name is derived from
  the instance id with systemd's escaping so the daemon can find, stop and
  adopt it again after a restart.

The preexec hook runs between fork and exec: it only calls os functions on
values resolved beforehand (no pwd lookups or file reads in the child).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gpu_sharing.errors import UserError
from gpu_sharing.isolation.cu_masks import format_cu_list

SYS_NODE_DIR = "/sys/devices/system/node"
UNIT_PREFIX = "gpu-sharing-"


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse a kernel cpulist such as ``0-3,8-11`` (sysfs ``nodeN/cpulist``)."""
    cpus: set[int] = set()
    for item in text.strip().split(","):
        if not item:
            continue
        low, _, high = item.partition("-")
        try:
            a, b = int(low), int(high or low)
        except ValueError as e:
            raise UserError(f"bad cpulist item {item!r} in {text.strip()!r}") from e
        cpus.update(range(a, b + 1))
    return tuple(sorted(cpus))


def numa_node_cpus(numa_node: int, *, sys_node_dir: str = SYS_NODE_DIR) -> tuple[int, ...]:
    """CPUs of a NUMA node from sysfs; raises UserError when the node does not exist."""
    path = os.path.join(sys_node_dir, f"node{numa_node}", "cpulist")
    try:
        with open(path, encoding="ascii") as f:
            return parse_cpulist(f.read())
    except OSError as e:
        raise UserError(f"cannot read CPUs of NUMA node {numa_node} from {path}: {e.strerror}") from e


def choose_cpus(numa_cpus: Sequence[int], *, cpu_cores: int | None, allowed: Iterable[int] | None = None) -> tuple[int, ...]:
    """The first ``cpu_cores`` of the NUMA node's CPUs that this process may use."""
    usable = [c for c in numa_cpus if allowed is None or c in set(allowed)]
    if not usable:
        raise UserError(f"none of the NUMA node's CPUs ({_fmt(numa_cpus)}) are usable by the daemon")
    if cpu_cores is not None:
        if cpu_cores > len(usable):
            raise UserError(f"cpu_cores {cpu_cores} is more than the {len(usable)} usable CPUs of the GPU's NUMA node")
        usable = usable[:cpu_cores]
    return tuple(usable)


@dataclass(frozen=True)
class UserIds:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def lookup_user(name: str) -> UserIds:
    """Resolve a user name before fork; raises UserError naming the user."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError as e:
        raise UserError(f"limits.user: no such user {name!r} on this host") from e
    groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid))))
    return UserIds(name, entry.pw_uid, entry.pw_gid, groups)


def make_preexec(*, cpus: Sequence[int] | None, user: UserIds | None,
                 euid: Callable[[], int] = os.geteuid) -> Callable[[], None]:
    """The spawner's preexec hook: pin CPUs, then drop privileges (groups, gid, uid in that order)."""
    if user is not None and euid() != 0:
        raise UserError(f"limits.user {user.name!r} needs the daemon to run as root (it runs as uid {euid()})")
    cpu_set = frozenset(cpus) if cpus else None

    def preexec() -> None:
        if cpu_set:
            os.sched_setaffinity(0, cpu_set)
        if user is not None:
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)

    return preexec


def unit_name_for(instance_id: str) -> str:
    """``gpu-sharing-<escaped id>.service``, escaped like ``systemd-escape``.

    systemd unit-name escaping: '/' becomes '-', and every byte outside
    ``[A-Za-z0-9:_.]`` (and a leading '.') becomes ``\\xNN``.
    """
    if not instance_id:
        raise UserError("instance id is empty; cannot derive a systemd unit name")
    out: list[str] = []
    for n, byte in enumerate(instance_id.encode()):
        ch = chr(byte)
        if ch == "/":
            out.append("-")
        elif (ch.isascii() and ch.isalnum()) or ch in ":_" or (ch == "." and n > 0):
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    name = f"{UNIT_PREFIX}{''.join(out)}.service"
    if len(name) > 255:
        raise UserError(f"unit name for instance {instance_id!r} is longer than systemd's 255 characters")
    return name


def systemd_run_argv(*, unit_name: str, argv: Sequence[str], env: Mapping[str, str], device_nodes: Sequence[str],
                     cpus: Sequence[int] | None, memory_max_bytes: int | None, user: str | None,
                     working_dir: str | None = None, attach: bool = True) -> list[str]:
    """argv for ``systemd-run`` starting ``argv`` as a confined transient service.

    ``attach`` adds ``--pipe`` (implies ``--wait``): systemd-run stays alive as
    long as the service and passes its stdout/stderr through, so the spawner
    supervises the systemd-run pid and logs exactly as for a direct launch.
    The unit does not inherit the daemon's environment: pass everything the
    instance needs in ``env``.  Stop it with :func:`systemctl_stop_argv`.

    ``device_nodes`` are paths (``/dev/dri/renderD128``); /dev/kfd is always
    allowed (ROCm needs it).  Option names per ``systemd-run --help`` and
    systemd.resource-control(5): ``DeviceAllow=<path> rw``, ``AllowedCPUs=``
    (a cpu list), ``MemoryMax=<bytes>``.
    """
    if not argv:
        raise UserError("systemd-run: empty command")
    if not unit_name.endswith(".service"):
        raise UserError(f"systemd-run: unit name {unit_name!r} must end in .service")
    cmd = ["systemd-run", f"--unit={unit_name}", "--collect", "--quiet", *(["--pipe"] if attach else []),
           "--property=Type=exec", "--property=KillMode=control-group",
           "--property=DevicePolicy=closed"]
    for node in [*device_nodes, "/dev/kfd"]:
        if not node.startswith("/dev/"):
            raise UserError(f"systemd-run: device node {node!r} must be a /dev path")
        cmd.append(f"--property=DeviceAllow={node} rw")
    if cpus:
        cmd.append(f"--property=AllowedCPUs={_fmt(cpus)}")
    if memory_max_bytes is not None:
        if memory_max_bytes < 1:
            raise UserError(f"systemd-run: MemoryMax must be positive, got {memory_max_bytes}")
        cmd.append(f"--property=MemoryMax={memory_max_bytes}")
    if user is not None:
        cmd.append(f"--property=User={user}")
    if working_dir is not None:
        cmd.append(f"--working-directory={working_dir}")
    for key in sorted(env):
        if not key or "=" in key:
            raise UserError(f"systemd-run: bad environment variable name {key!r}")
        cmd.append(f"--setenv={key}={env[key]}")
    return [*cmd, "--", *argv]


def systemctl_stop_argv(unit_name: str) -> list[str]:
    """Stop a transient instance unit (also used after adoption, when no systemd-run pid is ours)."""
    return ["systemctl", "stop", "--no-block", unit_name]


def _fmt(cpus: Iterable[int]) -> str:
    """CPU ids as a kernel/systemd cpu list: 0-3,8 (the same range syntax as CU lists)."""
    return format_cu_list(frozenset(cpus))


format_cpulist = _fmt
