"""The HTTP side: a threaded server, the request handler that routes and answers, and `Emulator` that runs them.

The handler speaks the wire format (JSON replies, server-sent events, JSONL results, error bodies, status
codes); what a request costs and what it answers is decided by the modules it calls. `Emulator` owns the
state every connection shares: the billing ledger, the prompt cache, the fault queue, the batches and the
files requests can name.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote

from .batches import BatchStore, Run, check_batch_requests
from .cache import PromptCache, Segment
from .errors import ApiError, error_body
from .faults import STATUS_FAULTS, Fault, FaultQueue, check_times, make_fault
from .openai_api import (
    OpenAIReply,
    PrefixCache,
    chat_events,
    chat_json,
    embeddings_json,
    make_reply,
    response_events,
    response_json,
)
from .replies import Reply, chunks, last_user_text, message_body, reply_words
from .tokens import segments
from .tools import server_tool_use
from .validation import validate_request
from .wire import compact, new_id

__all__ = ["MAX_REQUEST_BYTES", "Clock", "Emulator", "KnownModel"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
_REASONS = {413: "Request Entity Too Large", 529: "Overloaded"}

KnownModel = Callable[[str], bool]
Clock = Callable[[], float]


def _default_known_model(name: str) -> bool:
    """Return whether the default price book knows `name`."""
    # Imported here: pricing pulls genai-prices (slow), and the emulator must start fast.
    from ..core.pricing import default_price_book

    return default_price_book().knows(name)


def _known_openai_model(name: str) -> bool:
    """Return whether the default price book knows `name` at OpenAI's prices."""
    from ..core.pricing import UnknownModelPrice, default_price_book

    try:
        default_price_book().rates(name, provider="openai")
    except UnknownModelPrice:
        return False
    return True


_OPENAI_PATHS = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/embeddings": "embeddings"}


