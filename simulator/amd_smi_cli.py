"""A fake ``amd-smi`` executable (7.0-era verbs and JSON shapes) over the simulated node.

    python -m simulator.amd_smi_cli list -e --json
    python -m simulator.amd_smi_cli static -p --json | partition -c -m --json | process --json | metric -m --json
    python -m simulator.amd_smi_cli set -g 0 -C CPX       (prints "Successfully set accelerator partition to ...")
    python -m simulator.amd_smi_cli set -g 0 -M NPS4      (asks "Do you accept these terms? [Y/N]" on stdin)
    python -m simulator.amd_smi_cli reset -r              (driver reload, same prompt)
Failures follow the 7.0-era CLI: set errors are uncaught ValueError/PermissionError, printed as
the last line on stderr with exit 1 (BUSY has no specific wording). The "GARBAGE" fault prints
invalid JSON. Implemented over the fake amdsmi module, like the real CLI over the library.
"""

from __future__ import annotations

import argparse
import json
import sys

import simulator.fake_amdsmi as smi
from simulator.fake_amdsmi.exceptions import AmdSmiLibraryException
from simulator.node import SimNode
from simulator.node_facts import knob


def _gpus(handles, selector):
    if selector in (None, ["all"]):
        return list(enumerate(handles))
    out = []
    for s in selector:
        if not s.isdigit() or int(s) >= len(handles):
            print(f"AmdSmiDeviceNotFoundException: Can not find a device: GPU '{s}' Error code: -3", file=sys.stderr)
            raise SystemExit(1)
        out.append((int(s), handles[int(s)]))
    return out


def _na(fn, *a):
    try:
        return fn(*a)
    except AmdSmiLibraryException:
        return "N/A"


def _emit(obj) -> None:
    node = smi._node()  # noqa: SLF001 - fault knob
    if node.take_fault("list") == "GARBAGE":
        print('{"gpu_data": [{"gpu": 0, "partition": ')
        return
    if node.state().get("cli_version") == "6.4" and isinstance(obj, dict) and "gpu_data" in obj:
        # ROCm 6.4's CLI prints bare arrays and names the compute mode compute_partition (renamed in
        # 6.4.2; shared reference amd-smi-shapes.md: CMD64 = amdsmi_commands.py @7ac597a8, CHG 7.0.0)
        obj = [{**r, "partition": {("compute_partition" if k == "accelerator_partition" else k): v
                                   for k, v in r["partition"].items()}} if "partition" in r else r
               for r in obj["gpu_data"]]
    if isinstance(obj, dict) and set(obj) == {"gpu_data"} and knob(node.state(), "amd_smi_json_framing") == "bare":
        obj = obj["gpu_data"]  # amd-smi < 26 (ROCm 6.4) printed bare arrays (ROCm/rocm-systems PR #223)
    print(json.dumps(obj, indent=4))


def cmd_version(args, handles):
    """CMD71 ``version``: tool, library (amdsmi_get_lib_version), ROCm (librocm-core), amdgpu (driver_info of GPU 0).

    JSON goes through print_output, so it is a one-element array (amdsmi_logger.py); human output is one line."""
    lib = smi.amdsmi_get_lib_version()
    ok, rocm = smi.amdsmi_get_rocm_version()
    out = {"tool": "AMDSMI Tool", "version": str(knob(smi._node().state(), "version.amd_smi_tool")),  # noqa: SLF001
           "amdsmi_library_version": f"{lib['major']}.{lib['minor']}.{lib['release']}",
           "rocm_version": rocm if ok else "N/A",
           "amdgpu_version": smi.amdsmi_get_gpu_driver_info(handles[0])["driver_version"] if handles else "N/A",
           "amd_hsmp_driver_version": "N/A"}
    if args.json:
        print(json.dumps([out], indent=4))
    else:
        print(f"AMDSMI Tool: {out['version']} | AMDSMI Library version: {out['amdsmi_library_version']} | "
              f"ROCm version: {out['rocm_version']} | amdgpu version: {out['amdgpu_version']} | amd_hsmp version: N/A")


