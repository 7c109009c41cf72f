"""Meter every Anthropic Messages call through the SDK's public client middleware.

`CostGuardMiddleware` runs once per HTTP attempt, inside the SDK's retry loop: it routes and admits the
attempt before it is sent, releases it when the attempt fails (4xx/5xx or no connection: not billed), and
settles it from the response's usage. A body the SDK has not read yet (a stream) is never read ahead of the
caller: its bytes are metered as they pass to the SDK, told apart by their content rather than their headers,
and the attempt is settled when the stream is closed, completely or not. The sync and async middleware are thin
shells around one core (`_Attempt`, `_BodyMeter`).

`install()` (from `patch.py`, re-exported here) makes every client the process builds carry the middleware,
without touching user code: it wraps the SDK's client constructors once `anthropic` is imported (by anyone, at
any time). This module is imported only when the first client is built, so an idle test run never loads it.
"""

from __future__ import annotations

import contextlib
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


_SSE_STARTS = (b"event:", b"data:", b"id:", b"retry:", b":")


class _BodyMeter:
    """Follow a successful response's body as it reaches the caller; settle the attempt when it ends.

    The body is told apart by its bytes, not its headers (mocks and cassettes often drop `content-type`): an
    event stream is metered event by event, anything else is kept and read as a JSON Message at the end.
    """

    __slots__ = ("_body", "_done", "_guard", "_kind", "_sse", "_ticket")

    def __init__(self, guard: CostGuard, ticket: Ticket) -> None:
        self._guard = guard
        self._ticket = ticket
        self._kind: str | None = None
        self._body: list[bytes] = []
        self._sse = SSEMeter()
        self._done = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body, as the caller gets them."""
        if self._kind is None:
            self._body.append(chunk)
            head = b"".join(self._body).lstrip()
            if not head:
                return  # only whitespace so far: undecided
            self._kind = "sse" if head.startswith(_SSE_STARTS) else "json"
            if self._kind == "sse":
                chunk, self._body = b"".join(self._body), []
            else:
                return
        if self._kind == "sse":
            self._sse.feed(chunk)
        else:
            self._body.append(chunk)

    def finish(self, parsed: tuple[Usage, str] | None = None) -> None:
        """Settle from what the body said (`parsed`: the SDK's own parse of a whole Message, when there is one)."""
        if self._done:
            return
        self._done = True
        guard, ticket = self._guard, self._ticket
        if self._kind == "sse":
            if ticket.streamed:
                _finish_stream(guard, ticket, self._sse)
            else:
                # An event stream nobody asked for: its usage is not guessed at, the call is charged its worst case.
                guard.settle(ticket, None)
            return
        if parsed is not None:
            guard.settle(ticket, parsed[0], parsed[1])
            return
        usage, model = _body_usage(b"".join(self._body))
        # A 200 without readable usage (malformed, cut, or usage missing) was billed something: charge the worst case.
        guard.settle(ticket, usage, model, estimated=usage is None)


_stream_classes: dict[str, type[Any]] = {}


def _metered_stream(inner: Any, meter: _BodyMeter, *, asynchronous: bool) -> Any:
    """Wrap an httpx2 byte stream so `meter` sees each chunk as the caller reads it, and the stream's end."""
    kind = "async" if asynchronous else "sync"
    cls = _stream_classes.get(kind)
    if cls is None:
        cls = _stream_classes[kind] = _make_stream_class(asynchronous)
    return cls(inner, meter)


def _make_stream_class(asynchronous: bool) -> type[Any]:
    import httpx2

    if asynchronous:

        class AsyncMeteredStream(httpx2.AsyncByteStream):
            def __init__(self, inner: Any, meter: _BodyMeter) -> None:
                self._inner, self._meter = inner, meter

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in self._inner:
                    self._meter.feed(chunk)
                    yield chunk

            async def aclose(self) -> None:
                try:
                    await self._inner.aclose()
                finally:
                    self._meter.finish()

        return AsyncMeteredStream

    class MeteredStream(httpx2.SyncByteStream):
        def __init__(self, inner: Any, meter: _BodyMeter) -> None:
            self._inner, self._meter = inner, meter

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._meter.feed(chunk)
                yield chunk

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._meter.finish()

    return MeteredStream


def _body_usage(content: bytes) -> tuple[Usage | None, str | None]:
    try:
        body = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
        return None, body.get("model") if isinstance(body, dict) else None
    return usage_from_response(body["usage"]), body.get("model")


def _reached_the_server(exc: BaseException) -> bool:
    """Return whether an attempt failed after its whole request was sent (so the API may have billed it)."""
    import httpx2

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # a chain can be a cycle (a re-raised side effect)
        seen.add(id(current))
        if isinstance(current, (httpx2.ReadTimeout, httpx2.ReadError, httpx2.RemoteProtocolError)):
            return True
        if isinstance(current, httpx2.TransportError):
            return False  # could not connect, or could not finish sending: nothing to bill
        current = current.__cause__ or current.__context__
    return False


def _parsed_usage(parsed: Any) -> tuple[Usage, str] | None:
    """Usage and model from the SDK's parse of the body: the SDK caches it, so its own parse is then free."""
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


class _Attempt:
    """One admitted HTTP attempt, whatever the client: the logic the sync and async middleware share."""

    __slots__ = ("guard", "request", "ticket")

    def __init__(self, guard: CostGuard, ticket: Ticket, request: APIRequest) -> None:
        self.guard = guard
        self.ticket = ticket
        self.request = request
        """The request to send (the body may be routed or marked cacheable)."""

    def failed(self, exc: BaseException) -> None:
        """End an attempt that raised instead of answering."""
        # A read timeout or a connection dropped before the reply came after the server had the request: it may
        # have generated (and billed) a reply nobody received, and the SDK's retry carries no idempotency key.
        # Charge its worst case, estimated, rather than let retried timeouts slip past the budget.
        if _reached_the_server(exc):
            self.guard.settle(self.ticket, None)
        else:
            self.guard.release(self.ticket)

    def answered(self, response: Any, *, asynchronous: bool) -> _BodyMeter | None:
        """Meter a response without reading it ahead of the caller.

        An error status is released at once (not billed). A body still unread (a stream, a streaming raw
        response) is wrapped and settled as the caller reads and closes it. A body already read (an ordinary
        call: the SDK reads it before middleware runs) is returned as a meter for the shell to `finish`, with
        the SDK's own parse when the call was not streamed.
        """
        http = getattr(response, "http_response", response)  # `cast_to=httpx2.Response` gives the bare response
        if not hasattr(http, "is_success"):
            self.guard.release(self.ticket)  # a value an inner middleware made: nothing reached the API
            return None
        if not http.is_success:
            self.guard.release(self.ticket)
            return None
        meter = _BodyMeter(self.guard, self.ticket)
        if not (http.is_stream_consumed or http.is_closed):
            http.stream = _metered_stream(http.stream, meter, asynchronous=asynchronous)
            return None
        with contextlib.suppress(Exception):  # closed unread: nothing to read, the worst case is charged
            meter.feed(http.content)
        if self.ticket.streamed:
            meter.finish()
            return None
        return meter


class _Middleware:
    """Shared logic of the sync and async middleware: admission before, settlement after."""

    def __init__(self, guard: Callable[[], CostGuard | None]) -> None:
        self._guard = guard

    def _admit(self, request: APIRequest) -> _Attempt | None:
        guard = self._guard()
        body = request.json
        if guard is None:
            return None
        if not is_messages_call(request.method, request.url, body):
            if not is_batch_creation(request.method, request.url, body):
                return None
            assert isinstance(body, dict)
            return _Attempt(guard, guard.begin_batch(body, retries=request.retries_taken), request)
        assert isinstance(body, dict)
        ticket, sent = guard.begin(body, streamed=bool(body.get("stream")), retries=request.retries_taken)
        if sent is not body:
            request = request.copy(body=dict(sent))
        return _Attempt(guard, ticket, request)


def _make_middleware_class() -> type[Any]:
    from anthropic import Middleware

    class CostGuardMiddleware(_Middleware, Middleware):
        """Anthropic client middleware that meters Messages calls through a `CostGuard`."""

        def handle(self, request: APIRequest, call_next: Any) -> Any:
            attempt = self._admit(request)
            if attempt is None:
                return call_next(request)
            try:
                response = call_next(attempt.request)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            meter = attempt.answered(response, asynchronous=False)
            if meter is not None:
                try:
                    parsed = response.parse()
                except Exception:
                    parsed = None  # not a Message (or malformed): the raw body decides; the SDK raises its own
                meter.finish(_parsed_usage(parsed))
            return response

        async def handle_async(self, request: APIRequest, call_next: Any) -> Any:
            attempt = self._admit(request)
            if attempt is None:
                return await call_next(request)
            try:
                response = await call_next(attempt.request)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            meter = attempt.answered(response, asynchronous=True)
            if meter is not None:
                try:
                    parsed = await response.parse()
                except Exception:
                    parsed = None  # not a Message (or malformed): the raw body decides; the SDK raises its own
                meter.finish(_parsed_usage(parsed))
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
