"""A local stand-in for Anthropic's Messages API: run LLM test suites offline and rehearse outages.

The emulator speaks the real wire format (JSON replies, server-sent events, error bodies, status codes), so
the real `anthropic` SDK can be pointed at it with `base_url`. Everything it answers is deterministic:

* Input tokens. The request is cut into segments: each tool definition (compact JSON without its
  `cache_control`), each system block and each message content block (a string content is one block).
  A segment of `b` UTF-8 bytes of text counts `ceil(b / 4)` tokens; the first segment of every message also
  counts a template overhead of `min(3, b - ceil(b / 4))`. Each segment therefore counts at most its own
  bytes, so the input tokens reported (uncached + cache writes + cache reads) never exceed the UTF-8 bytes of
  the request's text: the plugin's worst-case bound relies on it. The text of a block is its `text`; a
  tool_use block's name and compact JSON input; a tool_result's text content; a thinking block's thinking.
  Inline media count `ceil(len(base64 data) / 4)` tokens (images capped at 1,600); media by URL or file id
  count 1,600 (image) or 2,000 (document) tokens.
* Output. The reply is a sentence of three-letter words chosen from a hash of the request's model, system,
  messages and tools. Every word plus its trailing space or final full stop is 4 bytes and exactly one output
  token, so `ceil(utf8_len / 4)` of the text is its token count. A reply has 8 to 31 tokens, or exactly `N`
  when the last user message contains `[[costguard:output=N]]`. It is cut at `max_tokens` (stop_reason
  "max_tokens"), else stop_reason is "end_turn".
* Prompt caching. Breakpoints are the `cache_control` marks on tools, system blocks and message content
  blocks, plus a top-level `cache_control` that marks the last block. A breakpoint's prefix (everything up to
  and including its block, keyed by model and content) is cacheable when it holds at least the model's minimum
  (`CACHE_MINIMUMS`). The longest cached prefix is a cache read; the tokens from there to the last cacheable
  breakpoint are a cache write, split 5m/1h by the TTL of the breakpoint closing each stretch; the rest is
  uncached input. Entries expire after their TTL and each hit refreshes them. More than 4 breakpoints, or a
  1h breakpoint after a 5m one, is a 400.
* Faults. Queued with `Emulator.inject` or `POST /_emulator/faults`, or triggered by a marker in the request
  text, `[[costguard:fault=KIND]]` (every attempt fails) or `[[costguard:fault=KINDxN]]` (the first N attempts
  of that exact request body fail), optionally with parameters: `[[costguard:fault=429x2,retry_after=0.01]]`.
* Billing. Every response that delivered a message is appended to the ledger (`Emulator.billed`,
  `GET /_emulator/billed`) with the usage the API would bill; failed attempts (4xx/5xx) are not.

Standard library only: this module must not import pytest or anthropic.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

from ..core.caching import DEFAULT_MINIMUMS, min_cacheable_tokens

__all__ = [
    "CACHE_MINIMUMS",
    "DEFAULT_CACHE_MINIMUM",
    "ERROR_TYPES",
    "FAULT_KINDS",
    "Emulator",
    "cache_minimum",
    "count_input_tokens",
    "main",
]

log = logging.getLogger(__name__)

# The same table the caching module uses to decide what to mark: one source for Anthropic's minimums.
CACHE_MINIMUMS = DEFAULT_MINIMUMS
"""Minimum cacheable prompt length in tokens, by model-name prefix (the longest matching prefix wins)."""
DEFAULT_CACHE_MINIMUM = DEFAULT_MINIMUMS.default

MAX_BREAKPOINTS = 4
MESSAGE_OVERHEAD = 3
MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_MARKER_OUTPUT = 200_000
DEFAULT_SLOW_SECONDS = 10.0
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_IMAGE_TOKENS = 1600
_REMOTE_DOCUMENT_TOKENS = 2000
_WORDS_PER_DELTA = 3

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""The error `type` the API puts in the body of each status."""

_REASONS = {413: "Request Entity Too Large", 529: "Overloaded"}
_FAULT_MESSAGES = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource",
    404: "The requested resource could not be found",
    413: "Request exceeds the maximum allowed number of bytes",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
