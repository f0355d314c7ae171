"""OpenAI-compatible router: pick a READY replica of the requested model, stream the answer through.

Least outstanding requests across replicas; an upstream connection error marks that
replica as suspect for a few seconds so the next request goes elsewhere. A replica that
a rolling change is draining (``NodeSnapshot.draining``) gets no new requests. Names:
every served name and every LoRA adapter name (``--lora-modules name=path``) of a
configured model routes to that model's instances (vLLM accepts both, see
docs/reference/vllm-api.md). Unknown model: 404 with the served names. Known but not ready:
503 + Retry-After. A client that disconnects cancels the upstream request (aiohttp cancels
the handler task, which closes the upstream response).

Paths proxied like vLLM serves them: /v1/chat/completions, /v1/completions,
/v1/embeddings, /v1/responses, /tokenize, /detokenize (POST, by ``model``), GET /version.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Collection

import aiohttp
from aiohttp import web

from gpu_sharing.daemon.demand import DemandTracker, HoldRefused
from gpu_sharing.daemon.models_list import model_cards, routes_by_name
from gpu_sharing.metrics.instruments import UNKNOWN_LABEL, DaemonMetrics
from gpu_sharing.metrics.snapshot import InstanceSnapshot, NodeSnapshot

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "te", "trailer"}
SUSPECT_S = 5.0
PROXIED_POST_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                      "/tokenize", "/detokenize")
OPTIONAL_MODEL_PATHS = ("/tokenize", "/detokenize")
"""vLLM accepts these without ``model``; with one configured model we route there."""


UNKNOWN_MODEL_LABEL = UNKNOWN_LABEL  # one label for every name not configured (metrics.instruments)
"""The one metric label for every model name that is not served (client-chosen names would grow the series)."""


def openai_error(status: int, message: str, typ: str, param: str | None = None, headers=None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": typ, "param": param, "code": status}},
                             status=status, headers=headers)


def metric_model_label(model: object, known: Collection[str]) -> str:
    """The ONE place a request's model becomes a metric label: configured names only, so a client
    sending random names cannot grow the series count."""
    return model if isinstance(model, str) and model in known else UNKNOWN_LABEL


@dataclass
class Router:
    snapshot: Callable[[], NodeSnapshot]
    metrics: DaemonMetrics
    retry_after_s: int = 5
    outstanding: dict[str, int] = field(default_factory=dict)
    """Requests in flight per instance id (read by demand-driven serving: ``in_flight``)."""
    suspect_until: dict[str, float] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None
    demand: DemandTracker | None = None
    """Holds requests for demand-driven models (``scaling``) until a replica is READY; counts in-flight."""

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                                             connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))

    async def close(self) -> None:
        if self.session:
            await self.session.close()

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per configured model (by instance model), for demand-driven serving."""
        by_id = {i.instance_id: i.model for i in self.snapshot().instances}
        out: dict[str, int] = {}
        for iid, n in self.outstanding.items():
            if iid in by_id and n:
                out[by_id[iid]] = out.get(by_id[iid], 0) + n
        return out

    def names(self, snap: NodeSnapshot) -> list[str]:
        scaled = self.demand.served_names() if self.demand else ()
        return sorted(set(routes_by_name(snap)) | set(scaled))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": model_cards(self.snapshot(), int(time.time()))})

    def _candidates(self, snap: NodeSnapshot, name: str) -> list[InstanceSnapshot]:
        accepts = routes_by_name(snap).get(name, frozenset())
        return [i for i in snap.instances if i.instance_id in accepts]

    def _pick(self, snap: NodeSnapshot, model: str, exclude: Collection[str] = ()):
        now = time.monotonic()
        ready = [i for i in self._candidates(snap, model) if i.state == "READY"
                 and i.instance_id not in snap.draining and i.instance_id not in exclude]
        healthy = [i for i in ready if self.suspect_until.get(i.instance_id, 0) <= now] or ready
        if not healthy:
            return None
        return min(healthy, key=lambda i: (self.outstanding.get(i.instance_id, 0), i.instance_id))

    def _count(self, label: str, code: int, started: float) -> None:
        self.metrics.observe_request(label, code, time.monotonic() - started)

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        snap = self.snapshot()
        names = self.names(snap)
        try:
            body = json.loads(raw or b"{}")
            model = body.get("model") if isinstance(body, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # too deep is bad input too: 400
            self._count(UNKNOWN_LABEL, 400, started)
            return openai_error(400, "request body is not valid JSON", "BadRequestError", "body")
        if model is None and request.path in OPTIONAL_MODEL_PATHS and len(snap.models) == 1:
            model = snap.models[0].served_names[0] if snap.models[0].served_names else snap.models[0].name
        if not isinstance(model, str) or not model:
            self._count(UNKNOWN_LABEL, 400, started)
            return openai_error(400, f"`model` is required; served models: {', '.join(names)}", "BadRequestError", "model")
        label = metric_model_label(model, names)
        if model not in names:
            self._count(label, 404, started)
            return openai_error(404, f"The model `{model}` does not exist. Served models: {', '.join(names)}.",
                                "NotFoundError", "model")
        inst = self._pick(snap, model)
        if inst is None and self.demand is not None and self.demand.model_for(model) is not None:
            try:  # demand-driven: hold the request while the daemon plans a replica in
                await self.demand.hold(model, lambda: self._pick(self.snapshot(), model) is not None)
            except HoldRefused as e:
                self._count(label, 503, started)
                return openai_error(503, f"{e}; retry later.", "ServiceUnavailableError", "model",
                                    headers={"Retry-After": str(e.retry_after_s)})
            snap = self.snapshot()
            inst = self._pick(snap, model)
        if inst is None:
            self._count(label, 503, started)
            states = sorted({i.state for i in self._candidates(snap, model)}) or ["none running"]
            return openai_error(503, f"The model `{model}` is not ready yet (instances: {', '.join(states)}); retry later.",
                                "ServiceUnavailableError", "model", headers={"Retry-After": str(self.retry_after_s)})
        if self.demand is not None:
            self.demand.begin(model)
        try:
            return await self._forward(request, raw, model, label, inst, started)
        finally:
            if self.demand is not None:
                self.demand.end(model)

    async def version(self, request: web.Request) -> web.Response:
        """GET /version: the vLLM version of a READY instance (all run the same vllm.command)."""
        snap = self.snapshot()
        ready = sorted((i for i in snap.instances if i.state == "READY"), key=lambda i: i.instance_id)
        for inst in ready:
            try:
                async with self.session.get(inst.url + "/version") as up:
                    return web.Response(status=up.status, body=await up.read(),
                                        content_type=up.content_type or "application/json")
            except aiohttp.ClientError:
                continue
        return openai_error(503, "no READY instance to ask for its vLLM version; retry later.",
                            "ServiceUnavailableError", None, headers={"Retry-After": str(self.retry_after_s)})

    async def _forward(self, request, raw: bytes, model: str, label: str, inst, started: float) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS and k.lower() != "authorization"}
        tried: set[str] = set()
        while True:
            iid = inst.instance_id
            tried.add(iid)
            self.outstanding[iid] = self.outstanding.get(iid, 0) + 1
            code: int | None = 502
            try:
                try:
                    up = await self.session.post(inst.url + request.path, data=raw, headers=headers)
                except aiohttp.ClientConnectionError:
                    # Not answering (stopping, crashed, restarting): try another READY replica, else 503.
                    self.suspect_until[iid] = time.monotonic() + SUSPECT_S
                    other = self._pick(self.snapshot(), model, exclude=tried)
                    if other is not None:
                        inst = other
                        code = None  # retried elsewhere: counted once, when it ends
                        continue
                    code = 503
                    return openai_error(503, f"The model `{model}` is restarting or not answering; retry later.",
                                        "ServiceUnavailableError", "model",
                                        headers={"Retry-After": str(self.retry_after_s)})
                async with up:
                    code = up.status
                    resp = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items()
                                                                         if k.lower() not in HOP_HEADERS})
                    await resp.prepare(request)
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                    await resp.write_eof()
                    return resp
            except aiohttp.ClientError as e:  # the instance died mid-response
                self.suspect_until[iid] = time.monotonic() + SUSPECT_S
                return openai_error(502, f"instance {iid} of `{model}` failed mid-response ({e.__class__.__name__})",
                                    "BadGatewayError", None)
            finally:
                self.outstanding[iid] -= 1
                if code is not None:
                    self._count(label, code, started)
