"""Where the doctor's facts come from on a real node: uname, sysfs, /opt/rocm, the amdsmi wheel, the
amd-smi CLI, vLLM, /proc/self/status, the file system.

Why a probe object: every check is a pure comparison of a Fact with an expectation, and the same
checks run on a real node (``RealProbe``) and on the simulator (``doctor.simulated.SimulatedProbe``),
so ``doctor --simulate`` in CI exercises exactly the code an operator runs. Reads that may print,
crash or hang (``import amdsmi`` prints before raising; a segfaulting libamd_smi.so) run in a child
process with a timeout, never in the doctor itself.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from gpu_sharing.doctor.checks import Fact

INSTALL_ROCM = ("install ROCm >= 6.4 with the amdgpu driver (https://rocm.docs.amd.com, quick-start: "
                "`apt install ./amdgpu-install_*.deb && amdgpu-install --usecase=dkms,rocm`), then reboot")
INSTALL_AMDSMI = ("install ROCm's amd-smi-lib (`apt install amd-smi-lib`, provides /opt/rocm/lib/libamd_smi.so) "
                  "or set ROCM_PATH to the ROCm that has it")
_AMDSMI_SCRIPT = r"""
import importlib.metadata as md, io, json, contextlib
out = {"wheel": None, "lib": None, "rocm": None}
try:
    out["wheel"] = md.version("amdsmi")
except md.PackageNotFoundError:
    print(json.dumps({"outcome": "no-wheel", **out})); raise SystemExit(0)
buf = io.StringIO()
try:
    with contextlib.redirect_stdout(buf):
        import amdsmi
except KeyError as e:
    print(json.dumps({"outcome": "missing", "detail": f"KeyError: {e} ({buf.getvalue().strip()})", **out})); raise SystemExit(0)
except AttributeError as e:
    print(json.dumps({"outcome": "skew", "detail": f"AttributeError: {e}", **out})); raise SystemExit(0)
except OSError as e:
    print(json.dumps({"outcome": "missing", "detail": f"OSError: {e}", **out})); raise SystemExit(0)
v = amdsmi.amdsmi_get_lib_version()
out["lib"] = f"{v['major']}.{v['minor']}.{v['release']}"
ok, rocm = amdsmi.amdsmi_get_rocm_version()
out["rocm"] = rocm if ok else None
print(json.dumps({"outcome": "ok", "detail": "", **out}))
"""


class NodeProbe(Protocol):
    """Reads one node. Each method returns a Fact (value + source, or error + fix); none raises."""

    name: str

    def kernel_release(self) -> Fact: ...
    def amdgpu_driver(self) -> Fact: ...
    def rocm_version(self) -> Fact: ...
    def amdsmi_library(self) -> Fact: ...
    def amd_smi_cli(self) -> Fact: ...
    def vllm(self, command: Sequence[str]) -> Fact: ...
    def python_version(self) -> Fact: ...
    def privileges(self) -> Fact: ...
    def device_access(self, user: str | None) -> Fact: ...
    def writable(self, path: str) -> Fact: ...
    def systemd_sandbox(self) -> Fact: ...
    def hold_kfd(self, render_node: str, gpu: int) -> Any: ...
    def masked_kernel(self, partition: Any, env: dict[str, str]) -> Fact: ...
    def run_vllm(self, argv: Sequence[str], env: dict[str, str], url: str, timeout_s: float) -> Fact: ...


def run(argv: Sequence[str], timeout_s: float = 60.0, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run argv (never a shell); (returncode, stdout, stderr), returncode 127 when not found, 124 on timeout."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        return r.returncode, r.stdout, r.stderr
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)} took longer than {timeout_s:g} s"


def run_until_healthy(argv: Sequence[str], env: dict[str, str], url: str, timeout_s: float) -> Fact:
    """Start ``argv`` (own session), wait until ``url``/health answers 200, stop it; Fact(its output).

    The wait is bounded by ``timeout_s`` and paced by waiting on the process itself (returns early
    when it exits). The process group is stopped with SIGTERM, then SIGKILL after 30 s."""
    source = f"{' '.join(argv[:4])} ... output (started by the doctor, stopped once healthy)"
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True)
        deadline, healthy, code = time.monotonic() + timeout_s, False, None
        try:
            while time.monotonic() < deadline and not healthy:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                try:
                    with urllib.request.urlopen(url + "/health", timeout=1) as r:
                        healthy = r.status == 200
                except OSError:
                    continue
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        log.seek(0)
        text = log.read()
    if not healthy:
        why = f"exited with {code}" if code is not None else f"not healthy after {timeout_s:g} s"
        return Fact.missing(source, f"vLLM {why}: " + " | ".join(text.strip().splitlines()[-3:]))
    return Fact(text, source)


def parse_amd_smi_version(stdout: str) -> dict[str, Any] | None:
    """``amd-smi version --json`` -> its one object (print_output wraps it in an array); None if not JSON."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return data if isinstance(data, dict) else None


