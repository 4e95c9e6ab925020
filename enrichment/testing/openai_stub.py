"""A local OpenAI-compatible server for tests and benchmarks, reached through the real client.

Serves `/v1/chat/completions` (a classification as structured JSON) and `/v1/embeddings`, both
with `usage`. On demand it answers 429 with Retry-After, 500, 401, 400, a slow answer past the
client's timeout, or malformed JSON: queue such answers with `script([...])` in-process, or
`POST /_stub/script {"responses": [...]}` from another process. A text containing FAIL_MARKER is
refused with 400 wherever it is sent (one bad item in a batch). Embeddings take one input or a
list, as OpenAI's do.

The Batch API: Files (`POST /v1/files` multipart upload, `GET /v1/files/{id}` and its
`/content`) and Batches (`POST /v1/batches`, `GET /v1/batches/{id}`, `POST .../cancel`). A batch
stays `in_progress` until the test says: `batches_complete()` answers every line (output file,
and an error file for lines with FAIL_MARKER), `batches_end("expired" | "failed" | "cancelled")`
ends it (optionally after answering its first lines); from another process
`POST /_stub/batches/complete` and `POST /_stub/batches/end`. `hold_downloads()` makes file
downloads hang, as a poll stuck mid-way.

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


def _open_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


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
    # The Files and Batches endpoints (see "The Batch API" below).
    files: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)
    # While set, downloads of file contents wait until it is cleared (a poll stuck mid-way).
    downloads_open: threading.Event = field(default_factory=_open_event)  # clear: downloads hang
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
        if self.path.startswith(("/v1/files", "/v1/batches")):
            return self._batch_api("GET", b"")
        if self.path == "/_stub/calls":
            with self.state.lock:
                calls = list(self.state.calls)
            return self._send(200, {"calls": calls})
        return self._error(404, "not_found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.path.startswith(("/v1/files", "/v1/batches", "/_stub/batches")):
            return self._batch_api("POST", self.rfile.read(length))
        payload = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/_stub/script":
            with self.state.lock:
                self.state.script.extend(payload.get("responses", []))
                if "reset" in payload:
                    self.state.calls.clear()
            return self._send(200, {"ok": True})
        if self.path not in ("/v1/chat/completions", "/v1/embeddings"):
            return self._error(404, "not_found")
        call = {
            "path": self.path,
            "authorization": self.headers.get("Authorization", ""),
            "body": payload,
            "answer": "ok",  # or the scripted failure (or "400" for a FAIL_MARKER input)
        }
        with self.state.lock:
            self.state.calls.append(call)
        if FAIL_MARKER in json.dumps(payload.get("messages", payload.get("input", ""))):
            call["answer"] = "400"
            return self._error(400, "invalid_request_error")
        mode = self.state.next_response()
        if mode in ("429", "500", "401", "400", "malformed", "bad_content"):
            call["answer"] = mode
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
            return self._embeddings(payload, missing_one=(mode == "bad_content"))
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

    def _embeddings(self, payload: dict, *, missing_one: bool = False):
        """`missing_one`: the answer lacks its last vector (usage still counts every input)."""
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
        if missing_one:
            data.pop()
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

    # --- the Batch API: Files and Batches -------------------------------------------------------

    def _send_bytes(self, status: int, raw: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        try:
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client died mid-download (a worker killed mid-poll)

    def _batch_api(self, method: str, raw: bytes):
        state = self.state
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/files":
            fields = _multipart(self.headers.get("Content-Type", ""), raw)
            content, filename = fields.get("file", (b"", "upload"))
            purpose = fields.get("purpose", (b"", ""))[0].decode()
            _record(state, self, {"purpose": purpose, "filename": filename, "bytes": len(content)})
            if purpose not in ("batch", "fine-tune", "assistants", "vision", "user_data"):
                return self._error(400, "invalid_request_error")
            return self._send(200, _file_put(state, content, purpose, filename))
        payload = json.loads(raw or b"{}") if method == "POST" else {}
        _record(state, self, payload)
        if method == "POST" and path == "/_stub/batches/complete":
            return self._send(200, {"ids": batches_complete(state, payload.get("id"))})
        if method == "POST" and path == "/_stub/batches/end":
            ended = batches_end(
                state, payload["status"], payload.get("id"), payload.get("completedFirst", 0)
            )
            return self._send(200, {"ids": ended})
        if parts[:2] == ["v1", "files"] and len(parts) in (3, 4) and method == "GET":
            with state.lock:
                stored = state.files.get(parts[2])
            if stored is None:
                return self._error(404, "not_found")
            if len(parts) == 3:
                return self._send(200, stored["meta"])
            if parts[3] != "content":
                return self._error(404, "not_found")
            state.downloads_open.wait(120)
            return self._send_bytes(200, stored["content"], "application/octet-stream")
        if method == "POST" and path == "/v1/batches":
            return self._batch_create(payload)
        if parts[:2] == ["v1", "batches"]:
            if len(parts) == 2 and method == "GET":
                with state.lock:
                    data = [dict(batch) for batch in state.batches.values()]
                return self._send(200, {"object": "list", "data": data, "has_more": False})
            with state.lock:
                batch = state.batches.get(parts[2]) if len(parts) >= 3 else None
                found = dict(batch) if batch else None
            if found is None:
                return self._error(404, "not_found")
            if len(parts) == 3 and method == "GET":
                return self._send(200, found)
            if len(parts) == 4 and parts[3] == "cancel" and method == "POST":
                if found["status"] not in ("validating", "in_progress"):
                    return self._error(400, "invalid_request_error")
                batches_end(state, "cancelled", found["id"])
                with state.lock:
                    return self._send(200, dict(state.batches[found["id"]]))
        return self._error(404, "not_found")

    def _batch_create(self, payload: dict):
        state = self.state
        with state.lock:
            stored = state.files.get(payload.get("input_file_id", ""))
        endpoint = payload.get("endpoint")
        if (
            stored is None
            or stored["meta"]["purpose"] != "batch"
            or endpoint not in ("/v1/embeddings", "/v1/chat/completions")
            or payload.get("completion_window") != "24h"
        ):
            return self._error(400, "invalid_request_error")
        lines = [line for line in stored["content"].decode().splitlines() if line.strip()]
        now = int(time.time())
        with state.lock:
            batch_id = f"batch_stub{len(state.batches) + 1}"
            state.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": endpoint,
                "errors": None,
                "input_file_id": payload["input_file_id"],
                "completion_window": "24h",
                "status": "in_progress",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": now,
                "expires_at": now + 24 * 3600,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": payload.get("metadata"),
            }
            created = dict(state.batches[batch_id])
        return self._send(200, created)


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

    # The Batch API: progress is the test's to decide.

    def batches_complete(self, batch_id: str | None = None) -> list[str]:
        """Complete the open batches (or one): from another process, POST /_stub/batches/complete
        {"id": optional}."""
        return batches_complete(self.state, batch_id)

    def batches_end(
        self, status: str, batch_id: str | None = None, *, completed_first: int = 0
    ) -> list[str]:
        """End the open batches (or one) as expired, failed or cancelled: from another process,
        POST /_stub/batches/end {"status", "id", "completedFirst"}."""
        return batches_end(self.state, status, batch_id, completed_first)

    def hold_downloads(self, held: bool = True) -> None:
        """While held, file downloads hang (a poll stuck mid-way); released, they answer."""
        if held:
            self.state.downloads_open.clear()
        else:
            self.state.downloads_open.set()


# --- the Batch API: state changes, shared by the HTTP endpoints and the in-process helpers ------


def _record(state: StubState, handler: BaseHTTPRequestHandler, body: dict) -> None:
    with state.lock:
        state.calls.append(
            {
                "path": handler.path,
                "method": handler.command,
                "authorization": handler.headers.get("Authorization", ""),
                "body": body,
            }
        )


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str]]:
    """The fields of a multipart/form-data body: name -> (bytes, filename)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition") or ""
        fields[name] = (part.get_payload(decode=True) or b"", filename)
    return fields


