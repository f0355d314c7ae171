"""HTTP routes of the fake vLLM server, with vLLM 0.33's JSON shapes, SSE framing and errors."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

routes = web.RouteTableDef()
FINGERPRINT = "vllm-0.33.0-5ad0c0de"


def _error(status: int, message: str, typ: str, param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": typ, "param": param, "code": status}}, status=status)


def _words(text: str, n: int) -> list[str]:
    """Deterministic 'generation': the prompt's words echoed back, cycled to n tokens."""
    base = [w for w in text.split() if w] or ["ok"]
    return [" " + base[i % len(base)] for i in range(n)]


async def _body(request: web.Request, required: str) -> tuple[dict | None, web.Response | None]:
    if request.content_type != "application/json":
        return None, _error(400, "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
                            "Bad Request")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, _error(400, "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body', 'msg': 'JSON decode error'}",
                            "Bad Request", "body")
    if not isinstance(body, dict) or required not in body:
        return None, _error(400, f"1 validation error:\n  {{'type': 'missing', 'loc': 'body.{required}', 'msg': "
                            f"'Field required', 'input': '<dict of {len(body) if isinstance(body, dict) else 0} items>'}}",
                            "Bad Request", f"body.{required}")
    problems = _validate(body, required)
    if problems:
        return None, _validation_error(problems)
    if body.get("stream_options") is not None and not body.get("stream"):
        return None, _error(400, "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
                            "BadRequestError", "stream_options")
    return body, None


def _problem(typ: str, loc: str, msg: str, value) -> dict:
    return {"type": typ, "loc": loc, "msg": msg, "input": _summary(value)}


