"""Fit and score the overhead model (gpu_sharing/sizing/overheads.py) against published vLLM profiles.

Used by benchmarks/sizing.py. The fit uses only the points marked "fit" in
tests/data/vllm_memory_profiles.json; the "holdout" points are scored with the fitted constants
but never seen by the fit, so the within-25% share on them is an honest out-of-sample figure.

Loss: the absolute log error of each point, doubled when the prediction is below the log
(an under-estimate makes vLLM refuse to start; an over-estimate only wastes memory). With that
weighting the optimum of a constant is the 2/3 quantile instead of the median.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from gpu_sharing.sizing.overheads import (ENGINE_ERAS, GIB, ModelShape, ProfileRules, activation_parts, model_shape,
                                          non_torch_bytes)

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "vllm_memory_profiles.json"
UNDER_WEIGHT = 2.0


def load() -> tuple[list[dict[str, Any]], dict[str, ModelShape]]:
    data = json.loads(DATA.read_text())
    return data["points"], {k: model_shape(v["config"]) for k, v in data["shapes"].items()}


@dataclass(frozen=True)
class Scored:
    point: dict[str, Any]
    act_pred_gib: float
    nt_pred_gib: float

    @property
    def act_log(self) -> float:
        return self.point["logged"]["activation_gib"]

    @property
    def nt_log(self) -> float:
        return self.point["logged"]["non_torch_gib"]

    @property
    def total_log(self) -> float:
        return self.act_log + self.nt_log

    @property
    def total_pred(self) -> float:
        return self.act_pred_gib + self.nt_pred_gib

    @property
    def within_25(self) -> bool:
        return abs(self.total_pred - self.total_log) <= 0.25 * self.total_log


def score(points: Iterable[dict[str, Any]], shapes: dict[str, ModelShape],
          eras: dict[str, ProfileRules]) -> list[Scored]:
    out = []
    for p in points:
        rules = eras[p["era"]]
        act = activation_parts(shapes[p["shape"]], tp=p["tp"], batched_tokens=p["batched_tokens"],
                               max_num_seqs=p["max_num_seqs"], act_dtype_bytes=p["act_dtype_bytes"], rules=rules).total
        out.append(Scored(p, act / GIB, non_torch_bytes(p["tp"], rules) / GIB))
    return out


def _loss(pred: float, obs: float) -> float:
    if pred <= 0 or obs <= 0:
        return 10.0
    e = math.log(pred / obs)
    return -UNDER_WEIGHT * e if e < 0 else e


def _quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def fit(points: list[dict[str, Any]], shapes: dict[str, ModelShape]) -> dict[str, ProfileRules]:
    """Constants fitted on ``points``: K per era, C_H and M shared (coordinate descent on a grid, from the
    committed values), non-torch per era and tp class as the 2/3 quantile of the logged values."""
    eras = dict(ENGINE_ERAS)
    q = UNDER_WEIGHT / (1 + UNDER_WEIGHT)
    for name, r in eras.items():
        tp1 = [p["logged"]["non_torch_gib"] for p in points if p["era"] == name and p["tp"] == 1]
        tpn = [p["logged"]["non_torch_gib"] for p in points if p["era"] == name and p["tp"] > 1]
        eras[name] = replace(r, non_torch_tp1_bytes=int(_quantile(tp1, q) * GIB) if tp1 else r.non_torch_tp1_bytes,
                             non_torch_tpn_bytes=int(_quantile(tpn, q) * GIB) if tpn else r.non_torch_tpn_bytes)

    def total_loss(candidate: dict[str, ProfileRules]) -> float:
        return sum(_loss(s.act_pred_gib, s.act_log) for s in score(points, shapes, candidate))

    grids = {"sampler_logit_copies": [x / 20 for x in range(20, 241)], "hidden_copies": [x / 10 for x in range(0, 121)],
             "moe_workspace": [x / 20 for x in range(0, 41)]}
    for _ in range(3):
        for name in eras:
            if any(p["era"] == name for p in points):
                eras[name] = min((replace(eras[name], sampler_logit_copies=k) for k in grids["sampler_logit_copies"]),
                                 key=lambda r: total_loss({**eras, name: r}))
        for field in ("hidden_copies", "moe_workspace"):
            best = min(grids[field], key=lambda v: total_loss({n: replace(r, **{field: v}) for n, r in eras.items()}))
            eras = {n: replace(r, **{field: best}) for n, r in eras.items()}
    return eras


def fit_graph(points: list[dict[str, Any]], shapes: dict[str, ModelShape]) -> tuple[float, float]:
    """(base GiB, GiB per layer): the slope by least squares on the logged "Estimated CUDA graph memory",
    the base moved to the 2/3 quantile of the residuals (the same under-estimate weighting as ``fit``)."""
    xs = [shapes[p["shape"]].layers for p in points if p["logged"].get("graph_estimate_gib")]
    ys = [p["logged"]["graph_estimate_gib"] for p in points if p["logged"].get("graph_estimate_gib")]
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    base = _quantile([y - slope * x for x, y in zip(xs, ys)], UNDER_WEIGHT / (1 + UNDER_WEIGHT))
    return base, slope
