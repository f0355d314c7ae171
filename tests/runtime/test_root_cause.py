"""LAST ERROR is vLLM's root cause, not its wrapper ("Engine core initialization failed. See root cause above").

The log below copies the shape of a real vLLM 0.33 start failure (TP=2: worker cause, EngineCore
wrapper, API-process wrapper; see gpu_sharing/runtime/root_cause.py for the upstream files).
"""

from __future__ import annotations

from gpu_sharing.runtime.logs import failure_reason
from gpu_sharing.runtime.root_cause import root_cause

FREE = ("Free memory on device cuda:0 (10.5/63.98 GiB) on startup is less than desired GPU memory utilization "
        "(0.92, 58.86 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")
VLLM_TP2_LOG = f"""(APIServer pid=11) INFO 12-01 01:00:00 [api_server.py:1] vLLM API server version 0.33.0
(EngineCore pid=42) ERROR 12-01 01:00:09 [multiproc_executor.py:700] WorkerProc failed to start.
(EngineCore pid=42) Traceback (most recent call last):
(EngineCore pid=42)   File "/usr/lib/python3/site-packages/vllm/v1/worker/gpu_worker.py", line 230, in init_device
(EngineCore pid=42)     self.requested_memory = request_memory(init_snapshot, self.cache_config)
(EngineCore pid=42) ValueError: {FREE}
(EngineCore pid=42) ERROR 12-01 01:00:09 [core.py:900] EngineCore failed to start.
(EngineCore pid=42) Traceback (most recent call last):
(EngineCore pid=42)   File "/usr/lib/python3/site-packages/vllm/v1/engine/core.py", line 890, in run_engine_core
(EngineCore pid=42) Exception: WorkerProc initialization failed due to an exception in a background process. See stack trace for root cause.
Traceback (most recent call last):
  File "/usr/bin/vllm", line 8, in <module>
    sys.exit(main())
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{'EngineCore': 1}}
"""


def test_root_cause_skips_vllm_wrappers(tmp_path):
    assert root_cause(VLLM_TP2_LOG.splitlines()) == f"ValueError: {FREE}"
    log = tmp_path / "m-0.log"
    log.write_text(VLLM_TP2_LOG)
    assert failure_reason(log) == f"ValueError: {FREE}"


def test_dotted_types_and_port_in_use():
    assert root_cause(["torch.OutOfMemoryError: HIP out of memory. Tried to allocate 2.00 GiB"]) == \
        "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 2.00 GiB"
    assert root_cause(["INFO: starting", "OSError: [Errno 98] Address already in use"]) == \
        "OSError: [Errno 98] Address already in use"


def test_no_exception_falls_back_to_error_lines(tmp_path):
    assert root_cause(["INFO: all good", "Note: nothing failed"]) is None
    log = tmp_path / "m-0.log"
    log.write_text("INFO loading\nERROR something failed badly\n")
    assert failure_reason(log) == "ERROR something failed badly"
