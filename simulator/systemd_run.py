"""A fake ``systemd-run`` for the simulated node: runs the command the way a transient unit would see it.

Tests put ``simulator/bin`` first on PATH. What it copies (systemd-run(1), systemd.exec(5),
systemd.resource-control(5)):
- the unit does not inherit the caller's environment: only ``--setenv=K=V`` plus the manager's
  default PATH reach the command (systemd.exec(5) "Environment variables in spawned processes");
- ``--property=DevicePolicy=closed`` with ``--property=DeviceAllow=<node> rw`` confines the unit to
  those device nodes (cgroup-v2 BPF device controller). The simulated runtime reads that device cgroup
  from ``GPU_SHARING_SIM_DEVICE_CGROUP`` (simulator/vllm_engine.py): inside the unit ROCm enumerates
  only the allowed render nodes, and the KFD gives the processes contexts only on those GPUs;
- ``--pipe`` (implies ``--wait``): systemd-run stays in the foreground with the service's output. The
  fake execs the command instead, so the caller's pid and process group are the service's.
Other properties (AllowedCPUs=, MemoryMax=, User=, KillMode=, Type=) are accepted and not modelled.
"""

from __future__ import annotations

import os
import sys

from simulator.vllm_engine import DEVICE_CGROUP_ENV

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print("systemd-run (simulated): expected options, then -- and the command", file=sys.stderr)
        return 1
    split = args.index("--")
    options, command = args[:split], args[split + 1:]
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH)}  # the simulated venv must stay reachable
    devices: list[str] = []
    closed = False
    for opt in options:
        if opt.startswith("--setenv="):
            key, _, value = opt[len("--setenv="):].partition("=")
            env[key] = value
        elif opt == "--property=DevicePolicy=closed":
            closed = True
        elif opt.startswith("--property=DeviceAllow="):
            devices.append(opt[len("--property=DeviceAllow="):].split()[0])
    if closed:
        env[DEVICE_CGROUP_ENV] = ",".join(d.rsplit("/", 1)[-1] for d in devices if d.startswith("/dev/dri/"))
    if not command:
        print("systemd-run (simulated): no command after --", file=sys.stderr)
        return 1
    os.execvpe(command[0], command, env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