class Emulator:
    """A local, deterministic Anthropic Messages API server with a billing ledger and fault injection."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        known_model: KnownModel | None = None,
        clock: Clock | None = None,
        hold_batches: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.known_model: KnownModel = known_model or _default_known_model
        self.clock: Clock = clock or time.monotonic
        self.hold_batches = hold_batches
        """Keep new batches "in_progress" (and cancelled ones "canceling") until `end_batches()`."""
        self.files: dict[str, bytes] = {}
        """The content of the files requests name by `file_id` (an image, a PDF or plain text), by id."""
        self._lock = threading.Lock()
        self._billed: list[dict[str, Any]] = []
        self._cache = PromptCache()
        self._openai_cache = PrefixCache()
        self._faults = FaultQueue()
        self._batches = BatchStore(time.time)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # lifecycle

    def start(self) -> Emulator:
        """Bind and serve in a background thread; return self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self.port), _Handler)
        server.emulator = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="costguard-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_until_stopped(self) -> None:
        """Block until `stop()` is called from another thread or a signal handler."""
        while self._server is not None:
            self._stopping.wait(0.2)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is accepting requests."""
        return self._server is not None

    @property
    def base_url(self) -> str:
        """The URL to give the SDK (`anthropic.Anthropic(base_url=...)` or ANTHROPIC_BASE_URL)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    # state

    @property
    def billed(self) -> list[dict[str, Any]]:
        """Return a copy of the billing ledger: one entry per delivered message."""
        with self._lock:
            return copy.deepcopy(self._billed)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """Return the queued faults, next first."""
        return self._faults.pending

    def reset(self) -> None:
        """Forget the ledger, the prompt cache, queued faults, marker attempt counters, batches and files."""
        with self._lock:
            self._billed.clear()
        self._cache.clear()
        self._openai_cache.clear()
        self._faults.reset()
        self._batches.clear()
        self.files.clear()

    def inject(self, kind: str | int, times: int | None = 1, **params: Any) -> None:
        """Queue a fault for the next `times` Messages requests (None: every request until cleared)."""
        self._faults.push([(make_fault(kind, **params), check_times(times))])

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def end_batches(self) -> int:
        """End every batch still in progress (a canceling one ends with its requests canceled); return how many."""
        return self._batches.end_all(self._batch_result)

    # request handling

    def _check_model(self, model: str) -> None:
        if not self.known_model(model):
            raise ApiError(404, f"model: {model}")

    def _bill(
        self, reply: Reply, *, stream: bool, complete: bool, output_tokens: int, **batch: str
    ) -> None:
        usage = copy.deepcopy(reply.usage)
        usage["output_tokens"] = output_tokens
        entry = {"model": reply.model, "usage": usage, "stream": stream, "complete": complete, **batch}
        with self._lock:
            self._billed.append(entry)

    def _bill_openai(self, reply: OpenAIReply, *, stream: bool, complete: bool) -> None:
        entry = {
            "provider": "openai",
            "endpoint": reply.endpoint,
            "model": reply.model,
            "usage": reply.usage(),
            "stream": stream,
            "complete": complete,
        }
        with self._lock:
            self._billed.append(entry)

    def _batch_result(self, batch_id: str, custom_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one request of a batch as its `result` object, billing it when it succeeds."""
        try:
            self._check_model(params["model"])
            prompt = segments(params, self.files)
            # A batch has no connection to drop or slow down: any fault a marker asks for errors the request.
            fault = self._faults.next_marked(params, compact(params))
            if fault is not None:
                raise fault.batch_error()
            reply = self._reply(params, prompt, service_tier="batch")
        except ApiError as exc:
            return {"type": "errored", "error": error_body(exc.status, exc.message, new_id("req_011C", 20))}
        self._bill(
            reply, stream=False, complete=True, output_tokens=len(reply.words), batch_id=batch_id, custom_id=custom_id
        )
        return {"type": "succeeded", "message": message_body(reply)}

    def _batch_run(self) -> Run | None:
        """Return how batches end now: at once with their results, or None while batches are held."""
        return None if self.hold_batches else self._batch_result

    def _reply(self, body: Mapping[str, Any], prompt: Sequence[Segment], service_tier: str = "standard") -> Reply:
        """Generate the reply to a validated request and work out its usage (this writes the prompt cache)."""
        model = str(body["model"])
        uncached, write_5m, write_1h, read = self._cache.usage(model, prompt, self.clock())
        server_tools = server_tool_use(body, last_user_text(body))
        words = reply_words(body)
        max_tokens = int(body["max_tokens"])
        stop_reason = "end_turn"
        if len(words) > max_tokens:
            words, stop_reason = words[:max_tokens], "max_tokens"
        usage: dict[str, Any] = {
            "input_tokens": uncached,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": len(words),
            "service_tier": service_tier,
        }
        if server_tools is not None:
            # Search results and fetched pages are read after the prompt: uncached input.
            usage["input_tokens"] += server_tools.tokens
            usage["server_tool_use"] = server_tools.as_usage()
        return Reply(model, new_id("msg_01", 22), words, stop_reason, usage)


# --- HTTP -----------------------------------------------------------------------------------------


def _page_options(query: Mapping[str, list[str]]) -> dict[str, Any]:
    """Return the list endpoint's paging options from its query, raising `ApiError` (400) for a bad limit."""
    raw_limit = query.get("limit", ["20"])[-1]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise ApiError(400, "limit: Input should be an integer from 1 to 1000")
    return {
        "limit": int(raw_limit),
        "after_id": query.get("after_id", [None])[-1],
        "before_id": query.get("before_id", [None])[-1],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: Emulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        """Remember or forget an open client connection."""
        with self._connections_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down every client connection (idle keep-alive ones would otherwise outlive the server)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "costguard-emulator"
    # Headers and body go out in separate writes: with Nagle on, delayed ACKs stall each reply ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    # dispatch

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        self.request_id = new_id("req_011C", 20)
        # The beta SDK resources call the same paths with `?beta=true`: the query only matters for listing.
        path, _, query = self.path.partition("?")
        path = path.rstrip("/")
        try:
            raw = self._read_body()
            if method == "POST" and path == "/v1/messages":
                self._messages(raw)
            elif method == "POST" and path == "/v1/messages/count_tokens":
                self._count_tokens(raw)
            elif path == "/v1/messages/batches" or path.startswith("/v1/messages/batches/"):
                self._batches(method, path.split("/")[4:], query, raw)
            elif method == "POST" and path in _OPENAI_PATHS:
                self._openai(_OPENAI_PATHS[path], raw)
            elif path.startswith("/_emulator/"):
                self._control(method, path, raw)
            else:
                raise ApiError(404, "Not Found")
        except ApiError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as exc:
            # A bug here must reach the client as a 500, not as a silently dropped connection.
            log.exception("costguard emulator: unexpected error")
            self._send_error(ApiError(500, f"costguard emulator error: {type(exc).__name__}: {exc}"))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "invalid Content-Length header") from None
        if length > MAX_REQUEST_BYTES:
            # The body is not read, so the connection cannot be reused.
            self.close_connection = True
            raise ApiError(413, f"Request exceeds the maximum allowed number of bytes ({MAX_REQUEST_BYTES})")
        return self.rfile.read(length) if length > 0 else b""

    def _parse(self, raw: bytes) -> Any:
        if not (self.headers.get("x-api-key") or self.headers.get("authorization")):
            raise ApiError(401, "x-api-key header is required")
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "There was an error parsing the body: invalid JSON") from None

    # endpoints

    def _count_tokens(self, raw: bytes) -> None:
        body = self._parse(raw)
        validate_request(body, for_count=True)
        self.emulator._check_model(body["model"])
        self._send_json(200, {"input_tokens": sum(s.tokens for s in segments(body, self.emulator.files))})

    def _messages(self, raw: bytes) -> None:
        emulator = self.emulator
        body = self._parse(raw)
        validate_request(body)
        emulator._check_model(body["model"])
        prompt = segments(body, emulator.files)  # breakpoint and media errors are 400s, whatever fault is queued
        fault = emulator._faults.next_fault(body, raw.decode("utf-8", "replace"))
        stream = bool(body.get("stream", False))
        kind = fault.kind if fault else None
        if fault is not None and (kind in STATUS_FAULTS or (kind == "stream_error" and not stream)):
            # A non-streaming request cannot fail mid-stream: it sees the 529 the stream error stands for.
            raise fault.status_error()
        if fault is not None and kind == "drop" and not stream:
            self._drop()
            return
        if fault is not None and kind == "slow":
            emulator._stopping.wait(fault.seconds or 0.0)
        reply = emulator._reply(body, prompt)
        if stream:
            self._stream(reply, fault)
            return
        # Billed once generated, even if the client has gone (a timed-out attempt is still paid for).
        emulator._bill(reply, stream=False, complete=True, output_tokens=len(reply.words))
        if kind == "malformed":
            text = json.dumps(message_body(reply))
            self._send_json(200, None, raw=text[: len(text) // 2].encode())
        else:
            self._send_json(200, message_body(reply, usage=kind != "no_usage"))

    def _openai(self, endpoint: Any, raw: bytes) -> None:
        """Answer Chat Completions, Responses or Embeddings (`openai_api`), billing what is delivered."""
        emulator = self.emulator
        body = self._parse(raw)
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not _known_openai_model(model):
            raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.")
        reply = make_reply(body, endpoint, emulator._openai_cache)
        if endpoint == "embeddings":
            emulator._bill_openai(reply, stream=False, complete=True)
            self._send_json(200, embeddings_json(reply, body))
            return
        if not body.get("stream"):
            emulator._bill_openai(reply, stream=False, complete=True)
            self._send_json(200, chat_json(reply) if endpoint == "chat" else response_json(reply))
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = chat_events(reply, include_usage=include_usage) if endpoint == "chat" else response_events(reply)
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in events:
                self._write(event)
        except OSError:
            emulator._bill_openai(reply, stream=True, complete=False)  # generated, so billed
            return
        emulator._bill_openai(reply, stream=True, complete=True)

    def _stream(self, reply: Reply, fault: Fault | None) -> None:
        emulator = self.emulator
        kind = fault.kind if fault else None
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", self.request_id)
        self.end_headers()
        sent = 0
        billed = False

        def bill(complete: bool) -> None:
            nonlocal billed
            if not billed:
                billed = True
                emulator._bill(reply, stream=True, complete=complete, output_tokens=sent)

        try:
            start = message_body(reply, usage=kind != "no_usage")
            start["content"], start["stop_reason"] = [], None
            if "usage" in start:
                start["usage"] = {**reply.usage, "output_tokens": 1}
            self._event("message_start", {"type": "message_start", "message": start})
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            self._event("ping", {"type": "ping"})
            pieces = list(chunks(reply.words))
            cut = max(1, len(pieces) // 2) if kind in ("drop", "stream_error") else len(pieces)
            for piece in pieces[:cut]:
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "".join(piece)},
                    },
                )
                sent += len(piece)
            if kind == "drop":
                bill(complete=False)
                self._drop()
                return
            if kind == "stream_error":
                bill(complete=False)
                message = (fault.message if fault else None) or "Overloaded"
                error = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
                self._event("error", error)
                return
            self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
            bill(complete=True)
            delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            }
            if kind != "no_usage":
                delta["usage"] = {
                    key: reply.usage[key]
                    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
                } | {"output_tokens": sent}
            if kind == "malformed":
                data = json.dumps(delta)
                self._write(f"event: message_delta\ndata: {data[: len(data) // 2]}\n\n".encode())
            else:
                self._event("message_delta", delta)
            self._event("message_stop", {"type": "message_stop"})
        except OSError:
            # The client went away: what was generated so far is still billed.
            bill(complete=False)

    def _batches(self, method: str, parts: list[str], query: str, raw: bytes) -> None:
        """Answer the Message Batches endpoints; `parts` is the path after `/v1/messages/batches`."""
        if not (self.headers.get("x-api-key") or self.headers.get("authorization")):
            raise ApiError(401, "x-api-key header is required")
        emulator = self.emulator
        store = emulator._batches
        store.expire(emulator.clock())
        base_url = f"http://{self.headers['Host']}" if self.headers.get("Host") else emulator.base_url
        if method == "POST" and not parts:
            requests = check_batch_requests(self._parse(raw))
            batch_id = store.create(requests, emulator.clock(), emulator._batch_run())
            self._send_json(200, store.view(batch_id, base_url))
        elif method == "GET" and not parts:
            self._send_json(200, store.page(base_url, **_page_options(parse_qs(query))))
        elif method == "GET" and len(parts) == 1:
            self._send_json(200, store.view(parts[0], base_url))
        elif method == "DELETE" and len(parts) == 1:
            store.delete(parts[0])
            self._send_json(200, {"id": parts[0], "type": "message_batch_deleted"})
        elif method == "POST" and parts[1:] == ["cancel"]:
            store.cancel(parts[0], emulator._batch_run())
            self._send_json(200, store.view(parts[0], base_url))
        elif method == "GET" and parts[1:] == ["results"]:
            lines = "".join(json.dumps(result) + "\n" for result in store.results(parts[0]))
            self._send_json(200, None, raw=lines.encode(), content_type="application/x-jsonl")
        else:
            raise ApiError(404, "Not Found")

    def _control(self, method: str, path: str, raw: bytes) -> None:
        emulator = self.emulator
        if method == "GET" and path == "/_emulator/billed":
            self._send_json(200, emulator.billed)
        elif method == "POST" and path == "/_emulator/reset":
            emulator.reset()
            self._send_json(200, {"ok": True})
        elif method == "GET" and path == "/_emulator/faults":
            self._send_json(200, {"faults": emulator.faults})
        elif method == "POST" and path == "/_emulator/faults":
            try:
                queued = emulator._faults.push_json(json.loads(raw or b"null"))
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            self._send_json(200, {"queued": queued, "faults": emulator.faults})
        elif method == "DELETE" and path == "/_emulator/faults":
            emulator.clear_faults()
            self._send_json(200, {"ok": True})
        elif method == "PUT" and path.startswith("/_emulator/files/"):
            emulator.files[unquote(path[len("/_emulator/files/") :])] = raw
            self._send_json(200, {"ok": True, "bytes": len(raw)})
        elif method == "POST" and path == "/_emulator/batches/end":
            self._send_json(200, {"ended": emulator.end_batches()})
        elif method == "POST" and path == "/_emulator/batches/hold":
            payload = json.loads(raw or b"null")
            if not isinstance(payload, Mapping) or not isinstance(payload.get("hold"), bool):
                raise ApiError(400, 'expected {"hold": true} or {"hold": false}')
            emulator.hold_batches = payload["hold"]
            self._send_json(200, {"hold": emulator.hold_batches})
        else:
            raise ApiError(404, f"no control endpoint {method} {path}")

    # output

    def _drop(self) -> None:
        """Close the connection abruptly, without (the rest of) a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _event(self, name: str, data: Mapping[str, Any]) -> None:
        self._write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    def _send_json(
        self,
        status: int,
        payload: Any,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status, _REASONS.get(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", self.request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._write(body)

    def _send_error(self, error: ApiError) -> None:
        try:
            self._send_json(
                error.status, error_body(error.status, error.message, self.request_id), headers=error.headers
            )
        except OSError:
            self.close_connection = True
