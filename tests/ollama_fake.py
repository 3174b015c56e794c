"""A real HTTP server on a loopback port that speaks the parts of the Ollama API the judge uses.

`/api/tags` (the model list), `/api/show` (one model's details) and `/api/chat`,
streamed as NDJSON over chunked transfer encoding the way Ollama does, or whole.
Replies are scripted per request, so a test can make the judge see integers,
chatty replies, garbage, slow replies, 404s, 500s that succeed on retry, and the
server going away mid-run. Every chat request is recorded, and requests that do
not carry the expected options are listed in `problems`.

    with FakeOllama(reply=lambda req, n: "85") as fake:
        check_server(fake.url)          # the real `ollama` client talks to it
        fake.requests[0]["options"]     # {"seed": 123, "temperature": 0, "num_ctx": 2048}

Used by tests/test_judge.py, tests/test_judge_ui.py and benchmarks/bench_judge.py.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

BOOK_OPTIONS = {"seed": 123, "temperature": 0, "num_ctx": 2048}
#: Size and details of Llama 3 8B (Q4_0) as `ollama list` reports them.
LLAMA3_SIZE = 4_661_224_676
LLAMA3_DETAILS = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                  "parameter_size": "8.0B", "quantization_level": "Q4_0"}


@dataclass
class Reply:
    """What the fake answers to one chat request."""

    text: str = "85"
    delay: float = 0.0  # seconds before the first byte
    status: int = 200
    error: str | None = None  # the JSON error body's message when status != 200
    drop: bool = False  # close the connection without answering
    chunk_delay: float = 0.0  # seconds between streamed chunks


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeOllama:
    """The fake server; `url` is its host for `ollama.Client(host=...)`.

    reply(request_body, n) -> Reply | str  decides each chat answer (n counts chat
    requests from 1). `go_away_after=N` answers N chat requests, then drops the next
    connection and stops listening, like a server that was killed. `expect_options`
    (default: the book's) is checked on every chat request; mismatches go to `problems`.
    """

    def __init__(self, reply: Callable[[dict, int], Reply | str] | None = None,
                 models: dict[str, int] | None = None, delay: float = 0.0,
                 go_away_after: int | None = None, expect_options: dict | None = BOOK_OPTIONS,
                 chunk_chars: int = 2):
        self.reply = reply or (lambda request, n: "85")
        self.models = dict(models if models is not None else {"llama3:latest": LLAMA3_SIZE})
        self.delay = delay
        self.go_away_after = go_away_after
        self.expect_options = expect_options
        self.chunk_chars = chunk_chars
        self.requests: list[dict] = []  # every chat request body, in arrival order
        self.paths: list[str] = []  # every request line "METHOD /path"
        self.problems: list[str] = []
        self.gone = False
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ---
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeOllama":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-ollama", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._httpd is not None and not self.gone:
            self.gone = True
            self._httpd.shutdown()
            self._httpd.server_close()

    def go_away(self) -> None:
        """Stop listening now, as if the server process died; open connections are dropped."""
        with self._lock:
            if self.gone:
                return
            self.gone = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what the handler asks ---
    def _next_chat(self, body: dict) -> tuple[int, bool]:
        """Record a chat request; return its number and whether the server dies now."""
        with self._lock:
            self.requests.append(body)
            n = len(self.requests)
            options = body.get("options") or {}
            if self.expect_options is not None:
                for key, want in self.expect_options.items():
                    if options.get(key) != want:
                        self.problems.append(f"request {n}: option {key}={options.get(key)!r}, expected {want!r}")
            messages = body.get("messages") or []
            if len(messages) != 1 or messages[0].get("role") != "user" or not messages[0].get("content"):
                self.problems.append(f"request {n}: expected one user message, got {messages!r}")
            die = self.go_away_after is not None and n > self.go_away_after
        return n, die

    def model_info(self, name: str) -> dict | None:
        if name in self.models:
            return {"name": name, "model": name, "size": self.models[name]}
        if ":" not in name and f"{name}:latest" in self.models:  # Ollama's own default tag
            return self.model_info(f"{name}:latest")
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like Ollama
    server_fake: FakeOllama
    timeout = 30  # an idle keep-alive connection's thread ends after this
    disable_nagle_algorithm = True  # as Go's net/http does; else small writes wait ~40 ms for ACKs

    def log_message(self, *args) -> None:  # quiet
        pass

    # --- plumbing ---
    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {}

    def _send_json(self, payload: dict, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            self.close_connection = True

    # --- routes ---
    def do_GET(self) -> None:
        fake = self.server_fake
        fake.paths.append(f"GET {self.path}")
        if fake.gone:
            return self._drop()
        if self.path == "/api/tags":
            models = [{"name": name, "model": name, "modified_at": "2024-05-20T10:00:00Z", "size": size,
                       "digest": f"{abs(hash(name)):064x}"[:64], "details": LLAMA3_DETAILS}
                      for name, size in fake.models.items()]
            return self._send_json({"models": models})
        if self.path in ("/", "/api/version"):
            return self._send_json({"version": "0.6.0-fake"})
        self._send_json({"error": "404 page not found"}, 404)

    def do_POST(self) -> None:
        fake = self.server_fake
        fake.paths.append(f"POST {self.path}")
        body = self._body()
        if fake.gone:
            return self._drop()
        if self.path == "/api/show":
            info = fake.model_info(body.get("model", ""))
            if info is None:
                return self._send_json({"error": f"model '{body.get('model')}' not found"}, 404)
            return self._send_json({
                "modelfile": "FROM llama3", "parameters": 'stop "<|eot_id|>"', "template": "{{ .Prompt }}",
                "details": LLAMA3_DETAILS, "model_info": {"general.architecture": "llama",
                                                          "llama.context_length": 8192},
                "capabilities": ["completion"], "modified_at": "2024-05-20T10:00:00Z"})
        if self.path == "/api/chat":
            return self._chat(body)
        self._send_json({"error": "404 page not found"}, 404)

    def _chat(self, body: dict) -> None:
        fake = self.server_fake
        n, die = fake._next_chat(body)
        if die:
            fake.go_away()
            return self._drop()
        model = body.get("model", "")
        if fake.model_info(model) is None:
            return self._send_json({"error": f'model "{model}" not found, try pulling it first'}, 404)
        reply = fake.reply(body, n)
        reply = Reply(reply) if isinstance(reply, str) else reply
        delay = reply.delay or fake.delay
        if delay and fake._closing.wait(delay):
            return self._drop()
        if reply.drop:
            return self._drop()
        if reply.status != 200:
            return self._send_json({"error": reply.error or "internal server error"}, reply.status)
        if body.get("stream", True):
            self._stream(model, reply.text, reply.chunk_delay)
        else:
            self._send_json(self._message(model, reply.text, done=True))

    def _message(self, model: str, content: str, done: bool) -> dict:
        message = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": content},
                   "done": done}
        if done:
            message.update(done_reason="stop", total_duration=1_000_000, load_duration=1000,
                           prompt_eval_count=len(content), eval_count=max(1, len(content) // 2))
        return message

    def _stream(self, model: str, text: str, chunk_delay: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        size = self.server_fake.chunk_chars
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        lines = [self._message(model, piece, done=False) for piece in pieces]
        lines.append(self._message(model, "", done=True))
        for line in lines:
            if chunk_delay and self.server_fake._closing.wait(chunk_delay):
                return self._drop()
            data = (json.dumps(line) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
