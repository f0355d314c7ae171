"""Facts about this node's kernel that ``gpu-sharing doctor --deep`` measured, for the layers that plan drains.

Why here (the lowest layer): the drain decision belongs to reconcile/planner, which may only import
downward; the doctor (above them) writes the file, they read it. Kept in the daemon's state dir as
``node-facts.json``. A missing or unreadable file means "not measured": callers must then assume the
safe behaviour, ``strict`` (any /dev/kfd holder on the node blocks every compute-mode change; see
gpu_sharing/doctor/kernel_behaviour.py for the kernel change and its sources).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

FILE_NAME = "node-facts.json"


class KfdModeSwitch(str, Enum):
    STRICT = "strict"
    CGROUP_EXCLUSION = "cgroup_exclusion"


class Drain(str, Enum):
    NODE = "node"
    """Stop every GPU process on the node before a compute-mode change."""
    GPU = "gpu"
    """Stop only the processes on the GPU being repartitioned (needs cgroup_exclusion and systemd-run)."""


@dataclass(frozen=True)
class NodeFacts:
    kfd_mode_switch: KfdModeSwitch = KfdModeSwitch.STRICT
    drain: Drain = Drain.NODE
    measured: bool = False
    """True when a --deep probe measured kfd_mode_switch; False when it was read from versions or assumed."""


def load_node_facts(state_dir: Path | str) -> NodeFacts:
    try:
        data = json.loads((Path(state_dir) / FILE_NAME).read_text())
        return NodeFacts(KfdModeSwitch(data["kfd_mode_switch"]), Drain(data["drain"]), bool(data.get("measured")))
    except (OSError, ValueError, KeyError, TypeError):
        return NodeFacts()


def save_node_facts(state_dir: Path | str, facts: NodeFacts) -> Path:
    path = Path(state_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(facts).items()}
    tmp.write_text(json.dumps({"version": 1, **data}, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path
