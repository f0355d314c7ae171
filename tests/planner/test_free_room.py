"""fill.choose_free through the FreeRoom index gives the answer of a plain scan of every partition.

The reference below is the rule as fill.py states it, written out without the index: every
partition with room (bytes, share, CUs, GPU allowed, partition size), grouped by hive and GPU; per
hive whole GPUs with the most fitting partitions first (then without a sibling, then the
lowest index), tightest inside; the smallest (GPUs used, spread, slack, hive) wins; smallest tp
first. Random nodes are filled replica by replica through the index (FreeRoom.occupy), and at
every step the index's choice must equal the reference's on the same slots.
"""

from __future__ import annotations

import random

from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.planner.fill import choose_free
from gpu_sharing.planner.free_room import FreeRoom
from gpu_sharing.planner.packing import Item, Slot, _occupy
from gpu_sharing.planner.types import ModelDemand, PlannerPolicy

GIB = 1024**3


def reference(slots: dict, item: Item, siblings: set[int], spread_replicas: bool):
    d = item.demand
    for tp in sorted(d.bytes_per_rank_by_tp):
        need = d.bytes_per_rank_by_tp[tp]
        fit = [s for s in slots.values() if (d.allowed_gpus is None or s.ref.gpu in d.allowed_gpus)
               and need <= s.capacity_bytes and s.total_bytes >= d.min_partition_bytes
               and s.fits(need, d.compute_share)]
        options = []
        for hive in sorted({s.hive for s in fit}):
            per_gpu: dict[int, list[Slot]] = {}
            for s in fit:
                if s.hive == hive:
                    per_gpu.setdefault(s.ref.gpu, []).append(s)
            if sum(len(v) for v in per_gpu.values()) < tp:
                continue
            chosen: list[Slot] = []
            for g in sorted(per_gpu, key=lambda g: (-len(per_gpu[g]), g in siblings, g)):
                chosen += sorted(per_gpu[g], key=lambda s: (s.capacity_bytes - s.used_bytes, s.ref))[: tp - len(chosen)]
                if len(chosen) == tp:
                    break
            gpus = {s.ref.gpu for s in chosen}
            key = (len(gpus), 1 if (spread_replicas and gpus & siblings) else 0,
                   sum(s.capacity_bytes - s.used_bytes - need for s in chosen), hive)
            options.append((key, tuple(sorted(s.ref for s in chosen))))
        if options:
            return tp, min(options)[1]
    return None


def random_node(rng: random.Random) -> dict:
    slots = {}
    for gpu in range(rng.randint(1, 5)):
        hive = rng.choice([0, 0, 1])
        parts = rng.choice([1, 2, 4, 8])
        size = rng.choice([96, 192, 256]) * GIB // parts
        for k in range(parts):
            total = size if rng.random() < 0.8 else size // 2
            ref = PartitionRef(gpu, k)
            slots[ref] = Slot(ref, hive, int(total * 0.97), total, cus=rng.choice([3, 38, 38, 76, 304]))  # 3: CUs bind
    return slots


def random_items(rng: random.Random) -> list[Item]:
    items = []
    for m in range(rng.randint(1, 6)):
        gb = rng.choice([2, 6, 10, 20, 30, 45, 60, 90])
        tps = rng.choice([(1, 2, 4, 8), (1, 2), (2,), (4, 8), (1,)])
        d = ModelDemand(f"m{m}", rng.randint(1, 6), rng.randint(0, 9),
                        {tp: int(gb * GIB / tp + 1.5 * GIB) for tp in tps}, "f",
                        compute_share=rng.choice([None, None, 0.1, 0.25, 0.5]),
                        min_partition_bytes=rng.choice([0, 0, 20 * GIB]),
                        allowed_gpus=rng.choice([None, None, (0, 1), (2, 3, 4)]))
        items += [Item(d.instance_id(r), d.name, r, d.priority + 1, d) for r in range(d.replicas)]
    rng.shuffle(items)
    return items


def test_choose_free_through_the_index_matches_a_plain_scan():
    rng = random.Random(19)
    steps = placed = 0
    for _case in range(150):
        slots = random_node(rng)
        for s in rng.sample(list(slots.values()), k=len(slots) // 3):  # some room already used
            _occupy(slots, _kept(s, rng))
        spread = rng.random() < 0.8
        policy = PlannerPolicy(spread_replicas=spread)
        room = FreeRoom(slots)
        placed_gpus: dict[str, set[int]] = {}
        for item in random_items(rng):
            want = reference(slots, item, placed_gpus.get(item.model, set()), spread)
            got = choose_free(slots, item, placed_gpus, policy, room)
            assert (None if got is None else (got.tp, got.refs)) == want, (item.instance_id, sorted(slots))
            steps += 1
            if got is not None:
                room.occupy(got)
                placed_gpus.setdefault(item.model, set()).update(r.gpu for r in got.refs)
                placed += 1
    assert steps > 500 and placed > 200  # the cases exercise both answers


def _kept(s: Slot, rng: random.Random):
    from gpu_sharing.planner.packing import Assignment

    d = ModelDemand("kept", 1, 0, {1: rng.randint(1, max(1, s.capacity_bytes // 2))}, "f",
                    compute_share=rng.choice([None, 0.5, 0.9]))
    return Assignment(Item(d.instance_id(0), d.name, 0, 1, d), 1, (s.ref,), d.bytes_per_rank_by_tp[1])