def cmd_list(args, handles):
    out = []
    for i, h in _gpus(handles, args.gpu):
        kfd = smi.amdsmi_get_gpu_kfd_info(h)
        row = {"gpu": i, "bdf": smi.amdsmi_get_gpu_device_bdf(h), "uuid": smi.amdsmi_get_gpu_device_uuid(h),
               "kfd_id": kfd["kfd_id"], "node_id": kfd["node_id"], "partition_id": kfd["current_partition_id"]}
        if args.e:
            e = smi.amdsmi_get_gpu_enumeration_info(h)
            row.update({"render": f"renderD{e['drm_render']}", "card": f"card{e['drm_card']}", "hsa_id": e["hsa_id"],
                        "hip_id": e["hip_id"], "hip_uuid": e["hip_uuid"]})
        out.append(row)
    _emit(out)


def cmd_static(args, handles):
    data = []
    for i, h in _gpus(handles, args.gpu):
        row = {"gpu": i}
        if args.p:
            row["partition"] = {"accelerator_partition": _na(smi.amdsmi_get_gpu_compute_partition, h),
                                "memory_partition": _na(smi.amdsmi_get_gpu_memory_partition, h),
                                "partition_id": smi.amdsmi_get_gpu_kfd_info(h)["current_partition_id"]}
        if args.a:
            a = smi.amdsmi_get_gpu_asic_info(h)
            row["asic"] = {k: a[k] for k in ("market_name", "vendor_id", "device_id", "num_compute_units",
                                            "target_graphics_version")}
        if args.u:
            row["numa"] = {"node": smi.amdsmi_topo_get_numa_node_number(h), "affinity": "N/A"}
        data.append(row)
    _emit({"gpu_data": data})


def cmd_partition(args, handles):
    out = {}
    sel = _gpus(handles, args.gpu)
    both = not (args.c or args.m)
    if args.c or both:
        out["current_partition"] = [{"gpu_id": i, "memory": _na(smi.amdsmi_get_gpu_memory_partition, h),
                                     "accelerator_type": _na(smi.amdsmi_get_gpu_compute_partition, h),
                                     "accelerator_profile_index": "N/A",
                                     "partition_id": str(smi.amdsmi_get_gpu_kfd_info(h)["current_partition_id"])}
                                    for i, h in sel]
    if args.m or both:
        rows = []
        for i, h in sel:
            cfg = _na(smi.amdsmi_get_gpu_memory_partition_config, h)
            rows.append({"gpu_id": i, "memory_partition_caps": ",".join(cfg["partition_caps"]) if cfg != "N/A" else "N/A",
                         "current_memory_partition": cfg["mp_mode"] if cfg != "N/A" else "N/A"})
        out["memory_partition"] = rows
    _emit(out)


def cmd_process(args, handles):
    out = []
    for i, h in _gpus(handles, args.gpu):
        procs = smi.amdsmi_get_gpu_process_list(h)
        plist = [{"process_info": {"name": p["name"], "pid": p["pid"],
                                   "memory_usage": {k: {"value": v, "unit": "B"} for k, v in p["memory_usage"].items()},
                                   "mem_usage": {"value": p["mem"], "unit": "B"},
                                   "usage": {k: {"value": v, "unit": "ns"} for k, v in p["engine_usage"].items()},
                                   "cu_occupancy": p["cu_occupancy"]}} for p in procs]
        out.append({"gpu": i, "process_list": plist or [{"process_info": "No running processes detected"}]})
    _emit(out)


