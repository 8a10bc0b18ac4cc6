"""A minimal OpenAI-compatible chat server over a local causal LM, for LLMLingua-2 (Pan et al., 2024)
data distillation through the endpoint path (and for tests that exercise it on loopback).

Serves ``POST /v1/chat/completions`` (greedy, ``max_tokens``) and ``GET /v1/models``.
Not a production server: one request at a time, no streaming, no auth.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(teacher, model_name: str):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, code: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            self._send(404, {"error": {"message": "not found"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": "not found"}})
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                msgs = req["messages"]
                max_tokens = int(req.get("max_tokens") or 256)
            except (ValueError, KeyError, TypeError):
                return self._send(400, {"error": {"message": "bad request"}})
            tok = teacher.lm.tokenizer
            prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) \
                if getattr(tok, "chat_template", None) else "\n".join(m["content"] for m in msgs)
            with lock:
                text = teacher.complete([prompt], max_new_tokens=max_tokens)[0]
            self._send(200, {"id": "chatcmpl-local", "object": "chat.completion", "model": model_name,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}]})

    return Handler


def start_server(teacher, *, host: str = "127.0.0.1", port: int = 0, model_name: str = "local"):
    """Serve ``teacher`` (a :class:`~.distill.LocalTeacher`) in a daemon thread; returns (server, base_url)."""
    srv = ThreadingHTTPServer((host, port), make_handler(teacher, model_name))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://{host}:{srv.server_address[1]}/v1"
