"""Meter every Anthropic Messages call through the SDK's public client middleware.

`CostGuardMiddleware` runs once per HTTP attempt, inside the SDK's retry loop: it routes and admits the
attempt before it is sent, releases it when the attempt fails (4xx/5xx or no connection: not billed), and
settles it from the response's usage. A body the SDK has not read yet (a stream) is never read ahead of the
caller: its bytes are metered as they pass to the SDK, told apart by their content rather than their headers,
and the attempt is settled when the stream is closed, completely or not. The sync and async middleware are thin
shells around one core (`_Attempt`, `_BodyMeter`).

Which requests are metered is decided by their path as sent (`endpoint_kind`) and their body as sent
(`request_body`: `body=`, or raw `content=` holding JSON): Messages calls and batch creations are bounded and
metered, known free endpoints pass, and a POST nothing bounds (an endpoint not known to be free, a body that
cannot be read) goes to `CostGuard.begin_unbounded`: refused under a budget, recorded unpriced without one.

`install()` (from `patch.py`, re-exported here) makes every client the process builds carry the middleware,
without touching user code: it wraps the SDK's client constructors once `anthropic` is imported (by anyone, at
any time). This module is imported only when the first client is built, so an idle test run never loads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ...core.budget import refusal_frame
from ...core.pricing import Usage, usage_from_response
from ...domain.records import endpoint_label
from .._common import BodyTap, getter, metered_stream, reached_the_server
from .batch_results import batch_id_of, results_batch_id, watch_results
from .patch import install, is_installed, prepare, uninstall
from .preflight import Counted, count, count_async

if TYPE_CHECKING:
    from anthropic import APIRequest

    from ...metering.guard import CostGuard, Plan, Ticket
    from ...replay.store import Tape

__all__ = [
    "SSEMeter",
    "endpoint_kind",
    "endpoint_path",
    "install",
    "is_installed",
    "middleware_for",
    "prepare",
    "request_body",
    "uninstall",
]

_NESTED_USAGE = ("cache_creation", "server_tool_use")

MESSAGES, BATCH, FREE, UNKNOWN = "messages", "batch", "free", "unknown"
"""What a request is to the meter: a Messages call, a Message Batch creation, free, or an endpoint it does not know."""

_KNOWN: dict[tuple[str, ...], str] = {
    ("messages",): MESSAGES,
    ("messages", "batches"): BATCH,
    ("messages", "count_tokens"): FREE,
}
_FREE_TREES = ("models", "files")
"""Endpoints under these never bill (the Models API, the Files API: uploads are not charged)."""


def endpoint_path(url: str) -> str:
    """The path a request URL reaches, as the SDK sends it: no scheme, host, query or fragment; dot segments
    resolved, percent-escapes decoded, repeated and trailing slashes dropped."""
    import httpx2

    parsed = httpx2.URL(url)
    if parsed.is_relative_url:  # the SDK appends it to the base URL; parsed whole, its dot segments resolve
        parsed = httpx2.URL("https://base.invalid/" + url.lstrip("/"))
    return "/" + "/".join(part for part in parsed.path.split("/") if part)


def endpoint_kind(method: str, url: str) -> str:
    """Classify an outgoing request: `MESSAGES`, `BATCH`, `FREE` (every request but a POST, and the known
    free POSTs) or `UNKNOWN` (a POST to an endpoint the meter does not know, which may bill)."""
    if method.upper() != "POST":
        return FREE  # the API bills what a POST asks it to generate; reads and deletes cost nothing
    kind = _kinds.get(url)
    if kind is None:
        kind = _classify(endpoint_path(url))
        if len(_kinds) < 1024:  # a client calls a handful of URLs; don't grow without bound
            _kinds[url] = kind
    return kind


_kinds: dict[str, str] = {}


def _classify(path: str) -> str:
    segments = path.split("/")[1:]
    if "v1" in segments:  # what follows the API version (a gateway may put a prefix before it)
        segments = segments[len(segments) - segments[::-1].index("v1") :]
    kind = _KNOWN.get(tuple(segments))
    if kind is not None:
        return kind
    if segments and segments[0] in _FREE_TREES:
        return FREE
    if len(segments) == 4 and segments[:2] == ["messages", "batches"] and segments[3] == "cancel":
        return FREE
    return UNKNOWN


def is_free_endpoint(path: str, patterns: tuple[str, ...]) -> bool:
    """Return whether the user declared `path` free (`llm_free_endpoints`: glob patterns, `*` spans slashes)."""
    import fnmatch

    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _declare_free(path: str) -> str:
    return (
        f"If it never bills, declare it free: `llm_free_endpoints = {path}` in the ini file, or "
        f"--llm-free-endpoint={path} (`*` in a pattern matches any part of a path, e.g. /v1/sessions/*)"
    )


_READABLE_ADVICE = "Send its body as `body=` (a dict) or as `content=` bytes of one JSON object: those are metered"


class _Unreadable(Exception):
    """A request body the meter cannot read before it is sent (the message says why)."""


def request_body(request: APIRequest) -> tuple[dict[str, Any] | None, bool]:
    """The JSON object a request sends, and whether it came as raw `content=` bytes.

    `(None, False)` when it sends no body at all. Raises `_Unreadable` when it sends one that cannot be read
    without consuming it, or that is not a JSON object.
    """
    body = request.json
    if isinstance(body, dict):
        return body, False
    if body is not None:
        raise _Unreadable("its JSON body is not an object")
    options = request.options
    if options.files:
        raise _Unreadable("its body is multipart form data")
    content = options.content
    if content is None:
        return None, False
    raw = _content_bytes(content)
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise _Unreadable("its `content=` body is not JSON") from None
    if not isinstance(parsed, dict):
        raise _Unreadable("its `content=` body is not a JSON object")
    return parsed, True


def _content_bytes(content: Any) -> bytes | str:
    """Read raw `content=` without consuming it: bytes, text, a list of chunks, or a seekable file."""
    if isinstance(content, (bytes, str)):
        return content
    if isinstance(content, (bytearray, memoryview)):
        return bytes(content)
    if isinstance(content, (list, tuple)) and all(isinstance(chunk, (bytes, bytearray)) for chunk in content):
        return b"".join(content)
    seekable = getattr(content, "seekable", None)
    if callable(seekable) and seekable() and hasattr(content, "read"):
        at = content.tell()
        try:
            data = content.read()
        finally:
            content.seek(at)  # the SDK reads it again from where the caller left it
        if isinstance(data, (bytes, str)):
            return data
    raise _Unreadable("its `content=` body is a stream the meter cannot read before it is sent")


def _with_body(request: APIRequest, body: Mapping[str, Any], *, raw: bool) -> APIRequest:
    """The same request sending `body` (routed or made cacheable) as JSON."""
    changed = request.copy(body=dict(body))
    # `body` already holds what `extra_body` and raw `content=` said: the SDK must not merge or send them again.
    changed.options.extra_json = None
    if raw:
        changed.options.content = None
    return changed


class SSEMeter:
    """Follow a Messages SSE stream's bytes and keep the usage it reports.

    `message_start` carries the input and cache counts; `message_delta` carries the cumulative output count
    (overwrite, never add). The stream is complete only once `message_delta` has arrived.

    Only the events that can carry usage (or an error) are parsed: each chunk is cut at its last complete
    event, and that stretch is searched for the names `message_start`, `message_delta` and `error` before
    anything is decoded. A content delta (most of a stream) is never split into events nor handed to
    `json.loads`; one whose text happens to contain such a name is parsed and then ignored by its `type`.
    The incomplete tail of a chunk is the only thing kept between chunks.
    """

    __slots__ = ("_tail", "_usage", "complete", "error", "model")

    def __init__(self) -> None:
        self._tail = bytearray()
        self._usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.complete = False
        self.error = False

    def feed(self, chunk: bytes) -> None:
        """Consume raw bytes of the stream."""
        tail = self._tail
        if tail:
            # An event began in an earlier chunk (or a separator may straddle the two): join them once.
            tail += chunk
            data: bytes | bytearray = tail
        elif chunk.endswith(b"\n\n") and chunk.find(b"message_") == -1 and chunk.find(b"error") == -1:
            return  # whole events, none of them read (most chunks: a server flushes one content delta each)
        else:
            data = chunk
        end, rest = _last_event_end(data)
        if end < 0:
            if data is chunk:
                tail += chunk
            return
        if _wanted_at(data, 0, end) != -1:
            self._scan(data, end)
        if data is chunk:
            if rest < len(chunk):
                tail += memoryview(chunk)[rest:]
        else:
            del tail[:rest]

    def _scan(self, data: bytes | bytearray, end: int) -> None:
        """Parse each complete event of `data[:end]` that names an event type carrying usage (or an error)."""
        pos = 0
        while (at := _wanted_at(data, pos, end)) != -1:
            start = max(data.rfind(b"\n\n", 0, at), data.rfind(b"\r\r", 0, at), data.rfind(b"\r\n\r\n", 0, at))
            pos = _event_end_after(data, at, end)
            self._on_event(bytes(data[max(start, 0) : pos]))

    def _on_event(self, raw: bytes) -> None:
        at = raw.find(b"data:")
        if at == -1:
            return
        if raw.find(b"data:", at + 5) == -1 and (at == 0 or raw[at - 1] in b"\r\n"):
            # One data line, as the API sends: its value runs to the end of the line.
            end = len(raw)
            for newline in (b"\n", b"\r"):
                found = raw.find(newline, at + 5, end)
                if found != -1:
                    end = found
            data = raw[at + 5 : end].lstrip(b" ")
        else:
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


_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_USAGE_EVENTS = (b"start", b"delta")


def _wanted_at(data: bytes | bytearray, pos: int, end: int) -> int:
    """Return where `data[pos:end]` first names `message_start`, `message_delta` or `error`, or -1.

    Two `find`s over the bytes and nothing decoded: the meter's whole cost for an event it does not read.
    """
    error = data.find(b"error", pos, end)
    limit = end if error == -1 else error
    at = data.find(b"message_", pos, limit)
    while at != -1:
        if data[at + 8 : at + 13] in _USAGE_EVENTS:
            return at
        at = data.find(b"message_", at + 8, limit)
    return error


def _last_event_end(data: bytes | bytearray) -> tuple[int, int]:
    """Find where the last complete SSE event of `data` ends: (its separator's start, what follows), or (-1, 0)."""
    # The usual chunk holds whole events, as a server flushes them: no search.
    if data.endswith(b"\n\n"):
        return len(data) - 2, len(data)
    if data.endswith(b"\r\n\r\n"):
        return len(data) - 4, len(data)
    end, rest = -1, 0
    for sep in _SEPARATORS:
        at = data.rfind(sep)
        if at != -1 and at + len(sep) > rest:
            end, rest = at, at + len(sep)
    return end, rest


def _event_end_after(data: bytes | bytearray, pos: int, end: int) -> int:
    """Return where the event holding offset `pos` ends (its separator's start), at most `end`."""
    at = data.find(b"\n\n", pos, end)
    if at != -1:
        end = at
    if data.find(b"\r", pos, end) != -1:  # CR line ends (rare): look for their separators too
        for sep in (b"\r\n\r\n", b"\r\r"):
            at = data.find(sep, pos, end)
            if at != -1:
                end = at
    return end


def _finish_stream(guard: CostGuard, ticket: Ticket, meter: SSEMeter) -> None:
    if meter.complete and not meter.error:
        guard.settle(ticket, meter.usage, meter.model)
    else:
        guard.settle_incomplete(ticket, meter.usage, meter.model)


class _BodyMeter(BodyTap):
    """Follow a successful response's body as it reaches the caller; settle the attempt when it ends.

    The body is told apart by its bytes, not its headers (mocks and cassettes often drop `content-type`): an
    event stream is metered event by event, anything else is kept and read as a JSON Message at the end.
    """

    __slots__ = ()

    def __init__(self, guard: CostGuard, ticket: Ticket) -> None:
        super().__init__(guard, ticket, SSEMeter())

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


def _body_usage(content: bytes) -> tuple[Usage | None, str | None]:
    try:
        body = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
        return None, body.get("model") if isinstance(body, dict) else None
    return usage_from_response(body["usage"]), body.get("model")


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

    __slots__ = ("guard", "request", "tape", "ticket")

    def __init__(self, guard: CostGuard, ticket: Ticket | None, request: APIRequest, tape: Tape | None = None) -> None:
        self.guard = guard
        self.ticket = ticket
        """None for a call that is not metered (recorded and replayed all the same when its test has a tape)."""
        self.request = request
        """The request to send (the body may be routed or marked cacheable)."""
        self.tape = tape
        """The running test's cassette (`--llm-record`), or None."""

    def tap(self, call_next: Any, *, asynchronous: bool) -> Any:
        """What sends the attempt: `call_next` itself, unless its test records or replays (`replay.tapped`)."""
        if self.tape is None:
            return call_next
        from .replay import tapped

        return tapped(self, call_next, asynchronous=asynchronous)

    def failed(self, exc: BaseException) -> None:
        """End an attempt that raised instead of answering."""
        # A read timeout or a connection dropped before the reply came after the server had the request: it may
        # have generated (and billed) a reply nobody received, and the SDK's retry carries no idempotency key.
        # Charge its worst case, estimated, rather than let retried timeouts slip past the budget.
        if self.ticket is None:
            return
        if reached_the_server(exc):
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
        if self.ticket is None:
            return None
        http = getattr(response, "http_response", response)  # `cast_to=httpx2.Response` gives the bare response
        # No `is_success` at all: a value an inner middleware made, nothing reached the API. (Read once: it is a
        # property, which `hasattr` would compute too.)
        if not getattr(http, "is_success", False):
            self.guard.release(self.ticket)
            return None
        if self.ticket.batch:
            # A batch is held at its worst case until its results are read (`batch_results.py`). A replayed
            # one holds nothing and costs $0; its recorded results, read back, say what replay saved.
            read = http.is_stream_consumed or http.is_closed
            self.guard.batch_created(self.ticket, batch_id_of(http) if read else None)
            return None
        meter = _BodyMeter(self.guard, self.ticket)
        if not (http.is_stream_consumed or http.is_closed):
            http.stream = metered_stream(http.stream, meter, asynchronous=asynchronous)
            return None
        try:  # noqa: SIM105 (`contextlib.suppress` is three Python calls more, on every call)
            meter.feed(http.content)
        except Exception:
            pass  # closed unread: nothing to read, the worst case is charged
        if self.ticket.streamed:
            meter.finish()
            return None
        return meter


class _Middleware:
    """Shared logic of the sync and async middleware: admission before, settlement after."""

    def __init__(self, guard: Callable[[], CostGuard | None], *, sole: bool = False) -> None:
        self._guard = guard
        self._sole = sole
        """The client has no other middleware: without ours, the SDK would not take its middleware path at all."""

    def _plan(self, request: APIRequest) -> _Attempt | _Planned | _PlannedBatch | None:
        """Admit a batch creation (or plan it, when some of its requests are to be counted first); plan a Messages
        call (its preflight comes next); else None."""
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        guard = self._guard()
        if guard is None:
            return None
        kind = endpoint_kind(request.method, request.url)
        tape = guard.tapes.tape_for(guard.scope.tag) if guard.tapes is not None else None
        replay = tape is not None and tape.replays  # reserved only if no recording answers it (`replay.tapped`)
        unmetered = None if tape is None else _Attempt(guard, None, request, tape)  # recorded, not metered
        if kind == FREE:
            return unmetered
        retries = request.retries_taken
        if kind == UNKNOWN:
            path = endpoint_path(request.url)
            if is_free_endpoint(path, guard.config.free_endpoints):
                return unmetered
            why = "pytest-costguard does not know whether this endpoint bills, nor how much"
            ticket = guard.begin_unbounded(endpoint_label(path), why, advice=_declare_free(path), retries=retries)
            return _Attempt(guard, ticket, request)
        try:
            body, raw = request_body(request)
        except _Unreadable as exc:
            label = endpoint_label(endpoint_path(request.url))
            ticket = guard.begin_unbounded(label, str(exc), advice=_READABLE_ADVICE, retries=retries)
            return _Attempt(guard, ticket, request)
        if body is None:
            return unmetered  # no body: the API rejects it unbilled
        if body.get("model") == "":
            # No model to price nor to bill: the SDK (Vertex, Bedrock: a ValueError naming `model`) or the API (a
            # 400) rejects it unbilled; refusing it here would replace the SDK's own error with ours.
            return unmetered
        if kind == BATCH:
            if "requests" not in body:
                return unmetered  # creates nothing: the API rejects it unbilled
            wanted = guard.batch_preflight(body, replay=replay)
            if wanted:
                return _PlannedBatch(guard, request, body, wanted, tape, replay)
            return _Attempt(guard, guard.begin_batch(body, retries=retries, replay=replay), request, tape)
        return _Planned(guard, guard.plan(body, replay=replay), request, body, raw, tape, replay)

    def _admit_planned(self, planned: _Planned, counted: Counted | None = None) -> _Attempt:
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        guard, plan, request, body, raw, tape, replay = planned
        sent = plan.body
        ticket = guard.admit(
            plan,
            streamed=bool(sent.get("stream")),
            retries=request.retries_taken,
            counted=counted if isinstance(counted, int) else None,
            preflight_failure=counted if isinstance(counted, str) else None,
            replay=replay,
        )
        if sent is not body:
            request = _with_body(request, sent, raw=raw)
        return _Attempt(guard, ticket, request, tape)

    def _admit_batch(self, planned: _PlannedBatch, counted: Mapping[str, Counted]) -> _Attempt:
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        guard, request, body, _, tape, replay = planned
        ticket = guard.begin_batch(body, retries=request.retries_taken, replay=replay, counted=counted)
        return _Attempt(guard, ticket, request, tape)

    def _results_reader(self, request: APIRequest) -> tuple[CostGuard, str] | None:
        """The guard and batch id when `request` reads the results of a batch the guard holds for."""
        batch_id = results_batch_id(request.method, request.url)
        guard = self._guard() if batch_id is not None else None
        if guard is None or batch_id is None or not guard.reads_batch(batch_id):
            return None
        return guard, batch_id


def _status_checked(request: APIRequest, *, asynchronous: bool) -> APIRequest:
    """The request asking for the SDK's response wrapper where it asks for the bare `httpx2.Response`.

    With any middleware the SDK takes its middleware path (`_base_client.SyncAPIClient._request`), where the
    base handler's `_process_response` hands back a bare `httpx2.Response` for `cast_to=httpx2.Response` even
    for an error status, and the SDK returns a value that is not an `APIResponse` as it is: a 5xx is not retried
    and a 4xx not raised, as they are with no middleware (a no-op middleware does the same). Asked for
    `APIResponse[httpx2.Response]` instead, the base handler returns the wrapper, whose status the SDK checks
    (retry, `APIStatusError`) as it does with no middleware, and whose `parse()` gives the caller the bare
    response. Only for the middleware a client carries alone (`sole`): with user middleware the SDK takes that
    path without ours too, and theirs must see what it would. Not for a streamed call or one with a
    `post_parser` (the wrapper's `parse()` would treat those otherwise than the SDK's plain path).
    """
    import httpx2

    if request.cast_to is not httpx2.Response or request.stream:
        return request  # most calls: decided before the from-import below (importlib's Python `_handle_fromlist`)
    from anthropic import APIRequest, APIResponse, AsyncAPIResponse, NotGiven

    if not isinstance(request.options.post_parser, NotGiven):
        return request
    wrapper = AsyncAPIResponse if asynchronous else APIResponse
    return APIRequest(
        options=request.options,
        cast_to=wrapper[httpx2.Response],
        stream=request.stream,
        stream_cls=request.stream_cls,
        retries_taken=request.retries_taken,
    )


class _Planned(NamedTuple):
    """A Messages call routed and bounded, waiting for its preflight count (when its plan asks for one)."""

    guard: CostGuard
    plan: Plan
    request: APIRequest
    body: Mapping[str, Any]
    """The body as the caller sent it (`plan.body` is what goes out: routed, maybe marked cacheable)."""
    raw: bool
    """The body came as raw `content=` bytes (`request_body`)."""
    tape: Tape | None
    """The running test's cassette, or None."""
    replay: bool
    """A recording may answer it: nothing is reserved unless none does."""


class _PlannedBatch(NamedTuple):
    """A Message Batch creation waiting for the exact counts of some of its requests (`CostGuard.batch_preflight`).

    The counts are made one after another, each as one preflight is: the count endpoint is rate-limited on
    its own, and a batch of thousands of requests must not burst thousands of counts at once.
    """

    guard: CostGuard
    request: APIRequest
    body: Mapping[str, Any]
    wanted: list[tuple[str, Mapping[str, Any]]]
    """The requests to count: (custom_id, params)."""
    tape: Tape | None
    """The running test's cassette, or None."""
    replay: bool
    """A recording may answer it: nothing is reserved unless none does."""


def _make_middleware_class() -> type[Any]:
    from anthropic import Middleware

    class CostGuardMiddleware(_Middleware, Middleware):
        """Anthropic client middleware that meters Messages calls through a `CostGuard`."""

        def handle(self, request: APIRequest, call_next: Any) -> Any:
            __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
            if self._sole:
                request = _status_checked(request, asynchronous=False)
            planned = self._plan(request)
            reader = self._results_reader(request)  # None but for a GET of results (free: sent unmetered)
            if planned is None:
                response = call_next(request)
                if reader is not None:
                    watch_results(*reader, response, asynchronous=False)
                return response
            if isinstance(planned, _Attempt):
                attempt = planned
            elif isinstance(planned, _PlannedBatch):
                counts = {custom_id: count(request, params, call_next) for custom_id, params in planned.wanted}
                attempt = self._admit_batch(planned, counts)
            else:
                body = planned.plan.body
                counted = count(request, body, call_next) if planned.plan.preflight else None
                attempt = self._admit_planned(planned, counted)
            call_next = attempt.tap(call_next, asynchronous=False)
            try:
                response = call_next(attempt.request)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            if reader is not None:  # results read under a tape (recorded or replayed): they settle the batch too
                watch_results(*reader, response, asynchronous=False)
            meter = attempt.answered(response, asynchronous=False)
            if meter is not None:
                try:
                    parsed = response.parse()
                except Exception:
                    parsed = None  # not a Message (or malformed): the raw body decides; the SDK raises its own
                meter.finish(_parsed_usage(parsed))
            return response

        async def handle_async(self, request: APIRequest, call_next: Any) -> Any:
            __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
            if self._sole:
                request = _status_checked(request, asynchronous=True)
            planned = self._plan(request)
            reader = self._results_reader(request)  # None but for a GET of results (free: sent unmetered)
            if planned is None:
                response = await call_next(request)
                if reader is not None:
                    watch_results(*reader, response, asynchronous=True)
                return response
            if isinstance(planned, _Attempt):
                attempt = planned
            elif isinstance(planned, _PlannedBatch):
                counts = {}
                for custom_id, params in planned.wanted:  # one at a time (`_PlannedBatch`)
                    counts[custom_id] = await count_async(request, params, call_next)
                attempt = self._admit_batch(planned, counts)
            else:
                body = planned.plan.body
                counted = await count_async(request, body, call_next) if planned.plan.preflight else None
                attempt = self._admit_planned(planned, counted)
            call_next = attempt.tap(call_next, asynchronous=True)
            try:
                response = await call_next(attempt.request)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            if reader is not None:  # results read under a tape (recorded or replayed): they settle the batch too
                watch_results(*reader, response, asynchronous=True)
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
    # `import anthropic`, not `from anthropic import Middleware`: a from-import of a package runs importlib's
    # `_handle_fromlist` (Python code) every time, and this runs on every call of every client.
    import anthropic

    # Keyed by the SDK's base class: a test harness may drop and re-import `anthropic`, and the SDK only
    # accepts middleware that is an instance of its current `Middleware`.
    cls = _middleware_classes.get(anthropic.Middleware)
    if cls is None:
        cls = _middleware_classes[anthropic.Middleware] = _make_middleware_class()
    return cls


def middleware_for(guard: CostGuard | Callable[[], CostGuard | None]) -> Any:
    """Return an Anthropic `Middleware` metering calls through `guard` (or the guard a callable returns).

    For applications: `anthropic.Anthropic(middleware=[middleware_for(guard)])`.
    """
    return _middleware_class()(getter(guard))