def cmd_metric(args, handles):
    data = []
    for i, h in _gpus(handles, args.gpu):
        total = smi.amdsmi_get_gpu_memory_total(h, smi.AmdSmiMemoryType.VRAM)
        used = smi.amdsmi_get_gpu_memory_usage(h, smi.AmdSmiMemoryType.VRAM)
        mb = lambda b: {"value": b // 1048576, "unit": "MB"}  # noqa: E731
        data.append({"gpu": i, "mem_usage": {"total_vram": mb(total), "used_vram": mb(used), "free_vram": mb(total - used)}})
    _emit({"gpu_data": data})


def _confirm() -> None:
    print("******WARNING******\nAfter changing memory (NPS) partition modes, users MUST restart (reload) the AMD GPU "
          "driver.\n")
    print("Do you accept these terms? [Y/N] ", end="", flush=True)
    answer = sys.stdin.readline()
    if not answer:
        raise EOFError("EOF when reading a line")
    if answer.strip() not in ("Yes", "yes", "y", "Y", "YES"):
        print("Confirmation not given. Exiting without setting value")
        raise SystemExit(1)


def cmd_set(args, handles):
    for i, h in _gpus(handles, args.gpu):
        bdf = smi.amdsmi_get_gpu_device_bdf(h)
        if args.C:
            mode = args.C
            try:
                smi.amdsmi_set_gpu_compute_partition(h, smi.AmdSmiComputePartitionType[mode])
                profiles = [c.value for c in smi._node().spec.compute_modes()]  # noqa: SLF001
                msg = f"Successfully set accelerator partition to {mode} (profile #{profiles.index(mode)})"
            except AmdSmiLibraryException as e:
                if e.err_code == 10:
                    raise PermissionError("Command requires elevation") from None
                if e.err_code == 55:
                    print(f"\nAttempted to set accelerator partition to {mode} on GPU ID: {i} BDF:{bdf}\n\n"
                          "[AMDSMI_STATUS_SETTING_UNAVAILABLE] Please check amd-smi partition --memory --accelerator "
                          "for available profiles.\n")
                    raise ValueError(f"[AMDSMI_STATUS_SETTING_UNAVAILABLE] Unable to set accelerator partition to {mode} "
                                     f"on GPU ID: {i} BDF:{bdf}") from None
                if e.err_code == 2:
                    msg = f"[AMDSMI_STATUS_NOT_SUPPORTED] Unable to set compute partition to {mode}"
                else:
                    raise ValueError(f"Unable to set accelerator partition to {mode} on GPU ID: {i} BDF:{bdf}") from None
            _print_set(args, i, "accelerator_partition", msg)
        if args.M:
            if i == _gpus(handles, args.gpu)[0][0]:
                _confirm()
            try:
                smi.amdsmi_set_gpu_memory_partition(h, smi.AmdSmiMemoryPartitionType[args.M])
                msg = f"Successfully set memory partition to {args.M}, reload driver when ready"
            except AmdSmiLibraryException as e:
                if e.err_code == 10:
                    print("[AMDSMI_STATUS_NO_PERM] Command requires elevation")
                    raise PermissionError("Command requires elevation") from None
                msg = f"[{e.get_error_info(detailed=False)}] Unable to set memory partition to {args.M}"
            _print_set(args, i, "memory_partition", msg)


def _print_set(args, gpu: int, key: str, msg: str) -> None:
    if args.json:
        print(json.dumps([{"gpu": gpu, key: msg}], indent=4))
    else:
        print(f"GPU: {gpu}\n    {key.upper()}: {msg}")


def cmd_reset(args, handles):
    if not args.r:
        raise SystemExit(0)
    if not SimNode.open(smi._node().state_dir).state()["root"]:  # noqa: SLF001
        raise PermissionError("Command requires elevation")
    _confirm()
    try:
        smi.amdsmi_gpu_driver_reload()
        msg = "Successfully reloaded driver"
    except AmdSmiLibraryException as e:
        msg = f"[{e.get_error_info(detailed=False)}] Unable to successfully restart driver"
    print(json.dumps([{"gpu": 0, "reload_driver": msg}]) if args.json else f"GPU: 0\n    RELOAD_DRIVER: {msg}")
    if "Unable" in msg:
        raise SystemExit(1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amd-smi")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, flags in (("list", ["-e"]), ("static", ["-p", "-a", "-u"]), ("partition", ["-c", "-m"]),
                        ("process", []), ("metric", ["-m"]), ("reset", ["-r"]), ("version", [])):
        sp = sub.add_parser(name)
        sp.add_argument("-g", "--gpu", nargs="+")
        sp.add_argument("--json", action="store_true")
        for f in flags:
            sp.add_argument(f, action="store_true")
    sp = sub.add_parser("set")
    sp.add_argument("-g", "--gpu", nargs="+")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("-C", "--compute-partition", dest="C", type=str.upper, choices=["SPX", "DPX", "TPX", "QPX", "CPX"])
    sp.add_argument("-M", "--memory-partition", dest="M", type=str.upper, choices=["NPS1", "NPS2", "NPS4", "NPS8"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sys.tracebacklimit = -1
    try:
        smi.amdsmi_init()
        handles = smi.amdsmi_get_processor_handles()
        {"list": cmd_list, "static": cmd_static, "partition": cmd_partition, "process": cmd_process,
         "metric": cmd_metric, "set": cmd_set, "reset": cmd_reset, "version": cmd_version}[args.cmd](args, handles)
    except AmdSmiLibraryException as e:  # 7.0-era: library errors printed on stdout, exit 0
        print(f"{e.get_error_info()} Error code: {-1000 - e.err_code}")
        return 0
    except (PermissionError, ValueError, EOFError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