def _file_put(state: StubState, content: bytes, purpose: str, filename: str) -> dict:
    with state.lock:
        file_id = f"file-stub{len(state.files) + 1}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        state.files[file_id] = {"meta": meta, "content": content}
    return meta


def _batch_line_answer(state: StubState, request: dict) -> tuple[int, dict]:
    """What the endpoint would have answered one line of a batch: (status, body)."""
    body = request.get("body") or {}
    if FAIL_MARKER in json.dumps(body.get("input", body.get("messages", ""))):
        error = {"message": "stub invalid_request_error", "type": "invalid_request_error"}
        return 400, {"error": {**error, "code": "invalid_request_error", "param": None}}
    raw = body.get("input", "")
    texts = raw if isinstance(raw, list) else [raw]
    texts = [t if isinstance(t, str) else json.dumps(t) for t in texts]
    dimensions = int(body.get("dimensions") or state.embedding_dimensions)
    data = []
    for index, text in enumerate(texts):
        vector = (
            _concept_vector(text, dimensions, state.concepts)
            if state.concepts
            else _vector(text, dimensions)
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(_tokens(text) for text in texts)
    return 200, {
        "object": "list",
        "model": state.embedding_model_answer or body.get("model", "text-embedding-3-small"),
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _batch_finish(state: StubState, batch_id: str, status: str, answered: int | None) -> None:
    """End one open batch with `status`; the first `answered` lines (all: None) get answers in
    the output file (successes) and the error file (failed requests)."""
    with state.lock:
        batch = state.batches[batch_id]
        if batch["status"] not in ("validating", "in_progress", "finalizing"):
            return
        content = state.files[batch["input_file_id"]]["content"].decode()
    requests = [json.loads(line) for line in content.splitlines() if line.strip()]
    output, errors = [], []
    for number, request in enumerate(requests[:answered] if answered is not None else requests):
        code, body = _batch_line_answer(state, request)
        line = {
            "id": f"batch_req_{batch_id}_{number}",
            "custom_id": request.get("custom_id"),
            "response": {"status_code": code, "request_id": f"req_{number}", "body": body},
            "error": None,
        }
        (output if code == 200 else errors).append(json.dumps(line))
    now = int(time.time())
    changes = {"status": status, f"{status}_at": now}
    if status == "completed":
        changes["finalizing_at"] = now
    if status == "cancelled":
        changes["cancelling_at"] = now
    if status == "failed":
        changes["errors"] = {
            "object": "list",
            "data": [{"code": "stub_failure", "message": "the stub failed this batch"}],
        }
    if output:
        changes["output_file_id"] = _file_put(
            state, ("\n".join(output) + "\n").encode(), "batch_output", f"{batch_id}_output.jsonl"
        )["id"]
    if errors:
        changes["error_file_id"] = _file_put(
            state, ("\n".join(errors) + "\n").encode(), "batch_output", f"{batch_id}_error.jsonl"
        )["id"]
    with state.lock:
        batch = state.batches[batch_id]
        batch.update(changes)
        batch["request_counts"] = {
            "total": batch["request_counts"]["total"],
            "completed": len(output),
            "failed": len(errors),
        }


def _open_batches(state: StubState, batch_id: str | None) -> list[str]:
    with state.lock:
        return [
            pk
            for pk, batch in state.batches.items()
            if (batch_id is None or pk == batch_id)
            and batch["status"] in ("validating", "in_progress", "finalizing")
        ]


def batches_complete(state: StubState, batch_id: str | None = None) -> list[str]:
    """Complete the open batches (or the one given): every line answered. Returns their ids."""
    ids = _open_batches(state, batch_id)
    for pk in ids:
        _batch_finish(state, pk, "completed", None)
    return ids


def batches_end(
    state: StubState, status: str, batch_id: str | None = None, completed_first: int = 0
) -> list[str]:
    """End the open batches (or the one given) as "expired", "failed" or "cancelled"; with
    `completed_first`, that many lines were answered before the end (as OpenAI delivers the
    finished part of an expired batch)."""
    if status not in ("expired", "failed", "cancelled"):
        raise ValueError(f"a batch ends expired, failed or cancelled, not {status!r}")
    ids = _open_batches(state, batch_id)
    for pk in ids:
        _batch_finish(state, pk, status, completed_first)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    stub = OpenAIStub(args.port)
    print(f"OpenAI stub on {stub.base_url}", flush=True)
    stub.server.serve_forever()


if __name__ == "__main__":
    main()
