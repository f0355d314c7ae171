"""Which names the router accepts, and the /v1/models list: every configured model, with readiness.

Why from the config and not only from running instances: a client (or a UI listing
models) must see a model while its instances start, with ``ready: false``, instead of an
empty list. Cards keep vLLM's fields (``id``, ``object``, ``created``, ``owned_by``,
``root``, ``parent``: vLLM's ``entrypoints/openai/models/serving.py`` lists LoRA adapters
with ``root`` = adapter path and ``parent`` = the base model's served name) and add
gpu-sharing's own: ``ready``, ``model`` (config name), ``replicas``, ``replicas_ready``,
``states``, ``held``.
"""

from __future__ import annotations

from gpu_sharing.metrics.snapshot import NodeSnapshot

_cache: tuple[NodeSnapshot | None, dict[str, frozenset[str]]] = (None, {})


def routes_by_name(snap: NodeSnapshot) -> dict[str, frozenset[str]]:
    """Accepted name -> instance ids that serve it: each instance's served names, plus the configured
    served names and LoRA adapter names of its model. Cached per snapshot (snapshots are immutable)."""
    global _cache
    if _cache[0] is snap:
        return _cache[1]
    by_model: dict[str, set[str]] = {}
    for i in snap.instances:
        by_model.setdefault(i.model, set()).add(i.instance_id)
    out: dict[str, set[str]] = {}
    for i in snap.instances:
        for n in i.served_names:
            out.setdefault(n, set()).add(i.instance_id)
    for m in snap.models:
        for n in (*m.served_names, *(name for name, _ in m.lora_adapters)):
            out.setdefault(n, set()).update(by_model.get(m.name, ()))
    routes = {n: frozenset(ids) for n, ids in out.items()}
    _cache = (snap, routes)
    return routes


def model_cards(snap: NodeSnapshot, now: int) -> list[dict]:
    routes = routes_by_name(snap)
    states = {i.instance_id: i.state for i in snap.instances}

    def card(name: str, root: str, parent: str | None, model: str, replicas: int, held: bool) -> dict:
        ids = sorted(routes.get(name, ()))
        ready = sum(states.get(i) == "READY" and i not in snap.draining for i in ids)
        by_state: dict[str, int] = {}
        for i in ids:
            by_state[states[i]] = by_state.get(states[i], 0) + 1
        return {"id": name, "object": "model", "created": now, "owned_by": "gpu-sharing", "root": root,
                "parent": parent, "ready": ready > 0, "model": model, "replicas": replicas,
                "replicas_ready": ready, "states": by_state, "held": held}

    cards: dict[str, dict] = {}
    for m in snap.models:
        for n in m.served_names:
            cards.setdefault(n, card(n, m.source, None, m.name, m.replicas, m.held))
        base = m.served_names[0] if m.served_names else m.name
        for name, path in m.lora_adapters:
            cards.setdefault(name, card(name, path, base, m.name, m.replicas, m.held))
    for i in snap.instances:  # still running but no longer configured (removed by a reload, stopping)
        for n in i.served_names:
            cards.setdefault(n, card(n, n, None, i.model, 0, False))
    return [cards[k] for k in sorted(cards)]
