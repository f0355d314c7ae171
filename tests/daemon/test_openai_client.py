"""The official `openai` Python client against the router, with fake vLLMs (simulator/vllm_http.py) behind it.

Chat, completions, streaming, models (every configured model, with readiness; LoRA adapters with
their base model as `parent`), a LoRA adapter name, `responses`, and the vLLM extras /tokenize,
/detokenize and /version. Everything on loopback through real HTTP servers.
"""

from __future__ import annotations

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gpu_sharing.config.schema import ApiSettings
from gpu_sharing.daemon.http_api import make_app
from gpu_sharing.daemon.router import Router
from gpu_sharing.metrics.instruments import DaemonMetrics
from gpu_sharing.metrics.snapshot import InstanceSnapshot, ModelSnapshot, NodeSnapshot
from simulator.vllm_args import parse_serve_args
from simulator.vllm_server import FakeVllm

ARGV = ["serve", "Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "qwen", "--max-model-len", "2048",
        "--enable-lora", "--lora-modules", "sql=/adapters/sql"]


@pytest.fixture
async def stack():
    fakes, servers = [], []
    for _ in range(2):
        fake = FakeVllm(parse_serve_args(ARGV), [0], None, None)
        server = TestServer(fake.app(), host="127.0.0.1")
        await server.start_server()
        fakes.append(fake)
        servers.append(server)
    instances = tuple(InstanceSnapshot(f"qwen-{k}", "qwen", k, ("qwen",), "READY", 100 + k, s.port,
                                       str(s.make_url("")).rstrip("/"), (f"0.{k}",), 0, "", 1 << 30)
                      for k, s in enumerate(servers))
    models = (ModelSnapshot("qwen", ("qwen",), "Qwen/Qwen2.5-0.5B-Instruct", 2, (("sql", "/adapters/sql"),)),
              ModelSnapshot("llama", ("llama",), "meta-llama/Llama-3.1-8B-Instruct", 1))
    snap = NodeSnapshot(instances=instances, models=models)
    metrics = DaemonMetrics(CollectorRegistry(), process_collector=False)
    router = Router(lambda: snap, metrics)
    await router.start()
    app = make_app(ApiSettings(), status=dict, registry=metrics.registry, router=router, reload=None, token=None)
    front = TestServer(app, host="127.0.0.1")
    await front.start_server()
    base = str(front.make_url("")).rstrip("/")
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    yield client, base, fakes, metrics
    await client.close()
    await front.close()
    await router.close()
    for s in servers:
        await s.close()


async def test_openai_client_end_to_end(stack):
    client, base, fakes, metrics = stack
    chat = await client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hello there"}],
                                                max_tokens=4)
    assert chat.model == "qwen" and chat.choices[0].message.content == " hello there hello there"
    comp = await client.completions.create(model="qwen", prompt="one two", max_tokens=3)
    assert comp.choices[0].text == " one two one" and comp.usage.completion_tokens == 3

    stream = await client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "a b"}],
                                                  max_tokens=4, stream=True, stream_options={"include_usage": True})
    parts, usage = [], None
    async for chunk in stream:
        parts += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(parts) == " a b a b" and usage.completion_tokens == 4

    lora = await client.chat.completions.create(model="sql", messages=[{"role": "user", "content": "select"}],
                                                max_tokens=2)
    assert lora.model == "sql"  # vLLM answers with the adapter's name

    models = {m.id: m for m in (await client.models.list()).data}
    assert set(models) == {"qwen", "sql", "llama"}
    assert models["sql"].model_extra["parent"] == "qwen" and models["sql"].model_extra["root"] == "/adapters/sql"
    assert models["qwen"].model_extra["ready"] and models["qwen"].model_extra["replicas_ready"] == 2
    assert not models["llama"].model_extra["ready"] and models["llama"].model_extra["replicas"] == 1

    resp = await client.responses.create(model="qwen", input="tell me", max_output_tokens=3)
    assert resp.output_text == " tell me tell" and resp.status == "completed" and resp.usage.output_tokens == 3

    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIStatusError) as e:  # configured, not running: 503 + Retry-After
        await client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503

    async with aiohttp.ClientSession(base) as h:
        tok = await (await h.post("/tokenize", json={"model": "qwen", "prompt": "hi"})).json()
        assert tok["count"] == 2 and tok["max_model_len"] == 2048
        detok = await (await h.post("/detokenize", json={"model": "sql", "tokens": tok["tokens"]})).json()
        assert detok == {"prompt": "hi"}
        assert await (await h.get("/version")).json() == {"version": "0.33.0"}
    assert sum(f.requests for f in fakes) == 5  # generations (tokenize is not one)
    reg = metrics.registry
    total = sum(reg.get_sample_value("gpu_sharing_router_requests_total", {"model": m, "code": c}) or 0
                for m in ("qwen", "sql", "llama", "__unknown__") for c in ("200", "404", "503"))
    assert total == reg.get_sample_value("gpu_sharing_router_request_duration_seconds_count") == 9