def _summary(value):
    """vllm/entrypoints/serve/exception_handling/handlers/validation.py _summarize_error_input."""
    if isinstance(value, (list, tuple, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    return value if isinstance(value, str) else str(value)


def _validate(body: dict, required: str) -> list[dict]:
    """The pydantic checks of vLLM's ChatCompletionRequest / CompletionRequest that clients trip most:
    messages must be a list of objects with a role; prompt a string or a list; numbers typed. Other
    request kinds (``input`` of /v1/responses, /tokenize) get only the common field checks."""
    out: list[dict] = []
    if required == "messages":
        msgs = body["messages"]
        if not isinstance(msgs, list):
            out.append(_problem("list_type", "body.messages", "Input should be a valid list", msgs))
        else:
            for i, m in enumerate(msgs):
                if not isinstance(m, dict):
                    out.append(_problem("model_attributes_type", f"body.messages.{i}",
                                        "Input should be a valid dictionary or object to extract fields from", m))
                elif "role" not in m:
                    out.append(_problem("missing", f"body.messages.{i}.role", "Field required", m))
    elif required == "prompt":
        prompt = body["prompt"]
        if not isinstance(prompt, (str, list)):
            out.append(_problem("string_type", "body.prompt", "Input should be a valid string", prompt))
    for key in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            out.append(_problem("int_type", f"body.{key}", "Input should be a valid integer", v))
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            out.append(_problem("float_type", f"body.{key}", "Input should be a valid number", v))
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        out.append(_problem("bool_type", "body.stream", "Input should be a valid boolean", body["stream"]))
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        out.append(_problem("string_type", "body.model", "Input should be a valid string", body["model"]))
    return out


def _validation_error(problems: list[dict]) -> web.Response:
    """vllm/entrypoints/serve/exception_handling/handlers/validation.py:149-195: 400, "N validation error(s):",
    one line per error, type "Bad Request", param = the first error's location."""
    label = "error" if len(problems) == 1 else "errors"
    message = f"{len(problems)} validation {label}:\n" + "".join(f"  {p}\n" for p in problems[:10])
    return _error(400, message.rstrip(), "Bad Request", problems[0]["loc"])


def _check_model(fake, body: dict) -> web.Response | None:
    model = body.get("model")
    if model and model not in fake.names and model not in fake.lora_modules:
        return _error(404, f"The model `{model}` does not exist. Valid aliases: {', '.join(fake.names)}.",
                      "NotFoundError", "model")
    return None


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


@routes.route("*", "/ping")
async def ping(request: web.Request) -> web.Response:
    return web.Response(status=200)


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": "0.33.0"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=request.app["fake"].metrics.exposition())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    fake = request.app["fake"]
    now = int(time.time())
    cards = [{"id": n, "object": "model", "created": now, "owned_by": "vllm", "root": fake.args.model, "parent": None,
              "max_model_len": fake.max_model_len,
              "permission": [{"id": f"modelperm-{secrets.token_hex(8)}", "object": "model_permission", "created": now,
                              "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                              "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                              "organization": "*", "group": None, "is_blocking": False}]} for n in fake.names]
    cards += _lora_cards(fake, now)
    return web.json_response({"object": "list", "data": cards})


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


@routes.post("/v1/chat/completions")
async def chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    fake = request.app["fake"]
    body, err = await _body(request, "messages" if chat else "prompt")
    if err:
        return err
    err = _check_model(fake, body)
    if err:
        return err
    if chat:
        msgs = body["messages"] if isinstance(body["messages"], list) else []
        text = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
    else:
        text = body["prompt"] if isinstance(body["prompt"], str) else " ".join(map(str, body["prompt"]))
        if not text:
            return _error(400, "Prompt cannot be empty. (parameter=prompt)", "BadRequestError", "prompt")
    prompt_tokens = max(1, len(text.split()))
    max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or (8 if chat else 16))
    if prompt_tokens >= fake.max_model_len:
        return _error(400, f"This model's maximum context length is {fake.max_model_len} tokens.", "BadRequestError",
                      "input_tokens")
    tokens = _words(text, max_tokens)
    fake.count_request()
    rid = request.headers.get("X-Request-Id") or body.get("request_id") or secrets.token_hex(8)
    rid = ("chatcmpl-" if chat else "cmpl-") + rid
    served = _served_name(fake, body)
    created, start = int(time.time()), time.monotonic()
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(tokens), "completion_tokens": len(tokens)}
    fake.metrics.running.labels(**fake.metrics.labels).inc()
    try:
        if body.get("stream"):
            return await _stream(request, fake, chat, rid, created, tokens, usage, body, start)
        content = "".join(tokens)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": content, "refusal": None, "annotations": None,
                                              "audio": None, "function_call": None, "reasoning": None},
                      "logprobs": None, "finish_reason": "length", "stop_reason": None, "token_ids": None,
                      "routed_experts": None, "weight_versions": None}
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": "length", "stop_reason": None,
                      "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None,
                      "weight_versions": None}
        out = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
               "model": served, "choices": [choice], "service_tier": None, "system_fingerprint": FINGERPRINT,
               "usage": {**usage, "prompt_tokens_details": None, "completion_tokens_details": None},
               "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
        if chat:
            out.update({"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None})
        elapsed = time.monotonic() - start
        fake.metrics.observe(prompt_tokens, len(tokens), elapsed, elapsed, "length")
        return web.json_response(out)
    finally:
        fake.metrics.running.labels(**fake.metrics.labels).dec()


async def _stream(request, fake, chat, rid, created, tokens, usage, body, start) -> web.StreamResponse:
    served = _served_name(fake, body)
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await resp.prepare(request)
    obj = "chat.completion.chunk" if chat else "text_completion"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def send(payload) -> None:
        await resp.write(f"data: {json.dumps(payload) if not isinstance(payload, str) else payload}\n\n".encode())

    if chat:
        await send({"id": rid, "object": obj, "created": created, "model": served,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}], "prompt_token_ids": None, "prompt_text": None})
    first_at = None
    for i, tok in enumerate(tokens):
        if fake.delay_per_token_s:
            await asyncio.sleep(fake.delay_per_token_s)
        last = i == len(tokens) - 1
        if chat:
            choice = {"index": 0, "delta": {"content": tok}, "logprobs": None, "finish_reason": "length" if last else None,
                      "token_ids": None}
        else:
            choice = {"index": 0, "text": tok, "logprobs": None, "finish_reason": "length" if last else None,
                      "stop_reason": None, "prompt_token_ids": None, "token_ids": None, "weight_versions": None}
        chunk = {"id": rid, "object": obj, "created": created, "model": served, "choices": [choice]}
        if last and not include_usage:
            chunk["system_fingerprint"] = FINGERPRINT
        chunk["kv_transfer_params"] = None
        await send(chunk)
        first_at = first_at or time.monotonic()
    if include_usage:
        await send({"id": rid, "object": obj, "created": created, "model": served, "choices": [],
                    "usage": usage, "system_fingerprint": FINGERPRINT})
    await send("[DONE]")
    await resp.write_eof()
    now = time.monotonic()
    fake.metrics.observe(usage["prompt_tokens"], len(tokens), (first_at or now) - start, now - start, "length")
    return resp


# ---------------------------------------------------------------------------------------------------- LoRA
def _served_name(fake, body: dict) -> str:
    """vLLM answers with the LoRA adapter's name for an adapter request, else the first served name
    (``OpenAIServingModels.model_name(lora_request)``, vllm/entrypoints/openai/models/serving.py)."""
    model = body.get("model")
    return model if model in fake.lora_modules else fake.names[0]


def _lora_cards(fake, now: int) -> list[dict]:
    """One card per adapter: ``root`` = its path, ``parent`` = the base model's first served name,
    no ``max_model_len`` (``show_available_models``, vllm/entrypoints/openai/models/serving.py)."""
    return [{"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": path, "parent": fake.names[0],
             "max_model_len": None,
             "permission": [{"id": f"modelperm-{secrets.token_hex(8)}", "object": "model_permission", "created": now,
                             "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                             "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                             "organization": "*", "group": None, "is_blocking": False}]}
            for name, path in fake.lora_modules.items()]


