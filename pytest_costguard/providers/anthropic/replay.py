"""The Anthropic edge of record and replay: SDK requests and responses to cassette interactions and back.

The middleware (`middleware.py`) admits each attempt first (routed, and with nothing reserved when a tape may
answer it); `tapped` then decides, by the body that would go on the wire: a recording answers it (the SDK
gets a response built from the cassette and nothing is sent), or it is sent and recorded (reserved like any
live call, its bytes kept as they pass to the SDK, as the stream meter sees them), or it is refused before
it is sent (`--llm-record=none`, or a `once` cassette without it).

The SDK offers middleware no public way to build a response, so a replayed one is made as the SDK makes its
own: an `APIResponse` over an `httpx2.Response`, bound to a stand-in client that never sends anything (the
client lends the SDK's own parsing: models, stream decoding, error mapping).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ...domain.request import content_text
from ...replay.cassette import Interaction, body_bytes, now, stored_body
from ...replay.redaction import redact_body, redact_headers

if TYPE_CHECKING:
    from anthropic import APIRequest

    from ...replay.store import Tape

__all__ = ["describe_call", "record_failure", "replayed_response", "tapped", "wire_path"]

PROVIDER = "anthropic"
_REPLAY_BASE_URL = "http://costguard-replay.invalid"
"""Where replayed responses say they came from: no host, and nothing is ever sent there."""
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_VOLATILE_RESPONSE = (
    "date",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
    "server",
    "via",
    "alt-svc",
    "cf-ray",
    "cf-cache-status",
)
"""Response headers a replay must not repeat (the body is stored decoded) or that differ on every call."""
_VOLATILE_REQUEST = ("content-length", "host", "accept-encoding", "connection", "user-agent", "idempotency-key")


def wire_path(url: str) -> str:
    """The path and query of a request's URL (relative, as the SDK gives it, or absolute)."""
    if "://" in url:
        import httpx2

        parsed = httpx2.URL(url)
        query = parsed.query.decode()
        return parsed.path + (f"?{query}" if query else "")
    return url if url.startswith("/") else f"/{url}"


def describe_call(body: Any) -> str:
    """Name a call for a person: its model and the first line of its last user turn."""
    if not isinstance(body, dict):
        return "a request"
    model = body.get("model") or "unknown model"
    prompt = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            prompt = content_text(message.get("content")).strip()
            break
    first = prompt.splitlines()[0] if prompt else ""
    if len(first) > 80:
        first = first[:77] + "..."
    return f"a {model} call (prompt: {first!r})" if first else f"a {model} call"


def tapped(attempt: Any, call_next: Callable[[APIRequest], Any], *, asynchronous: bool) -> Callable[..., Any]:
    """What sends `attempt` when its test has a tape: a replay, a recording `call_next`, or a refusal (raised)."""
    tape: Tape = attempt.tape
    request = attempt.request
    method, path, body = request.method.upper(), wire_path(request.url), request.json
    found = tape.take(method, path, body)
    guard, ticket = attempt.guard, attempt.ticket
    if found is not None:
        if asynchronous:

            async def replay_async(req: APIRequest) -> Any:
                return replayed_response(req, found, asynchronous=True)

            return replay_async
        return lambda req: replayed_response(req, found, asynchronous=False)
    if not tape.records:
        if ticket is not None:
            guard.forget(ticket)
        raise tape.refuse(describe_call(body), (method, path, body))
    if ticket is not None:
        guard.hold(ticket)  # sent live after all: reserved like any call (refused here if it does not fit)
    if asynchronous:

        async def record_async(req: APIRequest) -> Any:
            try:
                response = await call_next(req)
            except BaseException as exc:
                record_failure(tape, req, exc)
                raise
            _record(tape, req, response, asynchronous=True)
            return response

        return record_async

    def record(req: APIRequest) -> Any:
        try:
            response = call_next(req)
        except BaseException as exc:
            record_failure(tape, req, exc)
            raise
        _record(tape, req, response, asynchronous=False)
        return response

    return record


