"""vLLM V1's process layout and ROCm's device numbering for the fake ``vllm serve``.

Why a separate module: the API-server side of the fake (``vllm_server.py``) only calls
``resolve_devices`` and ``attach``; everything about which process holds the GPU lives here.

What it copies:

* **V1 process layout** (vLLM docs, design/arch_overview.md "V1 process architecture"; shared
  reference real-stack-findings.md "vLLM 0.33"): ``vllm serve`` is the API-server process; it starts
  an EngineCore process, and for tensor parallelism > 1 one GPU worker process per rank. GPU memory
  (and the KFD context) belongs to the EngineCore (tp = 1) or to the workers (tp > 1), never to the
  API-server pid. vLLM names them with ``setproctitle``: ``VLLM::EngineCore``, ``VLLM::Worker_TP<r>``
  (vllm/utils/system_utils.py ``set_process_title``). The children share the API server's process
  group (they are plain multiprocessing children), exit when their parent dies (vLLM's engine and
  workers watch the parent: ``v1/engine/core.py`` shutdown on parent death) and on SIGTERM.
* **Device numbering** (simulator/cu_mask_check.py rules D1-D4): the node devices a process computes on
  follow ROCR_VISIBLE_DEVICES, then HIP_VISIBLE_DEVICES; HSA_CU_MASK indexes ROCr's devices. A mask that
  lands on another device than the instance's own is applied there (like ROCm) and logged.
* **Device cgroup**: ``GPU_SHARING_SIM_DEVICE_CGROUP`` (render node names, comma separated) stands for a
  device cgroup allowing only those nodes (what ``systemd-run -p DevicePolicy=closed -p DeviceAllow=``
  gives); unset means every device. The children record it on the node, which is what the kernel's KFD
  looks at before a compute-partition switch (simulator/node_modes.py, ``kfd_mode_switch``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from simulator.cu_mask_check import effective_cu_masks, format_cu_list, process_devices

DEVICE_CGROUP_ENV = "GPU_SHARING_SIM_DEVICE_CGROUP"
PARENT_POLL_S = 0.2
MAX_NODE_DEVICES = 64  # without a simulated node: assume a full 8 x CPX node


def accessible_devices(env: dict[str, str], node: Any | None) -> list[int]:
    """Node device indices whose render node this process may open (rule D1), in node order."""
    if node is None:
        return list(range(MAX_NODE_DEVICES))
    parts = node.partitions()
    allowed = env.get(DEVICE_CGROUP_ENV)
    if allowed is None:
        return [p["hip_index"] for p in parts]
    names = {n.strip().rsplit("/", 1)[-1] for n in allowed.split(",") if n.strip()}
    return [p["hip_index"] for p in parts if p["render_node"] in names]


def _open_node(env: dict[str, str]) -> Any | None:
    from simulator.node import SimNode, default_state_dir

    state = env.get("GPU_SHARING_SIM_STATE")
    d = state or default_state_dir()
    try:
        return SimNode.open(d)
    except FileNotFoundError:
        return None


def resolve_devices(env: dict[str, str], log) -> tuple[list[int], str | None]:
    """(node device indices per rank, HSA_CU_MASK or None); raises ValueError like ROCm would refuse.

    ``log(level, where, msg)`` reports a mask that restricts devices this process does not use.
    """
    node = _open_node(env)
    accessible = accessible_devices(env, node)
    if not accessible:
        raise ValueError("No HIP GPUs are available (the device cgroup allows no GPU render node)")
    devices = process_devices(env, accessible)
    if not devices:
        raise ValueError("No HIP GPUs are available")
    masks = effective_cu_masks(env, accessible)  # CuMaskError (a ValueError) when malformed
    mask = env.get("HSA_CU_MASK")
    if masks:
        stray = sorted(set(masks) - set(devices))
        unmasked = [d for d in devices if d not in masks]
        if stray or unmasked:
            where = ", ".join(f"node device {d} -> CUs {format_cu_list(masks[d])}" for d in sorted(masks))
            log("WARNING", "hsa_cu_mask", f"HSA_CU_MASK={mask!r} restricts {where}; this process computes on node "
                f"device(s) {devices}, of which {unmasked or 'none'} run on all CUs")
    return devices, mask


class EngineProcesses:
    """Stands in for the SimNode inside FakeVllm: memory "claimed by the API server" is held by the
    EngineCore child (tp = 1) or by one worker child per rank (tp > 1), like vLLM V1."""

    def __init__(self, node: Any, env: dict[str, str], tp: int):
        self._node = node
        self._env = env
        self._tp = tp
        self._children: dict[int, subprocess.Popen] = {}  # node device -> child holding its memory
        self._engine: subprocess.Popen | None = None
        allowed = env.get(DEVICE_CGROUP_ENV)
        self._cgroup = accessible_devices(env, node) if allowed is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def _spawn(self, title: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "simulator.vllm_engine", title, str(os.getpid())],
                                stdin=subprocess.DEVNULL, close_fds=True)

    def _holder(self, device: int) -> tuple[subprocess.Popen, str]:
        if self._engine is None:
            self._engine = self._spawn("VLLM::EngineCore")
        if self._tp == 1:
            self._children[device] = self._engine
            return self._engine, "VLLM::EngineCore"
        title = f"VLLM::Worker_TP{len(self._children)}"
        child = self._children.get(device) or self._spawn(title)
        self._children[device] = child
        return child, title

    def claim_memory(self, hip_index: int, pid: int, name: str, vram_bytes: int, **kw: Any) -> None:
        child, title = self._holder(hip_index)
        self._node.claim_memory(hip_index, child.pid, title, vram_bytes, device_cgroup=self._cgroup, **kw)

    def set_process_memory(self, pid: int, hip_index: int, vram_bytes: int) -> None:
        child = self._children.get(hip_index)
        self._node.set_process_memory(child.pid if child else pid, hip_index, vram_bytes)

    def release_process(self, pid: int) -> None:
        procs = {id(c): c for c in [*self._children.values(), *([self._engine] if self._engine else [])]}
        for child in procs.values():
            try:
                self._node.release_process(child.pid)
            finally:
                if child.poll() is None:
                    child.terminate()
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
        self._children.clear()
        self._engine = None
        self._node.release_process(pid)


    def kill_all(self) -> None:
        """An engine crash: the children die at once (SIGKILL) and are reaped; their VRAM goes with them."""
        for child in {id(c): c for c in [*self._children.values(), *([self._engine] if self._engine else [])]}.values():
            if child.poll() is None:
                child.kill()
            child.wait()


def attach(fake: Any, env: dict[str, str]) -> None:
    """Route the fake server's memory through V1-style child processes.

    An injected request-count crash is an EngineCore crash ("EngineCore encountered a fatal error"): the
    engine processes die first, then the API server exits 1.
    """
    if fake.node is None:
        return
    engine = EngineProcesses(fake.node, env, fake.args.tensor_parallel_size)
    fake.node = engine
    count_request = fake.count_request

    def counted() -> None:
        if fake.crash_after and fake.requests + 1 >= fake.crash_after:
            engine.kill_all()
        count_request()

    fake.count_request = counted


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills us when the API server dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the getppid() poll below still ends us


def child_main(title: str, parent_pid: int) -> int:
    """An EngineCore / worker child: holds its memory (recorded on the node) until SIGTERM or parent death."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API server handles Ctrl-C and stops us
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    return 0  # parent died (crash): exit, the node's pid reaper frees our VRAM like the driver would


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1], int(sys.argv[2])))