def json_framing(stdout: str) -> str:
    """``gpu_data`` (amd-smi >= 26: {"gpu_data": [...]}), ``bare`` (a JSON array), or ``invalid``."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return "invalid"
    if isinstance(data, dict) and "gpu_data" in data:
        return "gpu_data"
    return "bare" if isinstance(data, list) else "invalid"


def flags_in_help(text: str) -> frozenset[str]:
    """Long options printed by ``vllm serve --help=all`` (argparse lists each as ``--name``)."""
    return frozenset(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text))


class RealProbe:
    name = "real"

    def __init__(self, rocm_root: str = "/opt/rocm", sys_root: str = "/sys", amd_smi: str = "amd-smi"):
        self.rocm_root = Path(rocm_root)
        self.sys_root = Path(sys_root)
        self.amd_smi = amd_smi

    def kernel_release(self) -> Fact:
        return Fact(platform.release(), "uname -r")

    def amdgpu_driver(self) -> Fact:
        mod = self.sys_root / "module" / "amdgpu"
        if not mod.exists():
            return Fact({"loaded": False, "version": None}, f"{mod} (absent: amdgpu is not loaded)")
        # The DKMS amdgpu sets MODULE_VERSION (e.g. 6.16.13, what `amd-smi version` prints as amdgpu version);
        # the in-tree driver has no version file (unverified on hardware; tools read the file and treat it as optional).
        ver = mod / "version"
        version = ver.read_text().strip() if ver.is_file() else None
        return Fact({"loaded": True, "version": version}, f"{ver}" if version else f"{mod} (in-tree driver, no version)")

    def rocm_version(self) -> Fact:
        path = self.rocm_root / ".info" / "version"
        try:
            return Fact(path.read_text().strip(), str(path))
        except OSError as e:
            return Fact.missing(str(path), f"no ROCm installation ({e.strerror})", INSTALL_ROCM)

    def amdsmi_library(self) -> Fact:
        code, out, err = run([sys.executable, "-c", _AMDSMI_SCRIPT], timeout_s=60)
        source = f"import amdsmi in a child process ({sys.executable})"
        try:
            return Fact(json.loads(out.strip().splitlines()[-1]), source)
        except (json.JSONDecodeError, IndexError):
            return Fact.missing(source, f"the amdsmi import crashed (exit {code}): {(err or out).strip()[-300:]}",
                                INSTALL_AMDSMI)

    def amd_smi_cli(self) -> Fact:
        exe = shutil.which(self.amd_smi) or shutil.which(str(self.rocm_root / "bin" / "amd-smi"))
        if not exe:
            return Fact.missing("PATH lookup of amd-smi", "amd-smi is not on PATH", INSTALL_AMDSMI)
        code, out, err = run([exe, "version", "--json"], timeout_s=60)
        version = parse_amd_smi_version(out)
        if version is None:
            return Fact.missing(f"{exe} version --json", f"exit {code}: {(err or out).strip()[-300:]}", INSTALL_AMDSMI)
        _c, static_out, _e = run([exe, "static", "-p", "--json"], timeout_s=60)
        return Fact({"path": exe, "version": version, "framing": json_framing(static_out)},
                    f"{exe} version --json; {exe} static -p --json")

    def vllm(self, command: Sequence[str]) -> Fact:
        exe = shutil.which(command[0]) if command else None
        source = f"{' '.join(command)} --version; --help=all"
        if not exe:
            return Fact.missing(source, f"{command[0] if command else 'vllm'} is not on PATH",
                                "install vLLM 0.33.0 for ROCm (`pip install vllm==0.33.0` in a ROCm PyTorch env) "
                                "or set vllm.command")
        base = [exe, *command[1:-1]] if len(command) > 1 and command[-1] == "serve" else [exe]
        code, out, err = run([*base, "--version"], timeout_s=120)
        version = (out.strip().splitlines() or [""])[-1] if code == 0 else None
        if not version:
            return Fact.missing(source, f"`{' '.join(base)} --version` failed (exit {code}): {err.strip()[-200:]}",
                                "check that vllm.command starts vLLM 0.33.0")
        code, help_out, _e = run([*base, "serve", "--help=all"], timeout_s=180)
        flags = flags_in_help(help_out) if code == 0 else None
        return Fact({"version": version, "flags": flags}, source)

    def python_version(self) -> Fact:
        return Fact(platform.python_version(), f"sys.version of {sys.executable}")

    def privileges(self) -> Fact:
        caps = 0
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
        except (OSError, ValueError):
            pass
        return Fact({"euid": os.geteuid(), "caps": caps}, "os.geteuid(); CapEff in /proc/self/status")

    def device_access(self, user: str | None) -> Fact:
        paths = ["/dev/kfd", *sorted(str(p) for p in Path("/dev/dri").glob("renderD*"))]
        if not Path("/dev/kfd").exists():
            return Fact.missing("/dev/kfd", "/dev/kfd does not exist (amdgpu/KFD not loaded)", INSTALL_ROCM)
        denied = [p for p in paths if not _user_can_rw(p, user)]
        return Fact({"paths": paths, "denied": denied}, f"stat of /dev/kfd and /dev/dri/renderD* for {user or 'this user'}")

    def writable(self, path: str) -> Fact:
        p = Path(path)
        while not p.exists() and p != p.parent:
            p = p.parent
        return Fact({"writable": os.access(p, os.W_OK), "checked": str(p)}, f"os.access({p}, W_OK)")

    def systemd_sandbox(self) -> Fact:
        return Fact(True, "systemd/gpu-sharing.service: ProtectSystem=full, ProtectHome=read-only, "
                          "StateDirectory=gpu-sharing (systemd.exec(5))")

    @contextmanager
    def hold_kfd(self, render_node: str, gpu: int) -> Iterator[int]:
        """A process that opens /dev/kfd inside a device cgroup allowing only ``render_node``.

        systemd-run --scope applies DevicePolicy=closed + DeviceAllow= (systemd.resource-control(5));
        kfd_init_apertures() creates a process-device entry only for the GPUs the cgroup allows."""
        argv = ["systemd-run", "--scope", "--quiet", "--property=DevicePolicy=closed",
                "--property=DeviceAllow=/dev/kfd rw", f"--property=DeviceAllow=/dev/dri/{render_node} rw", "--",
                sys.executable, "-c", "import os,sys; os.open('/dev/kfd', os.O_RDWR); print('open', flush=True); "
                                      "sys.stdin.read()"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.strip() != "open":
                raise RuntimeError(f"the KFD probe process did not open /dev/kfd: {proc.stderr.read() if proc.stderr else ''}")
            yield proc.pid
        finally:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def run_vllm(self, argv: Sequence[str], env: dict[str, str], url: str, timeout_s: float) -> Fact:
        return run_until_healthy(argv, env, url, timeout_s)

    def masked_kernel(self, partition: Any, env: dict[str, str]) -> Fact:
        return Fact.missing("not implemented on real hardware",
                            "reading the CU ids a kernel ran on needs a HIP probe kernel (s_getreg HW_ID) that "
                            "gpu-sharing does not ship yet", "")


def _user_can_rw(path: str, user: str | None) -> bool:
    if user is None:
        return os.access(path, os.R_OK | os.W_OK)
    import grp
    import pwd
    import stat

    try:
        pw = pwd.getpwnam(user)
        st = os.stat(path)
    except (KeyError, OSError):
        return False
    if pw.pw_uid == 0:
        return True
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {pw.pw_gid}
    mode = st.st_mode
    if st.st_uid == pw.pw_uid:
        return bool(mode & stat.S_IRUSR and mode & stat.S_IWUSR)
    if st.st_gid in groups:
        return bool(mode & stat.S_IRGRP and mode & stat.S_IWGRP)
    return bool(mode & stat.S_IROTH and mode & stat.S_IWOTH)
