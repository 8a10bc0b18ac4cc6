"""``slimguard compress serve``: one loaded LLMLingua-2 (Pan et al., 2024) compressor answering concurrent
HTTP requests, and a bounded local load test that measures it.

Not to be confused with :mod:`.serve`, the OpenAI-compatible chat server over a causal LM that the
distillation teacher can be reached through.

Protocol (JSON in, JSON out, stdlib ``http.server``):

* ``POST /v1/compress`` with ``{"prompt": "...", "rate": 0.33, ...}``: any of ``REQUEST_FIELDS`` may be
  set per request; the model, its precision and the limits are the server's. The answer is
  ``{"compressed_prompt": ..., **CompressResult.record(cfg)}``: the text ``slimguard compress run``
  prints and the numbers it writes to ``metrics.json``, for the same prompt and config.
* ``GET /v1/health``: model, precision, queue length, requests answered.
* Errors are one line, ``{"error": "..."}``: 400 bad input (empty prompt, rate outside (0, 1], an
  unknown or server-owned field, a prompt over ``max_input_tokens``), 413 body too large, 503 queue
  full (with ``Retry-After``), 504 not answered within ``timeout_s``.

Connections are handled by threads; the compression work goes through one bounded queue to
``workers`` threads that share the one loaded model (the ONNX Runtime session and the torch module
are safe to call from several threads), so memory holds one model however many clients connect.

    >>> from slimguard.slim.compress.service import percentiles
    >>> percentiles([0.1, 0.2, 0.3, 0.4])["p50_s"]
    0.25
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from ...core.errors import SlimguardError
from .config import REQUEST_FIELDS, CompressConfig, ServeConfig

COMPRESS_PATH = "/v1/compress"
HEALTH_PATH = "/v1/health"
WARM_TEXT = "The secret code for the cobalt vault is 48213. Please remember it, it matters.\n"


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of request latencies in seconds (linear interpolation, as numpy's default)."""
    if not latencies:
        return {"p50_s": float("nan"), "p90_s": float("nan"), "p99_s": float("nan"), "mean_s": float("nan")}
    a = np.asarray(latencies, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50_s": float(p50), "p90_s": float(p90), "p99_s": float(p99), "mean_s": float(a.mean())}


def request_config(base: CompressConfig, payload: Any) -> tuple[str, CompressConfig]:
    """(prompt, config) of one request: ``base`` with the request's allowed overrides; one-line errors."""
    from ...core.config import build

    if not isinstance(payload, dict):
        raise SlimguardError("the request body must be a JSON object like {\"prompt\": \"...\", \"rate\": 0.33}")
    if "prompt" not in payload:
        raise SlimguardError("the request has no 'prompt'")
    prompt = payload["prompt"]
    if not isinstance(prompt, str):
        raise SlimguardError(f"'prompt' must be a string, got {type(prompt).__name__}")
    extra = sorted(set(payload) - {"prompt"} - set(REQUEST_FIELDS))
    if extra:
        owned = [k for k in extra if k in CompressConfig.model_fields]
        if owned:
            raise SlimguardError(f"field '{owned[0]}' is fixed by the server (started with {owned[0]}="
                                 f"{getattr(base, owned[0])!r}); a request may set: {', '.join(REQUEST_FIELDS)}")
        raise SlimguardError(f"unknown request field '{extra[0]}'; a request may set: prompt, {', '.join(REQUEST_FIELDS)}")
    overrides = {k: payload[k] for k in REQUEST_FIELDS if k in payload}
    return prompt, build(CompressConfig, {**base.model_dump(), **overrides}) if overrides else base


@dataclass
class _Job:
    prompt: str
    cfg: CompressConfig
    future: Future
    queued: float


class CompressService:
    """The loaded compressor behind a bounded queue and ``workers`` threads; :meth:`start` adds the HTTP server."""

    def __init__(self, cfg: ServeConfig, *, compressor=None, log: Callable[[str], None] | None = None):
        from .compressor import PromptCompressor

        self.cfg = cfg
        c = cfg.compress
        self.pc = compressor or PromptCompressor(c.model, device_map=c.device, rate_tokenizer=c.rate_tokenizer,
                                                 batch_size=c.batch_size)
        if log is not None:
            self.pc.log = log
        self.log = log or (lambda m: None)
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=cfg.max_queue)
        self._lock = threading.Lock()
        self.served = 0
        self.rejected = 0
        self.failed = 0
        self.latencies: list[float] = []  # server-side: queued -> answered, of answered requests
        self.done = threading.Event()
        self._workers = [threading.Thread(target=self._work, name=f"compress-worker-{i}", daemon=True)
                         for i in range(cfg.workers)]
        self.httpd: ThreadingHTTPServer | None = None
        # the first call exports/loads the ONNX session (or warms torch): do it before the first client waits
        self.precision = self.pc.compress(WARM_TEXT, c).precision
        for w in self._workers:
            w.start()

    # ------------------------------------------------------------------ work

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                res = self.pc.compress(job.prompt, job.cfg)
                job.future.set_result({"compressed_prompt": res.compressed_prompt, **res.record(job.cfg)})
            except SlimguardError as e:
                job.future.set_exception(e)
            except Exception as e:  # a bug must not kill the worker: the client gets a 500, the log the type
                self.log(f"request failed: {type(e).__name__}: {e}")
                job.future.set_exception(e)

    def submit(self, prompt: str, cfg: CompressConfig) -> Future:
        """Queue one compression; raises :class:`queue.Full` when ``max_queue`` requests already wait."""
        fut: Future = Future()
        self.queue.put_nowait(_Job(prompt, cfg, fut, time.perf_counter()))
        return fut

    def handle(self, payload: Any) -> tuple[int, dict]:
        """(HTTP status, JSON body) for one decoded request body."""
        t0 = time.perf_counter()
        try:
            prompt, cfg = request_config(self.cfg.compress, payload)
            fut = self.submit(prompt, cfg)
        except SlimguardError as e:
            return 400, {"error": str(e)}
        except queue.Full:
            with self._lock:
                self.rejected += 1
            return 503, {"error": f"busy: {self.cfg.max_queue} requests are waiting; retry shortly"}
        try:
            out = fut.result(timeout=self.cfg.timeout_s)
        except FutureTimeout:
            fut.cancel()
            with self._lock:
                self.failed += 1
            return 504, {"error": f"not answered within timeout_s={self.cfg.timeout_s}"}
        except SlimguardError as e:
            return 400, {"error": str(e)}
        except Exception as e:
            with self._lock:
                self.failed += 1
            return 500, {"error": f"internal error: {type(e).__name__}"}
        with self._lock:
            self.served += 1
            self.latencies.append(time.perf_counter() - t0)
            if self.cfg.max_requests and self.served >= self.cfg.max_requests:
                self.done.set()
        return 200, out

    def health(self) -> dict:
        return {"status": "ok", "model": str(self.pc.path), "precision": self.precision,
                "queue": self.queue.qsize(), "served": self.served}

    def stats(self) -> dict:
        """What the serve run reports: requests answered/refused/failed and server-side latency percentiles."""
        with self._lock:
            lat = list(self.latencies)
            return {"served": self.served, "rejected": self.rejected, "failed": self.failed,
                    "precision": self.precision, "model": str(self.pc.path), **percentiles(lat)}

    # ------------------------------------------------------------------ HTTP

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns the base URL (``http://host:port``)."""
        self.httpd = ThreadingHTTPServer((self.cfg.host, self.cfg.port), _handler(self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, name="compress-http", daemon=True).start()
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        for _ in self._workers:
            self.queue.put(None)
        for w in self._workers:
            w.join(timeout=5)

    def __enter__(self) -> "CompressService":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _handler(svc: CompressService):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client's next request reuses its connection

        def log_message(self, *args):  # requests are counted in stats(), not printed one per line
            pass

        def _send(self, code: int, doc: dict, headers: dict | None = None) -> None:
            body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") == HEALTH_PATH:
                return self._send(200, svc.health())
            self._send(404, {"error": f"not found; POST {COMPRESS_PATH} or GET {HEALTH_PATH}"})

        def do_POST(self):
            if self.path.rstrip("/") != COMPRESS_PATH:
                return self._send(404, {"error": f"not found; POST {COMPRESS_PATH}"})
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self._send(411, {"error": "a Content-Length header is required"})
            if n > svc.cfg.max_body_bytes:
                self.close_connection = True  # the unread body would be parsed as the next request
                return self._send(413, {"error": f"request body of {n} bytes exceeds max_body_bytes={svc.cfg.max_body_bytes}"})
            raw = self.rfile.read(n)
            try:
                payload = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return self._send(400, {"error": "the request body is not UTF-8"})
            except ValueError as e:
                return self._send(400, {"error": f"the request body is not JSON ({e.msg} at position {e.pos})"})
            code, doc = svc.handle(payload)
            self._send(code, doc, {"Retry-After": "1"} if code == 503 else None)

    return Handler


# --------------------------------------------------------------------------- client and load test


def post(url: str, payload: dict, *, timeout: float = 300.0, conn: http.client.HTTPConnection | None = None
         ) -> tuple[int, dict]:
    """POST ``payload`` to ``<url>/v1/compress``; (status, JSON body). Reuses ``conn`` when given."""
    u = urlsplit(url)
    c = conn or http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    body = json.dumps(payload).encode("utf-8")
    try:
        c.request("POST", COMPRESS_PATH, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read().decode("utf-8"))
    finally:
        if conn is None:
            c.close()


def load_test(url: str, prompts: list[str], *, concurrency: int, requests: int, rate: float = 0.33,
              timeout: float = 300.0) -> dict:
    """``concurrency`` clients send ``requests`` requests in all (prompts round-robin), each client waiting for
    its answer before sending the next; returns latency percentiles of the answered requests (client side:
    connect, queue, compress, answer) and throughput. Bounded: a fixed number of requests, no retries."""
    if not prompts:
        raise SlimguardError("load_test needs at least one prompt")
    lat: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    code, _ = post(url, {"prompt": prompts[i % len(prompts)], "rate": rate}, conn=conn)
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
                    code = -1
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == 200:
                        lat.append(dt)
        finally:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(min(concurrency, requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = codes.get(200, 0)
    return {"concurrency": concurrency, "requests": requests, "ok": ok, "rejected": codes.get(503, 0),
            "errors": requests - ok - codes.get(503, 0), "wall_s": wall, "throughput_rps": ok / wall if wall else 0.0,
            **percentiles(lat)}