# ------------------------------------------------------------------------------------- /tokenize, /detokenize
# vLLM: entrypoints/serve/tokenize (TokenizeCompletionRequest: model optional, prompt, add_special_tokens,
# return_token_strs; TokenizeChatRequest: messages; TokenizeResponse: count, max_model_len, tokens,
# token_strs; DetokenizeRequest: model optional, tokens; DetokenizeResponse: prompt). Not under /v1: no API key.
def _fake_token_ids(text: str) -> list[int]:
    """A reversible fake tokenizer: one token per UTF-8 byte (the real ids depend on the model)."""
    return list(text.encode("utf-8"))


async def _json(request: web.Request):
    """(body, None), or (None, vLLM's 400 for a body that is not JSON)."""
    try:
        return await request.json(), None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, _error(400, "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body', 'msg': 'JSON decode error'}",
                            "Bad Request", "body")


@routes.post("/tokenize")
async def tokenize(request: web.Request) -> web.Response:
    fake = request.app["fake"]
    body, err = await _json(request)
    if err:
        return err
    if not isinstance(body, dict) or not ("prompt" in body or "messages" in body):
        return _error(400, "1 validation error:\n  {'type': 'missing', 'loc': 'body.prompt', 'msg': 'Field required'}",
                      "Bad Request", "body.prompt")
    err = _check_model(fake, body)
    if err:
        return err
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    else:
        text = str(body["prompt"])
    tokens = _fake_token_ids(text)
    strs = [bytes([t]).decode("latin-1") for t in tokens] if body.get("return_token_strs") else None
    return web.json_response({"count": len(tokens), "max_model_len": fake.max_model_len, "tokens": tokens,
                              "token_strs": strs})


@routes.post("/detokenize")
async def detokenize(request: web.Request) -> web.Response:
    fake = request.app["fake"]
    body, err = await _json(request)
    if err:
        return err
    if not isinstance(body, dict) or not isinstance(body.get("tokens"), list):
        return _error(400, "1 validation error:\n  {'type': 'missing', 'loc': 'body.tokens', 'msg': 'Field required'}",
                      "Bad Request", "body.tokens")
    err = _check_model(fake, body)
    if err:
        return err
    try:
        prompt = bytes(int(t) for t in body["tokens"]).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return _error(400, "Token id out of vocabulary range", "BadRequestError", "tokens")
    return web.json_response({"prompt": prompt})


# ---------------------------------------------------------------------------------------------- /v1/responses
# vLLM: entrypoints/openai/responses (ResponsesRequest: input str | items, instructions, max_output_tokens,
# stream; ResponsesResponse: id "resp_<hex>", object "response", status, output [message item with
# output_text content], usage {input_tokens, output_tokens, total_tokens, *_details}). Non-streaming here;
# stream=true is answered 501 like any unimplemented feature (error table, NotImplementedError).
@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.Response:
    fake = request.app["fake"]
    body, err = await _body(request, "input")
    if err:
        return err
    err = _check_model(fake, body)
    if err:
        return err
    if body.get("stream"):
        return _error(501, "streaming /v1/responses is not implemented by the simulator", "NotImplementedError")
    items = body["input"]
    if isinstance(items, str):
        text = items
    else:
        text = " ".join(str(c.get("text", c) if isinstance(c, dict) else c)
                        for it in items if isinstance(it, dict)
                        for c in (it.get("content") if isinstance(it.get("content"), list) else [it.get("content", "")]))
    n = int(body.get("max_output_tokens") or 8)
    tokens = _words(text, n)
    fake.count_request()
    now, in_tok = int(time.time()), max(1, len(text.split()))
    out = {"id": f"resp_{secrets.token_hex(16)}", "created_at": now, "incomplete_details": None,
           "instructions": body.get("instructions"), "metadata": body.get("metadata"), "model": _served_name(fake, body),
           "object": "response",
           "output": [{"id": f"msg_{secrets.token_hex(16)}", "type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": "".join(tokens), "annotations": [], "logprobs": None}]}],
           "parallel_tool_calls": True, "temperature": body.get("temperature", 1.0), "tool_choice": "auto", "tools": [],
           "top_p": body.get("top_p", 1.0), "background": False, "max_output_tokens": n, "max_tool_calls": None,
           "previous_response_id": None, "prompt": None, "reasoning": None, "service_tier": "auto",
           "status": "completed", "text": None, "top_logprobs": None, "truncation": "disabled",
           "usage": {"input_tokens": in_tok, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": len(tokens),
                     "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": in_tok + len(tokens)},
           "user": None}
    return web.json_response(out)
