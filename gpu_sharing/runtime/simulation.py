"""Under --simulate, instances run the fake vLLM server instead of ``vllm serve``.

Only the module name is referenced (runtime must not import the simulator): the
fake takes the same argv as ``vllm serve`` and finds the simulated node through
$GPU_SHARING_SIM_STATE.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gpu_sharing.config.schema import VllmSettings

FAKE_VLLM_MODULE = "simulator.vllm_server"


def simulated_vllm_settings(vllm: VllmSettings, *, sim_state_dir: Path, startup_time_s: float,
                            disk_bandwidth_bytes_per_s: float = 0.0, graph_capture_s: float = 0.0) -> VllmSettings:
    """The fake's start-up cost: a fixed engine start, the weights at the disk bandwidth, graph capture."""
    env = {**vllm.env, "GPU_SHARING_SIM_STATE": str(sim_state_dir), "GPU_SHARING_FAKE_STARTUP_S": str(startup_time_s),
           "GPU_SHARING_FAKE_DISK_BYTES_PER_S": str(disk_bandwidth_bytes_per_s),
           "GPU_SHARING_FAKE_GRAPH_CAPTURE_S": str(graph_capture_s)}
    return vllm.model_copy(update={"command": [sys.executable, "-m", FAKE_VLLM_MODULE, "serve"], "env": env})