_STATUS_FAULTS = frozenset(str(status) for status in ERROR_TYPES)
FAULT_KINDS: frozenset[str] = _STATUS_FAULTS | {"stream_error", "drop", "malformed", "no_usage", "slow"}
"""Every fault the emulator can inject, by name."""

# 64 three-letter words: with a trailing space (or the final full stop) each is 4 bytes and one token.
# fmt: off
_WORDS = (
    "the", "and", "for", "you", "not", "are", "all", "new", "was", "can", "has", "but", "our", "one", "may",
    "out", "use", "any", "see", "his", "who", "web", "now", "get", "how", "its", "top", "had", "day", "two",
    "way", "she", "set", "own", "too", "big", "yes", "far", "run", "sun", "sea", "sky", "cat", "dog", "owl",
    "fox", "bee", "ant", "elk", "yak", "emu", "cup", "pen", "map", "key", "box", "bag", "hat", "car", "bus",
    "jet", "oak", "ivy", "fig",
)
# fmt: on
_OUTPUT_MARKER = re.compile(r"\[\[costguard:output=(\d+)\]\]")
_FAULT_MARKER = re.compile(r"\[\[costguard:fault=([a-z0-9_]+?)(?:x(\d+))?((?:[,;][a-z_]+=[^,;\]]*)*)\]\]")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

KnownModel = Callable[[str], bool]
Clock = Callable[[], float]


def _default_known_model(name: str) -> bool:
    """Return whether the default price book knows `name`."""
    # Imported here: pricing pulls genai-prices (slow), and the emulator must start fast.
    from ..core.pricing import default_price_book

    return default_price_book().knows(name)


