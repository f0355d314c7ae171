"""SimulatedProbe: the doctor's facts read from the simulated node, each naming its simulator rule.

The defaults copy a real ROCm 7.2 node (simulator/node_facts.py, with sources); knobs set with
``gpu-sharing simulator set-fault --knob NAME=VALUE`` make each fact differ the way a real node can
(wheel newer than libamd_smi.so, caps the catalog does not list, a read-only state dir, ...).
The only module of the doctor that imports the simulator, like backends/simulated.py for the backends.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from gpu_sharing.config.schema import BackendKind
from gpu_sharing.doctor.checks import Fact
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode, PartitionBackend
from gpu_sharing.doctor.probe import INSTALL_AMDSMI, INSTALL_ROCM, run_until_healthy
from gpu_sharing.doctor.vllm_flags import serve_flags
from simulator.node import SimNode
from simulator.node_facts import import_amdsmi_outcome, knob, knob_source, masked_kernel_run

SIMULATED_BACKEND_NOTE = ("simulated node: modes and partitions from node.json with the catalog's geometry "
                          "(gpu_sharing/hardware/catalog.py, docs/hardware-facts.md); device.* knobs override what "
                          "the fake amdsmi reports (simulator/node_facts.py)")
_CAP_SYS_ADMIN = 1 << 21
_CAP_SYS_MODULE = 1 << 16


class SimulatedProbe:
    name = "simulated"

    def __init__(self, node: SimNode):
        self.node = node

    def _fact(self, name: str, value: Any = None) -> Fact:
        st = self.node.state()
        return Fact(knob(st, name) if value is None else value, knob_source(st, name))

    def kernel_release(self) -> Fact:
        return self._fact("version.kernel")

    def amdgpu_driver(self) -> Fact:
        st = self.node.state()
        loaded = bool(knob(st, "amdgpu_loaded"))
        return Fact({"loaded": loaded, "version": knob(st, "version.amdgpu") if loaded else None},
                    knob_source(st, "version.amdgpu") + "; " + knob_source(st, "amdgpu_loaded"))

    def rocm_version(self) -> Fact:
        st = self.node.state()
        rocm = knob(st, "version.rocm")
        if rocm is None:
            return Fact.missing(knob_source(st, "version.rocm"), "no ROCm installation (/opt/rocm/.info/version absent)",
                                INSTALL_ROCM)
        return Fact(rocm, knob_source(st, "version.rocm"))

    def amdsmi_library(self) -> Fact:
        st = self.node.state()
        outcome, detail = import_amdsmi_outcome(st)
        ok = outcome == "ok"
        return Fact({"outcome": outcome, "detail": detail, "wheel": knob(st, "version.amdsmi_wheel"),
                     "lib": knob(st, "version.amdsmi_lib") if ok else None,
                     "rocm": knob(st, "version.rocm") if ok else None},
                    "simulator rule node_facts.import_amdsmi_outcome (amdsmi 7.0.2 amdsmi_wrapper.py: symbols "
                    "resolved at import); " + knob_source(st, "version.amdsmi_wheel"))

    def amd_smi_cli(self) -> Fact:
        st = self.node.state()
        if not knob(st, "amd_smi_on_path") or knob(st, "version.rocm") is None:
            return Fact.missing(knob_source(st, "amd_smi_on_path"), "amd-smi is not on PATH", INSTALL_AMDSMI)
        version = {"tool": "AMDSMI Tool", "version": knob(st, "version.amd_smi_tool"),
                   "amdsmi_library_version": knob(st, "version.amdsmi_lib"), "rocm_version": knob(st, "version.rocm"),
                   "amdgpu_version": knob(st, "version.amdgpu") or knob(st, "version.kernel")}
        return Fact({"path": "simulator/bin/amd-smi", "version": version,
                     "framing": knob(st, "amd_smi_json_framing")},
                    "simulator/amd_smi_cli.py cmd_version (CMD71 `version`); " + knob_source(st, "amd_smi_json_framing"))

    def vllm(self, command: Sequence[str]) -> Fact:
        st = self.node.state()
        version = knob(st, "version.vllm")
        rejects = set(knob(st, "vllm_rejects_flags") or [])
        flags = frozenset(f for f in serve_flags() if f not in rejects)
        return Fact({"version": version, "flags": flags},
                    knob_source(st, "version.vllm") + "; flags: the 0.33.0 metadata minus "
                    + knob_source(st, "vllm_rejects_flags"))

    def python_version(self) -> Fact:
        return self._fact("version.python")

    def privileges(self) -> Fact:
        root = bool(self.node.state()["root"])
        return Fact({"euid": 0 if root else 1000, "caps": (_CAP_SYS_ADMIN | _CAP_SYS_MODULE) if root else 0},
                    "simulator node.json root (`gpu-sharing simulator init --non-root` makes it a plain user)")

    def device_access(self, user: str | None) -> Fact:
        st = self.node.state()
        paths = ["/dev/kfd", *[f"/dev/dri/{p['render_node']}" for p in self.node.partitions(st)]]
        denied = [] if knob(st, "devices_accessible") else paths
        return Fact({"paths": paths, "denied": denied}, knob_source(st, "devices_accessible"))

    def writable(self, path: str) -> Fact:
        st = self.node.state()
        resolved = Path(path).resolve()
        for ro in knob(st, "read_only_paths") or []:
            r = Path(ro).resolve()
            if resolved == r or r in resolved.parents:
                return Fact({"writable": False, "checked": str(r)}, knob_source(st, "read_only_paths"))
        p = resolved
        while not p.exists() and p != p.parent:
            p = p.parent
        return Fact({"writable": os.access(p, os.W_OK), "checked": str(p)},
                    f"os.access({p}, W_OK); " + knob_source(st, "read_only_paths"))

    def systemd_sandbox(self) -> Fact:
        return Fact(False, "simulator: the simulated daemon runs in the user's session, not under the systemd unit")

    @contextmanager
    def hold_kfd(self, render_node: str, gpu: int) -> Iterator[int]:
        """A synthetic process holding /dev/kfd with a device cgroup of ``gpu`` only (SimNode.open_kfd)."""
        pid = 4_194_304 + os.getpid() % 100_000  # above PID_MAX_LIMIT (2^22): never a real process's pid
        self.node.open_kfd(pid, "gpu-sharing-doctor-kfd-probe", [gpu])
        try:
            yield pid
        finally:
            self.node.release_process(pid)

    def run_vllm(self, argv: Sequence[str], env: dict[str, str], url: str, timeout_s: float) -> Fact:
        """The fake vLLM (simulator/vllm_server.py) started like the real one; its log is what it prints."""
        fact = run_until_healthy(argv, env, url, timeout_s)
        return Fact(fact.value, "simulator/vllm_server.py " + fact.source, fact.error, fact.fix)

    def masked_kernel(self, partition: Any, env: dict[str, str]) -> Fact:
        st = self.node.state()
        result = masked_kernel_run(st, self.node.partitions(st), env)
        return Fact(result, "simulator rule node_facts.masked_kernel_run (ROCm docs: HSA_CU_MASK indices are post "
                            "ROCR_VISIBLE_DEVICES); " + knob_source(st, "cu_mask_wrong_device"))



def simulated_backend(node: SimNode, kind: BackendKind) -> PartitionBackend:
    """The backend the factory would pick on this simulated node, through the real backend code.

    amdsmi (or auto): AmdSmiBackend over the fake amdsmi module, unless ``import amdsmi`` would fail
    (node_facts.import_amdsmi_outcome); then, like the factory's auto, the amd-smi CLI backend over the
    fake amd-smi executable; neither: UNAVAILABLE with the reason.
    """
    from gpu_sharing.backends.amd_smi_cli_backend import AmdSmiCliBackend
    from gpu_sharing.backends.amdsmi_backend import AmdSmiBackend
    from gpu_sharing.backends.simulated import SimulatedBackend
    import simulator.fake_amdsmi as fake

    kind = BackendKind(kind)
    if kind == BackendKind.SIMULATED:
        return SimulatedBackend(node)
    st = node.state()
    outcome, detail = import_amdsmi_outcome(st)
    if kind in (BackendKind.AMDSMI, BackendKind.AUTO) and outcome == "ok":
        fake.configure(node.state_dir)
        return AmdSmiBackend(amdsmi_module=fake)
    reason = f"amdsmi library unavailable ({detail})"
    if kind in (BackendKind.AMD_SMI_CLI, BackendKind.AUTO) and knob(st, "amd_smi_on_path") and knob(st, "version.rocm"):
        env = {**os.environ, "GPU_SHARING_SIM_STATE": str(node.state_dir)}
        return AmdSmiCliBackend([sys.executable, "-m", "simulator.amd_smi_cli"], env=env)
    raise BackendError("choosing a backend", BackendErrorCode.UNAVAILABLE,
                       f"{reason}; no 'amd-smi' on PATH. {INSTALL_AMDSMI}")
