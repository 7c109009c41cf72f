"""Meter every Anthropic Messages call through the SDK's public client middleware.

`CostGuardMiddleware` runs once per HTTP attempt, inside the SDK's retry loop: it routes and admits the
attempt before it is sent, releases it when the attempt fails (4xx/5xx or no connection: not billed), and
settles it from the response's usage. Streamed responses are metered as their bytes pass to the SDK, and
settled when the stream is closed, completely or not.

`install()` (from `_install.py`, re-exported here) makes every client the process builds carry the middleware,
without touching user code: it wraps the SDK's client constructors once `anthropic` is imported (by anyone, at
any time). This module is imported only when the first client is built, so an idle test run never loads it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ...core.pricing import Usage, usage_from_response
from .patch import _getter, install, is_installed, prepare, uninstall

if TYPE_CHECKING:
    from anthropic import APIRequest

    from ...metering.guard import CostGuard, Ticket

__all__ = ["SSEMeter", "install", "is_batch_creation", "is_installed", "middleware_for", "prepare", "uninstall"]

_MESSAGES_PATHS = ("/v1/messages", "/messages")
_EXCLUDED = ("count_tokens", "batches")
_NESTED_USAGE = ("cache_creation", "server_tool_use")


def is_messages_call(method: str, url: str, body: Any) -> bool:
    """Return whether an outgoing request is a billable Messages call."""
    if method.lower() != "post" or not isinstance(body, dict):
        return False
    billable = _billable_urls.get(url)
    if billable is None:
        path = url.split("?", 1)[0].rstrip("/")
        billable = path.endswith(_MESSAGES_PATHS) and not any(part in path for part in _EXCLUDED)
        if len(_billable_urls) < 1024:  # a client calls a handful of URLs; don't grow without bound
            _billable_urls[url] = billable
    return billable


_billable_urls: dict[str, bool] = {}
_BATCHES_PATHS = ("/v1/messages/batches", "/messages/batches")


def is_batch_creation(method: str, url: str, body: Any) -> bool:
    """Return whether an outgoing request creates a Message Batch (`messages.batches.create`, beta too)."""
    if method.lower() != "post" or not isinstance(body, dict) or "requests" not in body:
        return False
    return url.split("?", 1)[0].rstrip("/").endswith(_BATCHES_PATHS)


class SSEMeter:
    """Follow a Messages SSE stream's bytes and keep the usage it reports.

    `message_start` carries the input and cache counts; `message_delta` carries the cumulative output count
    (overwrite, never add). The stream is complete only once `message_delta` has arrived.
    """

    __slots__ = ("_buffer", "_usage", "complete", "error", "model")

    def __init__(self) -> None:
        self._buffer = b""
        self._usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.complete = False
        self.error = False

    def feed(self, chunk: bytes) -> None:
        """Consume raw bytes of the stream."""
        self._buffer += chunk
        while True:
            cut = _event_end(self._buffer)
            if cut is None:
                return
            raw, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1] :]
            self._on_event(raw)

    def _on_event(self, raw: bytes) -> None:
        data = b"".join(line[5:].lstrip(b" ") for line in raw.splitlines() if line.startswith(b"data:"))
        if not data:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model") or self.model
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._usage = dict(usage)
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                merged = dict(self._usage or {})
                merged.update({k: v for k, v in usage.items() if v is not None})
                self._usage = merged
                self.complete = True
        elif kind == "error":
            self.error = True

    @property
    def usage(self) -> Usage | None:
        """The usage seen so far, or None when the stream reported none."""
        return None if self._usage is None else usage_from_response(self._usage)


def _event_end(buffer: bytes) -> tuple[int, int] | None:
    """Find the end of the first complete SSE event: (end of event, start of the next)."""
    best: tuple[int, int] | None = None
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        at = buffer.find(sep)
        if at != -1 and (best is None or at < best[0]):
            best = (at, at + len(sep))
    return best


def _finish_stream(guard: CostGuard, ticket: Ticket, meter: SSEMeter) -> None:
    if meter.complete and not meter.error:
        guard.settle(ticket, meter.usage, meter.model)
    else:
        guard.settle_incomplete(ticket, meter.usage, meter.model)


def _metered_sync_stream(inner: Any, guard: CostGuard, ticket: Ticket) -> Any:
    import httpx2

    class MeteredStream(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            meter = self._meter
            for chunk in inner:
                meter.feed(chunk)
                yield chunk

        def close(self) -> None:
            try:
                inner.close()
            finally:
                _finish_stream(guard, ticket, self._meter)

        _meter = SSEMeter()

    return MeteredStream()


def _metered_async_stream(inner: Any, guard: CostGuard, ticket: Ticket) -> Any:
    import httpx2

    class MeteredStream(httpx2.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            meter = self._meter
            async for chunk in inner:
                meter.feed(chunk)
                yield chunk

        async def aclose(self) -> None:
            try:
                await inner.aclose()
            finally:
                _finish_stream(guard, ticket, self._meter)

        _meter = SSEMeter()

    return MeteredStream()


def _body_usage(content: bytes) -> tuple[Usage | None, str | None]:
    try:
        body = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
        return None, body.get("model") if isinstance(body, dict) else None
    return usage_from_response(body["usage"]), body.get("model")


def _is_sse(http_response: Any) -> bool:
    return "text/event-stream" in http_response.headers.get("content-type", "")


class _Middleware:
    """Shared logic of the sync and async middleware: admission before, settlement after."""

    def __init__(self, guard: Callable[[], CostGuard | None]) -> None:
        self._guard = guard

    def _admit(self, request: APIRequest) -> tuple[CostGuard, Ticket, APIRequest] | None:
        guard = self._guard()
        body = request.json
        if guard is None:
            return None
        if not is_messages_call(request.method, request.url, body):
            if not is_batch_creation(request.method, request.url, body):
                return None
            assert isinstance(body, dict)
            return guard, guard.begin_batch(body, retries=request.retries_taken), request
        assert isinstance(body, dict)
        ticket, sent = guard.begin(body, streamed=bool(body.get("stream")), retries=request.retries_taken)
        if sent is not body:
            request = request.copy(body=dict(sent))
        return guard, ticket, request


def _observe(guard: CostGuard, ticket: Ticket, http: Any, wrap: Callable[..., Any]) -> bool:
    """Settle or release what can be from the response's head; return whether its body must be read."""
    if not http.is_success:
        guard.release(ticket)
        return False
    if not ticket.streamed or not _is_sse(http):
        return True  # a JSON body: an unreadable one (an event stream nobody asked for) is charged its worst case
    if http.is_closed or http.is_stream_consumed:
        meter = SSEMeter()
        meter.feed(http.content)
        _finish_stream(guard, ticket, meter)
    else:
        http.stream = wrap(http.stream, guard, ticket)
    return False