def cache_minimum(model: str) -> int:
    """Return the minimum cacheable prompt length of `model`, in tokens."""
    return min_cacheable_tokens(model)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def _ceil4(size: int) -> int:
    return -(-size // 4)


def _ident(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


class ApiError(Exception):
    """An error answered in the API's shape."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --- request validation ---------------------------------------------------------------------------


def _require(body: Mapping[str, Any], key: str) -> Any:
    if key not in body:
        raise ApiError(400, f"{key}: Field required")
    return body[key]


def _check_cache_control(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping) or value.get("type") != "ephemeral":
        raise ApiError(400, f"{where}.cache_control: Input tag does not match the expected tag 'ephemeral'")
    ttl = value.get("ttl", "5m")
    if ttl not in _TTL_SECONDS:
        raise ApiError(400, f"{where}.cache_control.ttl: Input should be '5m' or '1h'")


def _check_block(block: Any, where: str) -> None:
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        raise ApiError(400, f"{where}: Input should be a valid dictionary with a 'type'")
    if block["type"] == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise ApiError(400, f"{where}.text: Input should be a valid string")
        if not text:
            raise ApiError(400, "messages: text content blocks must be non-empty")
    _check_cache_control(block.get("cache_control"), where)


def validate_request(body: Any, *, for_count: bool = False) -> None:
    """Raise `ApiError` (400) when `body` is not a request the Messages API would accept."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "Request body must be a JSON object")
    model = _require(body, "model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: Input should be a valid string")
    if not for_count:
        max_tokens = _require(body, "max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise ApiError(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "stream: Input should be a valid boolean")
        temperature = body.get("temperature")
        if temperature is not None and (
            not isinstance(temperature, (int, float))
            or isinstance(temperature, bool)
            or not 0 <= temperature <= 1
        ):
            raise ApiError(400, "temperature: Input should be a number between 0 and 1")
    messages = _require(body, "messages")
    if not isinstance(messages, list):
        raise ApiError(400, "messages: Input should be a valid list")
    if not messages:
        raise ApiError(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, Mapping):
            raise ApiError(400, f"{where}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise ApiError(400, f"{where}.content: Field required")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(block, f"{where}.content.{j}")
        elif not isinstance(content, str):
            raise ApiError(400, f"{where}.content: Input should be a valid string or list")
        last_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if not content and not last_assistant:
            raise ApiError(
                400,
                f"{where}: all messages must have non-empty content "
                "except for the optional final assistant message",
            )
    system = body.get("system")
    if isinstance(system, list):
        for j, block in enumerate(system):
            _check_block(block, f"system.{j}")
            if block["type"] != "text":
                raise ApiError(400, f"system.{j}.type: Input should be 'text'")
    elif system is not None and not isinstance(system, str):
        raise ApiError(400, "system: Input should be a valid string or list")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ApiError(400, "tools: Input should be a valid list")
        for j, tool in enumerate(tools):
            if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise ApiError(400, f"tools.{j}.name: Field required")
            _check_cache_control(tool.get("cache_control"), f"tools.{j}")
    _check_cache_control(body.get("cache_control"), "cache_control")


# --- token counting -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Segment:
    tokens: int
    key: bytes
    ttl: str | None


def _text_of(value: Any) -> str:
    """Return the text a content value carries (a string or a list of blocks)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_block_text(block) for block in value if isinstance(block, Mapping))
    return ""


def _block_text(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind in ("tool_use", "server_tool_use"):
        return str(block.get("name", "")) + _compact(block.get("input", {}))
    if kind == "tool_result":
        return _text_of(block.get("content", ""))
    if kind == "thinking":
        return str(block.get("thinking", ""))
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            return str(source.get("data", ""))
        if isinstance(source, Mapping) and source.get("type") == "content":
            return _text_of(source.get("content", ""))
    return ""


def _block_tokens(block: Mapping[str, Any]) -> tuple[int, int]:
    """Return (tokens, text bytes) of a content block; media count tokens without text bytes."""
    kind = block.get("type")
    source = block.get("source")
    if kind in ("image", "document") and isinstance(source, Mapping):
        if source.get("type") == "base64":
            # Bounded by the inline data's bytes, so the request-bytes bound still holds.
            tokens = _ceil4(len(str(source.get("data", ""))))
            return (min(tokens, _IMAGE_TOKENS) if kind == "image" else tokens), 0
        if source.get("type") not in ("text", "content"):
            return (_IMAGE_TOKENS if kind == "image" else _REMOTE_DOCUMENT_TOKENS), 0
    size = len(_block_text(block).encode("utf-8"))
    return _ceil4(size), size


def _ttl(cache_control: Any) -> str | None:
    if isinstance(cache_control, Mapping):
        return str(cache_control.get("ttl", "5m"))
    return None


def _segments(body: Mapping[str, Any]) -> list[_Segment]:
    """Cut a validated request into counted segments, in cache-prefix order (tools, system, messages)."""
    segments: list[_Segment] = []
    for tool in body.get("tools") or []:
        definition = _compact({k: v for k, v in tool.items() if k != "cache_control"})
        tokens = _ceil4(len(definition.encode("utf-8")))
        segments.append(_Segment(tokens, b"tool:" + definition.encode(), _ttl(tool.get("cache_control"))))
    system = body.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) and system else system or []
    for block in system_blocks:
        stripped = {k: v for k, v in block.items() if k != "cache_control"}
        tokens = _block_tokens(block)[0]
        segments.append(
            _Segment(tokens, b"system:" + _compact(stripped).encode(), _ttl(block.get("cache_control")))
        )
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for index, block in enumerate(blocks):
            tokens, size = _block_tokens(block)
            if index == 0:
                # The chat template adds a few tokens per message; never more than the block's spare bytes.
                tokens += max(0, min(MESSAGE_OVERHEAD, size - tokens))
            head = f"{message['role']}:" if index == 0 else "+"
            stripped = {k: v for k, v in block.items() if k != "cache_control"}
            key = (head + _compact(stripped)).encode()
            segments.append(_Segment(tokens, key, _ttl(block.get("cache_control"))))
    found = sum(segment.ttl is not None for segment in segments)
    top = body.get("cache_control")
    if isinstance(top, Mapping) and segments:
        # Automatic caching takes one of the four slots and marks the last block (unless already marked).
        found += 1
        last = segments[-1]
        if last.ttl is None:
            segments[-1] = _Segment(last.tokens, last.key, _ttl(top))
    if found > MAX_BREAKPOINTS:
        raise ApiError(
            400, f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )
    breakpoints = [segment.ttl for segment in segments if segment.ttl is not None]
    seen_5m = False
    for ttl in breakpoints:
        if ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise ApiError(
                400, "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"
            )
    return segments


def count_input_tokens(request: Mapping[str, Any]) -> int:
    """Return the input tokens the emulator counts for a Messages request (cache ignored)."""
    validate_request(request, for_count=True)
    return sum(segment.tokens for segment in _segments(request))


# --- replies --------------------------------------------------------------------------------------


def _last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _reply_words(body: Mapping[str, Any]) -> list[str]:
    """Return the reply as one-token pieces, before any `max_tokens` cut."""
    seed = hashlib.sha256(
        _compact({k: body.get(k) for k in ("model", "system", "messages", "tools")}).encode()
    ).digest()
    marker = _OUTPUT_MARKER.search(_last_user_text(body))
    count = min(max(int(marker.group(1)), 1), MAX_MARKER_OUTPUT) if marker else 8 + seed[0] % 24
    words: list[str] = []
    block = 0
    while len(words) < count:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        words.extend(_WORDS[byte % len(_WORDS)] for byte in digest)
        block += 1
    del words[count:]
    words[0] = words[0].capitalize()
    return [word + " " for word in words[:-1]] + [words[-1] + "."]


# --- faults ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure."""

    kind: str
    retry_after: float | None = None
    seconds: float | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fault as JSON-ready parameters."""
        params = {"retry_after": self.retry_after, "seconds": self.seconds, "message": self.message}
        return {"kind": self.kind, **{k: v for k, v in params.items() if v is not None}}


@dataclass(slots=True)
class _Queued:
    fault: Fault
    remaining: int | None


def make_fault(kind: str | int, **params: Any) -> Fault:
    """Build a `Fault`, raising ValueError for an unknown kind or parameter."""
    name = str(kind)
    if name not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {name!r}; known kinds: {', '.join(sorted(FAULT_KINDS))}")
    unknown = set(params) - {"retry_after", "seconds", "message"}
    if unknown:
        raise ValueError(f"unknown fault parameter(s) for {name!r}: {', '.join(sorted(unknown))}")
    numbers: dict[str, float | None] = {}
    for key in ("retry_after", "seconds"):
        value = params.get(key)
        if value is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"fault parameter {key}={value!r} is not a number") from None
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"fault parameter {key}={value!r} must be a finite number >= 0")
            value = number
        numbers[key] = value
    retry_after = numbers["retry_after"]
    if name == "429" and retry_after is None:
        retry_after = 0.0
    seconds = numbers["seconds"]
    if name == "slow" and seconds is None:
        seconds = DEFAULT_SLOW_SECONDS
    message = params.get("message")
    return Fault(name, retry_after, seconds, None if message is None else str(message))


def _check_times(times: Any) -> int | None:
    if times is None:
        return None
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError(f"times={times!r}: expected a positive integer, or None for every request")
    return times


def _marker_fault(text: str) -> tuple[Fault, int | None] | None:
    """Return the fault a `[[costguard:fault=...]]` marker in `text` asks for, and how many attempts fail."""
    match = _FAULT_MARKER.search(text)
    if match is None:
        return None
    params: dict[str, Any] = {}
    for pair in filter(None, re.split(r"[,;]", match.group(3))):
        key, _, value = pair.partition("=")
        params[key] = value
    try:
        fault = make_fault(match.group(1), **params)
    except ValueError as exc:
        raise ApiError(400, f"costguard fault marker {match.group(0)}: {exc}") from None
    return fault, (int(match.group(2)) if match.group(2) else None)


# --- the emulator ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    model: str
    message_id: str
    words: list[str]
    stop_reason: str
    usage: dict[str, Any]


@dataclass(slots=True)
class _State:
    billed: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, float] = field(default_factory=dict)
    queue: list[_Queued] = field(default_factory=list)
    marker_attempts: dict[str, int] = field(default_factory=dict)


class Emulator:
    """A local, deterministic Anthropic Messages API server with a billing ledger and fault injection."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        known_model: KnownModel | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.known_model: KnownModel = known_model or _default_known_model
        self.clock: Clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._state = _State()
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
            return copy.deepcopy(self._state.billed)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """Return the queued faults, next first."""
        with self._lock:
            return [{**q.fault.as_dict(), "times": q.remaining} for q in self._state.queue]

    def reset(self) -> None:
        """Forget the ledger, the prompt cache, queued faults and marker attempt counters."""
        with self._lock:
            self._state = _State()

    def inject(self, kind: str | int, times: int | None = 1, **params: Any) -> None:
        """Queue a fault for the next `times` Messages requests (None: every request until cleared)."""
        fault = make_fault(kind, **params)
        remaining = _check_times(times)
        with self._lock:
            self._state.queue.append(_Queued(fault, remaining))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._state.queue.clear()

    def _inject_json(self, payload: Any) -> int:
        faults = payload.get("faults") if isinstance(payload, Mapping) else None
        if not isinstance(faults, list):
            raise ValueError('expected {"faults": [{"kind": "...", "times": 1, ...}]}')
        queued: list[_Queued] = []
        for item in faults:
            if not isinstance(item, Mapping) or "kind" not in item:
                raise ValueError(f"each fault needs a kind: {item!r}")
            params = {k: v for k, v in item.items() if k not in ("kind", "times")}
            queued.append(_Queued(make_fault(item["kind"], **params), _check_times(item.get("times", 1))))
        with self._lock:
            self._state.queue.extend(queued)
        return len(queued)

    # request handling

    def _bill(self, plan: _Plan, *, stream: bool, complete: bool, output_tokens: int) -> None:
        usage = copy.deepcopy(plan.usage)
        usage["output_tokens"] = output_tokens
        with self._lock:
            self._state.billed.append(
                {"model": plan.model, "usage": usage, "stream": stream, "complete": complete}
            )

    def _next_fault(self, body: Mapping[str, Any], raw: str) -> Fault | None:
        with self._lock:
            if self._state.queue:
                head = self._state.queue[0]
                if head.remaining is not None:
                    head.remaining -= 1
                    if head.remaining <= 0:
                        self._state.queue.pop(0)
                return head.fault
        marked = _marker_fault(raw)
        if marked is None:
            return None
        fault, times = marked
        key = hashlib.sha256(_compact(body).encode()).hexdigest()
        with self._lock:
            attempt = self._state.marker_attempts.get(key, 0) + 1
            self._state.marker_attempts[key] = attempt
        return fault if times is None or attempt <= times else None

    def _check_model(self, model: str) -> None:
        if not self.known_model(model):
            raise ApiError(404, f"model: {model}")

    def _cache_usage(self, model: str, segments: Sequence[_Segment]) -> tuple[int, int, int, int]:
        """Return (uncached, 5m writes, 1h writes, reads) and update the cache."""
        total = sum(segment.tokens for segment in segments)
        minimum = cache_minimum(model)
        digest = hashlib.sha256(model.encode())
        done = 0
        points: list[tuple[int, str, str]] = []
        for segment in segments:
            digest.update(len(segment.key).to_bytes(8, "big") + segment.key)
            done += segment.tokens
            if segment.ttl is not None and done >= minimum:
                points.append((done, digest.hexdigest(), segment.ttl))
        if not points:
            return total, 0, 0, 0
        now = self.clock()
        with self._lock:
            cache = self._state.cache
            for key in [key for key, expiry in cache.items() if expiry <= now]:
                del cache[key]
            read = max((tokens for tokens, key, _ in points if key in cache), default=0)
            write_5m = write_1h = 0
            covered = read
            for tokens, key, ttl in points:
                if tokens > covered:
                    if ttl == "1h":
                        write_1h += tokens - covered
                    else:
                        write_5m += tokens - covered
                    covered = tokens
                cache[key] = max(cache.get(key, 0.0), now + _TTL_SECONDS[ttl])
        return total - points[-1][0], write_5m, write_1h, read

    def _plan(self, body: Mapping[str, Any], segments: Sequence[_Segment]) -> _Plan:
        model = str(body["model"])
        uncached, write_5m, write_1h, read = self._cache_usage(model, segments)
        words = _reply_words(body)
        max_tokens = int(body["max_tokens"])
        stop_reason = "end_turn"
        if len(words) > max_tokens:
            words, stop_reason = words[:max_tokens], "max_tokens"
        usage = {
            "input_tokens": uncached,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": len(words),
            "service_tier": "standard",
        }
        return _Plan(model, _ident("msg_01", 22), words, stop_reason, usage)


def _message(plan: _Plan, *, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": plan.message_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": "".join(plan.words)}],
        "stop_reason": plan.stop_reason,
        "stop_sequence": None,
    }
    if usage:
        body["usage"] = plan.usage
    return body


def _error_body(status: int, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }


def _chunks(words: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(words), _WORDS_PER_DELTA):
        yield words[start : start + _WORDS_PER_DELTA]


# --- HTTP -----------------------------------------------------------------------------------------


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

    def _dispatch(self, method: str) -> None:
        self.request_id = _ident("req_011C", 20)
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            raw = self._read_body()
            if method == "POST" and path == "/v1/messages":
                self._messages(raw)
            elif method == "POST" and path == "/v1/messages/count_tokens":
                self._count_tokens(raw)
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
        self._send_json(200, {"input_tokens": sum(s.tokens for s in _segments(body))})

    def _messages(self, raw: bytes) -> None:
        emulator = self.emulator
        body = self._parse(raw)
        validate_request(body)
        emulator._check_model(body["model"])
        segments = _segments(body)  # breakpoint errors are 400s, whatever fault is queued
        fault = emulator._next_fault(body, raw.decode("utf-8", "replace"))
        stream = bool(body.get("stream", False))
        kind = fault.kind if fault else None
        if fault is not None and (kind in _STATUS_FAULTS or (kind == "stream_error" and not stream)):
            # A non-streaming request cannot fail mid-stream: it sees the 529 the stream error stands for.
            status = 529 if kind == "stream_error" else int(fault.kind)
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = str(math.ceil(fault.retry_after))
                headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
            if status == 429:
                headers["anthropic-ratelimit-requests-remaining"] = "0"
            message = fault.message or f"{_FAULT_MESSAGES[status]} (injected by the costguard emulator)"
            raise ApiError(status, message, headers)
        if fault is not None and kind == "drop" and not stream:
            self._drop()
            return
        if fault is not None and kind == "slow":
            emulator._stopping.wait(fault.seconds or 0.0)
        plan = emulator._plan(body, segments)
        if stream:
            self._stream(plan, fault)
            return
        # Billed once generated, even if the client has gone (a timed-out attempt is still paid for).
        emulator._bill(plan, stream=False, complete=True, output_tokens=len(plan.words))
        if kind == "malformed":
            text = json.dumps(_message(plan))
            self._send_json(200, None, raw=text[: len(text) // 2].encode())
        else:
            self._send_json(200, _message(plan, usage=kind != "no_usage"))

    def _stream(self, plan: _Plan, fault: Fault | None) -> None:
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
                emulator._bill(plan, stream=True, complete=complete, output_tokens=sent)

        try:
            start = _message(plan, usage=kind != "no_usage")
            start["content"], start["stop_reason"] = [], None
            if "usage" in start:
                start["usage"] = {**plan.usage, "output_tokens": 1}
            self._event("message_start", {"type": "message_start", "message": start})
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            self._event("ping", {"type": "ping"})
            chunks = list(_chunks(plan.words))
            cut = max(1, len(chunks) // 2) if kind in ("drop", "stream_error") else len(chunks)
            for chunk in chunks[:cut]:
                text = "".join(chunk)
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": text},
                    },
                )
                sent += len(chunk)
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
                "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
            }
            if kind != "no_usage":
                delta["usage"] = {
                    key: plan.usage[key]
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
                queued = emulator._inject_json(json.loads(raw or b"null"))
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            self._send_json(200, {"queued": queued, "faults": emulator.faults})
        elif method == "DELETE" and path == "/_emulator/faults":
            emulator.clear_faults()
            self._send_json(200, {"ok": True})
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
        self, status: int, payload: Any, *, raw: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status, _REASONS.get(status))
        self.send_header("Content-Type", "application/json")
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
                error.status, _error_body(error.status, error.message, self.request_id), headers=error.headers
            )
        except OSError:
            self.close_connection = True


# --- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Serve the emulator until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve a local stand-in for Anthropic's Messages API (see docs/offline.md)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: 0, a free port)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    emulator = Emulator(args.host, args.port)
    try:
        emulator.start()
    except OSError as exc:
        print(f"costguard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    print(f"costguard emulator listening on http://{args.host}:{emulator.port}", flush=True)
    try:
        emulator.serve_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
