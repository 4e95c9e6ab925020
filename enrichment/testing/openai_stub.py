"""A local OpenAI-compatible server for tests and benchmarks, reached through the real client.

Serves `/v1/chat/completions` (a classification as structured JSON) and `/v1/embeddings`, both
with `usage`. On demand it answers 429 with Retry-After, 500, 401, 400, a slow answer past the
client's timeout, or malformed JSON: queue such answers with `script([...])` in-process, or
`POST /_stub/script {"responses": [...]}` from another process. A text containing FAIL_MARKER is
refused with 400 wherever it is sent (one bad item in a batch). Embeddings take one input or a
list, as OpenAI's do.

Run standalone: `python -m enrichment.testing.openai_stub --port 8765`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A text holding this is refused with 400 invalid_request_error by both endpoints.
FAIL_MARKER = "[stub-fail]"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def _vector(text: str, dimensions: int) -> list[float]:
    values = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values += [b / 255.0 - 0.5 for b in digest]
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _concept_vector(text: str, dimensions: int, concepts: dict[str, str]) -> list[float]:
    """A bag of word meanings: each word adds the vector of its concept (`concepts` maps words
    to a shared name, e.g. puppy and dog to "dog"), so synonyms land close together."""
    total = [0.0] * dimensions
    for word in "".join(c if c.isalnum() else " " for c in text.lower()).split():
        for i, value in enumerate(_vector(concepts.get(word, word), dimensions)):
            total[i] += value
    norm = math.sqrt(sum(v * v for v in total)) or 1.0
    return [v / norm for v in total]


@dataclass
class StubState:
    script: deque = field(default_factory=deque)
    calls: list = field(default_factory=list)
    cached_tokens: int = 0
    embedding_dimensions: int = 16
    # Word -> concept: when set, embeddings carry meaning (see _concept_vector); else noise.
    concepts: dict = field(default_factory=dict)
    slow_seconds: float = 3.0
    # When set, embeddings answer this model name whatever was asked (as a renaming proxy does).
    embedding_model_answer: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_response(self) -> str:
        with self.lock:
            return self.script.popleft() if self.script else "ok"


class _Handler(BaseHTTPRequestHandler):
    server_version = "openai-stub/1"
    state: StubState

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body, headers: dict | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def _error(self, status: int, kind: str, headers: dict | None = None) -> None:
        self._send(
            status, {"error": {"message": f"stub {kind}", "type": kind, "code": kind}}, headers
        )

    def do_GET(self):
        if self.path == "/_stub/calls":
            with self.state.lock:
                calls = list(self.state.calls)
            return self._send(200, {"calls": calls})
        return self._error(404, "not_found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/_stub/script":
            with self.state.lock:
                self.state.script.extend(payload.get("responses", []))
                if "reset" in payload:
                    self.state.calls.clear()
            return self._send(200, {"ok": True})
        if self.path not in ("/v1/chat/completions", "/v1/embeddings"):
            return self._error(404, "not_found")
        with self.state.lock:
            self.state.calls.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization", ""),
                    "body": payload,
                }
            )
        if FAIL_MARKER in json.dumps(payload.get("messages", payload.get("input", ""))):
            return self._error(400, "invalid_request_error")
        mode = self.state.next_response()
        if mode == "429":
            return self._error(429, "rate_limit_exceeded", {"Retry-After": "1"})
        if mode == "500":
            return self._error(500, "server_error")
        if mode == "401":
            return self._error(401, "invalid_api_key")
        if mode == "400":
            return self._error(400, "invalid_request_error")
        if mode == "slow":
            time.sleep(self.state.slow_seconds)
        if mode == "malformed":
            return self._send(200, b'{"id": "x", "choices": [')
        if self.path == "/v1/embeddings":
            return self._embeddings(payload)
        return self._chat(payload, malformed_content=(mode == "bad_content"))

    def _chat(self, payload: dict, *, malformed_content: bool):
        from enrichment.providers.local import classify

        text = " ".join(
            m.get("content", "") for m in payload.get("messages", []) if m.get("role") == "user"
        )
        result = classify(text)
        content = (
            "not json at all"
            if malformed_content
            else json.dumps({"category": result.category, "tags": result.tags})
        )
        prompt_tokens = _tokens(text) + 60
        completion_tokens = _tokens(content)
        self._send(
            200,
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": payload.get("model", "gpt-4o-mini"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {
                        "cached_tokens": min(self.state.cached_tokens, prompt_tokens)
                    },
                },
            },
        )

    def _embeddings(self, payload: dict):
        raw = payload.get("input", "")
        texts = raw if isinstance(raw, list) else [raw]
        texts = [t if isinstance(t, str) else json.dumps(t) for t in texts]
        dimensions = int(payload.get("dimensions") or self.state.embedding_dimensions)
        data = []
        for index, text in enumerate(texts):
            if self.state.concepts:
                vector = _concept_vector(text, dimensions, self.state.concepts)
            else:
                vector = _vector(text, dimensions)
            if payload.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_tokens(text) for text in texts)
        self._send(
            200,
            {
                "object": "list",
                "model": self.state.embedding_model_answer
                or payload.get("model", "text-embedding-3-small"),
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


class OpenAIStub:
    """The stub server on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, port: int = 0) -> None:
        self.state = StubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> OpenAIStub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, responses: list[str]) -> None:
        with self.state.lock:
            self.state.script.extend(responses)

    @property
    def calls(self) -> list[dict]:
        with self.state.lock:
            return list(self.state.calls)

    def calls_to(self, path: str) -> list[dict]:
        return [c for c in self.calls if c["path"] == path]

    def embedded_texts(self) -> list[str]:
        """Every text sent for embedding, in order (a list input counts each of its texts)."""
        texts = []
        for call in self.calls_to("/v1/embeddings"):
            raw = call["body"].get("input", "")
            texts += raw if isinstance(raw, list) else [raw]
        return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    stub = OpenAIStub(args.port)
    print(f"OpenAI stub on {stub.base_url}", flush=True)
    stub.server.serve_forever()


if __name__ == "__main__":
    main()