# -- recording ---------------------------------------------------------------------------------------------
def _interaction(
    request: APIRequest,
    *,
    status: int | None,
    content: bytes = b"",
    headers: Any = (),
    wire_headers: Any = (),
    error: dict[str, str] | None = None,
) -> Interaction:
    return Interaction(
        method=request.method.upper(),
        path=wire_path(request.url),
        body=redact_body(request.json),
        status=status,
        response=stored_body(content) if status is not None else {},
        headers=redact_headers(headers, drop=_VOLATILE_RESPONSE) if status is not None else {},
        request_headers=redact_headers(wire_headers, drop=_VOLATILE_REQUEST),
        error=error,
        provider=PROVIDER,
        recorded_at=now(),
    )


def _error_of(exc: BaseException, *, kind: str | None = None) -> dict[str, str]:
    """How a transport failed, by the httpx2 error behind it (the SDK wraps it in its own)."""
    import httpx2

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx2.TransportError):
            if kind is None:
                kind = "timeout" if isinstance(current, httpx2.TimeoutException) else "connect"
            return {"kind": kind, "type": type(current).__name__, "message": str(current)}
        current = current.__cause__ or current.__context__
    return {"kind": kind or "connect", "type": type(exc).__name__, "message": str(exc)}


def record_failure(tape: Tape, request: APIRequest, exc: BaseException) -> None:
    """Record an attempt that got no response (refused connection, timeout), so a replay fails the same way."""
    import httpx2

    if not isinstance(exc, Exception) or not any(isinstance(e, httpx2.TransportError) for e in _chain(exc)):
        return  # not the network's doing (a refusal, a bug): nothing to replay
    tape.add(_interaction(request, status=None, error=_error_of(exc)))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _record(tape: Tape, request: APIRequest, response: Any, *, asynchronous: bool) -> None:
    http = response.http_response
    wire = http.request.headers.multi_items()
    if http.is_stream_consumed or http.is_closed:
        try:
            content = http.content
        except Exception:  # closed unread: nothing to keep but the status
            content = b""
        tape.add(
            _interaction(
                request, status=http.status_code, content=content, headers=http.headers.multi_items(), wire_headers=wire
            )
        )
        return
    chunks: list[bytes] = []

    def ended(error: BaseException | None) -> None:
        tape.add(
            _interaction(
                request,
                status=http.status_code,
                content=b"".join(chunks),
                headers=http.headers.multi_items(),
                wire_headers=wire,
                error=None if error is None else _error_of(error, kind="read"),
            )
        )

    http.stream = _recording_stream(http.stream, chunks, ended, asynchronous=asynchronous)


_stream_classes: dict[str, type[Any]] = {}


def _recording_stream(
    inner: Any, chunks: list[bytes], ended: Callable[[BaseException | None], None], *, asynchronous: bool
) -> Any:
    kind = "async" if asynchronous else "sync"
    cls = _stream_classes.get(kind)
    if cls is None:
        cls = _stream_classes[kind] = _make_recording_stream(asynchronous)
    return cls(inner, chunks, ended)


