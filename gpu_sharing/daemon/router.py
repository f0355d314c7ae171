"""OpenAI-compatible router: pick a READY replica of the requested model, stream the answer through.

Least outstanding requests across replicas; an upstream connection error marks that
replica as suspect for a few seconds so the next request goes elsewhere. Unknown
model: 404 with the served names. Known but not ready: 503 + Retry-After. A client
that disconnects cancels the upstream request (aiohttp cancels the handler task,
which closes the upstream response).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from gpu_sharing.metrics.snapshot import DaemonCounters, NodeSnapshot

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "te", "trailer"}
SUSPECT_S = 5.0
MAX_SAMPLES = 10_000


UNKNOWN_MODEL_LABEL = "<unknown>"
"""The one metric label for every model name that is not served (client-chosen names would grow the series)."""


def openai_error(status: int, message: str, typ: str, param: str | None = None, headers=None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": typ, "param": param, "code": status}},
                             status=status, headers=headers)


@dataclass
class Router:
    snapshot: "callable"
    counters: DaemonCounters
    retry_after_s: int = 5
    outstanding: dict[str, int] = field(default_factory=dict)
    suspect_until: dict[str, float] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                                             connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))

    async def close(self) -> None:
        if self.session:
            await self.session.close()

    def names(self, snap: NodeSnapshot) -> list[str]:
        return sorted({n for i in snap.instances for n in i.served_names})

    async def models(self, request: web.Request) -> web.Response:
        snap = self.snapshot()
        now = int(time.time())
        data = [{"id": n, "object": "model", "created": now, "owned_by": "gpu-sharing",
                 "ready": any(i.state == "READY" and n in i.served_names for i in snap.instances)} for n in self.names(snap)]
        return web.json_response({"object": "list", "data": data})

    def _pick(self, snap: NodeSnapshot, model: str):
        now = time.monotonic()
        ready = [i for i in snap.instances if model in i.served_names and i.state == "READY"]
        healthy = [i for i in ready if self.suspect_until.get(i.instance_id, 0) <= now] or ready
        if not healthy:
            return None
        return min(healthy, key=lambda i: (self.outstanding.get(i.instance_id, 0), i.instance_id))

    def _count(self, model: str, code: int, started: float) -> None:
        key = (model, str(code))
        self.counters.router_requests[key] = self.counters.router_requests.get(key, 0) + 1
        samples = self.counters.router_durations_s
        samples.append(time.monotonic() - started)
        if len(samples) > MAX_SAMPLES:
            del samples[: len(samples) // 2]

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
            model = body.get("model") if isinstance(body, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # too deep is bad input too: 400
            return openai_error(400, "request body is not valid JSON", "BadRequestError", "body")
        snap = self.snapshot()
        names = self.names(snap)
        if not isinstance(model, str) or not model:
            return openai_error(400, f"`model` is required; served models: {', '.join(names)}", "BadRequestError", "model")
        if model not in names:
            self._count(UNKNOWN_MODEL_LABEL, 404, started)  # labels stay bounded to configured names + this one
            return openai_error(404, f"The model `{model}` does not exist. Served models: {', '.join(names)}.",
                                "NotFoundError", "model")
        inst = self._pick(snap, model)
        if inst is None:
            self._count(model, 503, started)
            states = sorted({i.state for i in snap.instances if model in i.served_names})
            return openai_error(503, f"The model `{model}` is not ready yet (instances: {', '.join(states)}); retry later.",
                                "ServiceUnavailableError", "model", headers={"Retry-After": str(self.retry_after_s)})
        return await self._forward(request, raw, model, inst, started)

    async def _forward(self, request, raw: bytes, model: str, inst, started: float) -> web.StreamResponse:
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
                    snap = self.snapshot()
                    others = [i for i in snap.instances if model in i.served_names and i.state == "READY"
                              and i.instance_id not in tried]
                    if others:
                        inst = min(others, key=lambda i: (self.outstanding.get(i.instance_id, 0), i.instance_id))
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
                    self._count(model, code, started)
