"""vLLM 0.33's Prometheus metrics for the fake server (names, labels, buckets as vLLM exposes them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)


class FakeMetrics:
    def __init__(self, model_name: str, args, cu_mask: str | None):
        r = self.registry = CollectorRegistry()
        lab = ["model_name", "engine"]
        self.labels = {"model_name": model_name, "engine": "0"}
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", lab, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", lab, registry=r)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", lab, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.", lab, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               lab + ["finished_reason"], registry=r)
        self.preemptions = Counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", lab, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", lab,
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", lab,
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", lab,
                             buckets=E2E_BUCKETS, registry=r)
        info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                     ["block_size", "gpu_memory_utilization", "cache_dtype", "kv_cache_memory_bytes", "engine"], registry=r)
        info.labels("16", str(args.gpu_memory_utilization), "auto", str(args.kv_cache_memory_bytes), "0").set(1)
        for m in (self.running, self.waiting, self.kv_usage, self.prompt_tokens, self.generation_tokens,
                  self.preemptions, self.ttft, self.itl, self.e2e):
            m.labels(**self.labels)
        for reason in ("stop", "length", "abort", "error", "repetition"):
            self.success.labels(**self.labels, finished_reason=reason)

    def observe(self, prompt: int, completion: int, ttft_s: float, e2e_s: float, reason: str) -> None:
        self.prompt_tokens.labels(**self.labels).inc(prompt)
        self.generation_tokens.labels(**self.labels).inc(completion)
        self.success.labels(**self.labels, finished_reason=reason).inc()
        self.ttft.labels(**self.labels).observe(ttft_s)
        self.e2e.labels(**self.labels).observe(e2e_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