def _make_recording_stream(asynchronous: bool) -> type[Any]:
    import httpx2

    class _Ending:
        def __init__(self, inner: Any, chunks: list[bytes], ended: Callable[[BaseException | None], None]) -> None:
            self._inner, self._chunks, self._ended = inner, chunks, ended
            self._error: BaseException | None = None
            self._done = False

        def _end(self) -> None:
            if not self._done:
                self._done = True
                self._ended(self._error)

    if asynchronous:

        class AsyncRecordingStream(_Ending, httpx2.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                try:
                    async for chunk in self._inner:
                        self._chunks.append(chunk)
                        yield chunk
                except httpx2.TransportError as exc:
                    self._error = exc
                    raise

            async def aclose(self) -> None:
                try:
                    await self._inner.aclose()
                finally:
                    self._end()

        return AsyncRecordingStream

    class RecordingStream(_Ending, httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self._inner:
                    self._chunks.append(chunk)
                    yield chunk
            except httpx2.TransportError as exc:
                self._error = exc
                raise

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._end()

    return RecordingStream


# -- replaying ---------------------------------------------------------------------------------------------
_standins: dict[tuple[type[Any], bool], Any] = {}


def _standin(asynchronous: bool) -> Any:
    """A client that lends replayed responses the SDK's parsing; it never sends a request."""
    import anthropic

    key = (anthropic.Anthropic, asynchronous)
    client = _standins.get(key)
    if client is None:
        cls = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
        client = _standins[key] = cls(api_key="costguard-replay", base_url=_REPLAY_BASE_URL, max_retries=0)
    return client


def _transport_error(error: Mapping[str, str]) -> Exception:
    import httpx2

    cls = getattr(httpx2, error.get("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, httpx2.TransportError)):
        cls = {"timeout": httpx2.ReadTimeout, "read": httpx2.RemoteProtocolError}.get(
            error.get("kind", ""), httpx2.ConnectError
        )
    return cls(error.get("message") or "replayed transport failure")


def _replay_stream(content: bytes, error: Mapping[str, str] | None, *, asynchronous: bool) -> Any:
    import httpx2

    # In pieces of an event or so, as a server sends them, so a reader that stops early stops mid-stream.
    pieces = [content[i : i + 512] for i in range(0, len(content), 512)]

    if asynchronous:

        class AsyncReplayStream(httpx2.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                for piece in pieces:
                    yield piece
                if error is not None:
                    raise _transport_error(error)

        return AsyncReplayStream()

    class ReplayStream(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from pieces
            if error is not None:
                raise _transport_error(error)

    return ReplayStream()


def replayed_response(request: APIRequest, interaction: Interaction, *, asynchronous: bool) -> Any:
    """The SDK response a recording stands for, as `call_next` would have returned it (or its failure, raised)."""
    import anthropic
    import httpx2

    http_request = httpx2.Request(request.method, _REPLAY_BASE_URL + wire_path(request.url))
    if interaction.status is None:
        error = interaction.error or {}
        cause = _transport_error(error)
        if error.get("kind") == "timeout":
            raise anthropic.APITimeoutError(request=http_request) from cause
        raise anthropic.APIConnectionError(request=http_request) from cause
    content = body_bytes(interaction.response)
    headers = dict(interaction.headers)
    options = request.options
    given = options.headers if isinstance(options.headers, dict) else {}
    streamed = bool(request.stream) or given.get(_RAW_RESPONSE_HEADER) == "stream"
    if streamed or interaction.error is not None:
        raw = httpx2.Response(
            interaction.status,
            headers=headers,
            stream=_replay_stream(content, interaction.error, asynchronous=asynchronous),
            request=http_request,
        )
    else:
        raw = httpx2.Response(interaction.status, headers=headers, content=content, request=http_request)
    response_cls = anthropic.AsyncAPIResponse if asynchronous else anthropic.APIResponse
    return response_cls(
        raw=raw,
        cast_to=request.cast_to,
        client=_standin(asynchronous),
        stream=bool(request.stream),
        stream_cls=request.stream_cls,
        options=options,
        retries_taken=request.retries_taken,
    )


# -- reading recordings back ---------------------------------------------------------------------------------
def recorded_usage(interaction: Interaction) -> tuple[Any, str] | None:
    """The usage and model a recorded Messages reply reports (`costguard cassettes` prices it), or None."""
    from ...domain.records import usage_from_response

    if interaction.status is None or not 200 <= interaction.status < 300:
        return None
    stored = interaction.response
    if isinstance(stored.get("json"), dict):
        data = stored["json"]
        if isinstance(data.get("usage"), dict) and isinstance(data.get("model"), str):
            return usage_from_response(data["usage"]), data["model"]
        return None
    usage: dict[str, Any] = {}
    model = None
    for event in stored.get("events") or ():
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            continue
        if data.get("type") == "message_start" and isinstance(data.get("message"), dict):
            model = data["message"].get("model")
            usage.update(data["message"].get("usage") or {})
        elif data.get("type") == "message_delta" and isinstance(data.get("usage"), dict):
            usage.update({k: v for k, v in data["usage"].items() if v is not None})
    return (usage_from_response(usage), model) if usage and isinstance(model, str) else None