def _reached_the_server(exc: BaseException) -> bool:
    """Return whether an attempt failed after its whole request was sent (so the API may have billed it)."""
    import httpx2

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx2.ReadTimeout, httpx2.ReadError, httpx2.RemoteProtocolError)):
            return True
        if isinstance(seen, httpx2.TransportError):
            return False  # could not connect, or could not finish sending: nothing to bill
        seen = seen.__cause__ or seen.__context__
    return False


def _end_failed_attempt(guard: CostGuard, ticket: Ticket, exc: BaseException) -> None:
    # A read timeout or a connection dropped before the reply came after the server had the request: it may
    # have generated (and billed) a reply nobody received, and the SDK's retry carries no idempotency key.
    # Charge its worst case, estimated, rather than let retried timeouts slip past the budget.
    if _reached_the_server(exc):
        guard.settle(ticket, None)
    else:
        guard.release(ticket)


def _parsed_usage(response: Any) -> tuple[Usage, str] | None:
    """Usage and model from the SDK's parse of the body: the SDK caches it, so its own parse is then free."""
    try:
        parsed = response.parse()
    except Exception:
        return None  # not a Message (or malformed): the raw body decides, as before
    usage, model = getattr(parsed, "usage", None), getattr(parsed, "model", None)
    if usage is None or not hasattr(usage, "__dict__") or not isinstance(model, str):
        return None
    fields = vars(usage)
    if fields.get("cache_creation") is not None or fields.get("server_tool_use") is not None:
        fields = dict(fields)
        for key in _NESTED_USAGE:
            nested = fields.get(key)
            if nested is not None and hasattr(nested, "__dict__"):
                fields[key] = vars(nested)
    return usage_from_response(fields), model


def _settle_body(guard: CostGuard, ticket: Ticket, content: bytes, response: Any = None) -> None:
    parsed = _parsed_usage(response) if response is not None else None
    if parsed is not None:
        guard.settle(ticket, parsed[0], parsed[1])
        return
    usage, model = _body_usage(content)
    # A 200 without readable usage (malformed, or usage missing) was billed something: charge the worst case.
    guard.settle(ticket, usage, model, estimated=usage is None)


def _make_middleware_class() -> type[Any]:
    from anthropic import Middleware

    class CostGuardMiddleware(_Middleware, Middleware):
        """Anthropic client middleware that meters Messages calls through a `CostGuard`."""

        def handle(self, request: APIRequest, call_next: Any) -> Any:
            admitted = self._admit(request)
            if admitted is None:
                return call_next(request)
            guard, ticket, request = admitted
            try:
                response = call_next(request)
            except BaseException as exc:
                _end_failed_attempt(guard, ticket, exc)
                raise
            http = response.http_response
            if _observe(guard, ticket, http, _metered_sync_stream):
                try:
                    content = http.read()
                except BaseException:
                    guard.settle_incomplete(ticket, None)
                    raise
                _settle_body(guard, ticket, content, response)
            return response

        async def handle_async(self, request: APIRequest, call_next: Any) -> Any:
            admitted = self._admit(request)
            if admitted is None:
                return await call_next(request)
            guard, ticket, request = admitted
            try:
                response = await call_next(request)
            except BaseException as exc:
                _end_failed_attempt(guard, ticket, exc)
                raise
            http = response.http_response
            if _observe(guard, ticket, http, _metered_async_stream):
                try:
                    content = await http.aread()
                except BaseException:
                    guard.settle_incomplete(ticket, None)
                    raise
                _settle_body(guard, ticket, content)
            return response

    return CostGuardMiddleware


_middleware_classes: dict[type[Any], type[Any]] = {}


def _middleware_class() -> type[Any]:
    from anthropic import Middleware

    # Keyed by the SDK's base class: a test harness may drop and re-import `anthropic`, and the SDK only
    # accepts middleware that is an instance of its current `Middleware`.
    cls = _middleware_classes.get(Middleware)
    if cls is None:
        cls = _middleware_classes[Middleware] = _make_middleware_class()
    return cls


def middleware_for(guard: CostGuard | Callable[[], CostGuard | None]) -> Any:
    """Return an Anthropic `Middleware` metering calls through `guard` (or the guard a callable returns).

    For applications: `anthropic.Anthropic(middleware=[middleware_for(guard)])`.
    """
    return _middleware_class()(_getter(guard))
