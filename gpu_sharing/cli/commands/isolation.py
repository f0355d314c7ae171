"""``gpu-sharing isolation masks``: show the HSA_CU_MASK each co-located instance would get.

Why: shares only conflict once instances are placed together, so operators
need a way to try a share set against a partition shape (CUs, XCCs) before
applying; impossible sets exit 2 with the numbers.
"""

from __future__ import annotations

import argparse

from gpu_sharing.cli import common
from gpu_sharing.errors import UserError
from gpu_sharing.isolation.cu_masks import assign_cu_sets, format_hsa_cu_mask, xcc_spread


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("isolation", help="inspect isolation settings (CU masks)")
    isub = p.add_subparsers(dest="isolation_command", metavar="COMMAND", required=True)
    m = isub.add_parser("masks", help="compute disjoint XCC-spread HSA_CU_MASK values for instances sharing a partition")
    m.add_argument("--cus", type=common.bounded_int(1, 1024), required=True, help="CUs of the partition (e.g. 38 for MI300X CPX)")
    m.add_argument("--xccs", type=common.bounded_int(1, 64), required=True, help="XCCs of the partition (e.g. 4 for MI300X DPX)")
    m.add_argument("--share", action="append", default=[], metavar="ID=SHARE",
                   help="instance and its share: 0.5 (fraction), 19 (CU count) or 'auto' (equal split of the rest)")
    common.add_json_flag(m)
    m.set_defaults(func=run_masks)


def _parse_share(text: str) -> tuple[str, float | int | None]:
    iid, sep, value = text.partition("=")
    if not sep or not iid or not value:
        raise UserError(f"--share {text!r}: expected ID=SHARE, e.g. a=0.5, b=19 or c=auto")
    if value == "auto":
        return iid, None
    try:
        return iid, (float(value) if any(ch in value for ch in ".eE") else int(value))
    except ValueError as e:
        raise UserError(f"--share {text!r}: {value!r} is not a fraction (0.5), a CU count (19) or 'auto'") from e


def run_masks(args: argparse.Namespace) -> int:
    if not args.share:
        raise UserError("give at least one --share ID=SHARE")
    requests: dict[str, float | int | None] = {}
    for text in args.share:
        iid, value = _parse_share(text)
        if iid in requests:
            raise UserError(f"--share: instance {iid!r} given twice")
        requests[iid] = value
    try:
        sets = assign_cu_sets(cu_count=args.cus, xcc_count=args.xccs, requests=requests)
    except UserError as e:
        raise UserError(f"partition with {args.cus} CUs, {args.xccs} XCCs: {e}") from e
    rows = [{"instance": iid, "request": requests[iid], "cus": len(cus), "cus_per_xcc": xcc_spread(cus, args.xccs),
             "hsa_cu_mask": None if len(cus) == args.cus else format_hsa_cu_mask(cus)} for iid, cus in sets.items()]
    if args.json:
        common.print_json({"cu_count": args.cus, "xcc_count": args.xccs, "instances": rows})
    else:
        common.print_table(["INSTANCE", "REQUEST", "CUS", "PER XCC", "HSA_CU_MASK"],
                           [[r["instance"], "auto" if r["request"] is None else r["request"], r["cus"],
                             "/".join(map(str, r["cus_per_xcc"])), r["hsa_cu_mask"] or "(none: whole partition)"]
                            for r in rows])
    return 0
