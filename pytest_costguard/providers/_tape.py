"""The HTTP side of record and replay that every provider adapter shares: httpx2 responses to cassette
interactions (recorded as their bytes pass to the SDK) and interactions back to httpx2 responses.

A provider adapter (`anthropic/replay.py`, `openai/replay.py`) says what was sent (`Sent`) and hands the SDK
what comes back in the SDK's own terms; the cassette format, matching and redaction are in
`pytest_costguard.replay`. httpx2 is imported only when a response is handled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..replay.cassette import Interaction, body_bytes, now, stored_body
from ..replay.redaction import redact_body, redact_headers
from ._common import watched_stream

if TYPE_CHECKING:
    from ..metering.guard import CostGuard, Ticket
    from ..replay.store import Tape

__all__ = [
    "REPLAY_BASE_URL",
    "Sent",
    "answer_or_admit",
    "describe_call",
    "is_transport_failure",
    "record_failure",
    "record_response",
    "replayed_http",
    "transport_error",
    "wire_path",
]

REPLAY_BASE_URL = "http://costguard-replay.invalid"
"""Where replayed responses say they came from, when the adapter has no request of its own to name."""

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
    """The path and query of a request's URL (relative, as an SDK may give it, or absolute)."""
    if "://" in url:
        import httpx2

        parsed = httpx2.URL(url)
        query = parsed.query.decode()
        return parsed.path + (f"?{query}" if query else "")
    return url if url.startswith("/") else f"/{url}"


def describe_call(model: object, prompt: str) -> str:
    """Name a call for a person: its model and the first line of its prompt."""
    model = model if isinstance(model, str) and model else "unknown model"
    first = prompt.strip().splitlines()[0] if prompt.strip() else ""
    if len(first) > 80:
        first = first[:77] + "..."
    return f"a {model} call (prompt: {first!r})" if first else f"a {model} call"


@dataclass(frozen=True, slots=True)
class Sent:
    """What an attempt sent, as a cassette keeps it."""

    provider: str
    """Whose API it went to."""
    method: str
    """The HTTP method, upper case."""
    path: str
    """Path and query (`wire_path`)."""
    body: Any
    """The JSON body (None without one)."""

    def interaction(
        self,
        *,
        status: int | None,
        content: bytes = b"",
        headers: Any = (),
        wire_headers: Any = (),
        error: Mapping[str, str] | None = None,
    ) -> Interaction:
        """The interaction this attempt made, redacted."""
        return Interaction(
            method=self.method,
            path=self.path,
            body=redact_body(self.body),
            status=status,
            response=stored_body(content) if status is not None else {},
            headers=redact_headers(headers, drop=_VOLATILE_RESPONSE) if status is not None else {},
            request_headers=redact_headers(wire_headers, drop=_VOLATILE_REQUEST),
            error=error,
            provider=self.provider,
            recorded_at=now(),
        )


def answer_or_admit(
    tape: Tape, sent: Sent, guard: CostGuard, ticket: Ticket | None, what: Callable[[], str]
) -> Interaction | None:
    """The recording that answers `sent`; else None once the attempt may go live and be recorded (its ticket
    reserved now, like any live call: refused here if it does not fit); else the refusal, raised, with nothing
    sent (`what()` names the call in it)."""
    found = tape.take(sent.method, sent.path, sent.body)
    if found is not None:
        return found
    if not tape.records:
        if ticket is not None:
            guard.forget(ticket)
        raise tape.refuse(what(), (sent.method, sent.path, sent.body))
    if ticket is not None:
        guard.hold(ticket)
    return None


# -- recording ---------------------------------------------------------------------------------------------
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transport_failure(exc: BaseException) -> bool:
    """Whether the network failed the attempt (an httpx2 transport error, maybe wrapped by the SDK)."""
    import httpx2

    return isinstance(exc, Exception) and any(isinstance(e, httpx2.TransportError) for e in _chain(exc))


def _failure(exc: BaseException, *, kind: str | None = None) -> dict[str, str]:
    """How a transport failed, by the httpx2 error behind it (an SDK wraps it in its own)."""
    import httpx2

    for current in _chain(exc):
        if isinstance(current, httpx2.TransportError):
            if kind is None:
                kind = "timeout" if isinstance(current, httpx2.TimeoutException) else "connect"
            return {"kind": kind, "type": type(current).__name__, "message": str(current)}
    return {"kind": kind or "connect", "type": type(exc).__name__, "message": str(exc)}


def record_failure(tape: Tape, sent: Sent, exc: BaseException, *, wire_headers: Any = ()) -> None:
    """Record an attempt that got no response (refused connection, timeout), so a replay fails the same way."""
    if is_transport_failure(exc):  # else not the network's doing (a refusal, a bug): nothing to replay
        tape.add(sent.interaction(status=None, wire_headers=wire_headers, error=_failure(exc)))


def record_response(tape: Tape, sent: Sent, http: Any, *, asynchronous: bool) -> None:
    """Record `http` (an httpx2 response): at once when its body was read, else as its bytes reach the caller,
    kept when the stream is closed (with how it broke off, when it did)."""
    wire = http.request.headers.multi_items()
    if http.is_stream_consumed or http.is_closed:
        try:
            content = http.content
        except Exception:  # closed unread: nothing to keep but the status
            content = b""
        tape.add(
            sent.interaction(
                status=http.status_code, content=content, headers=http.headers.multi_items(), wire_headers=wire
            )
        )
        return
    chunks: list[bytes] = []

    def ended(error: BaseException | None) -> None:
        tape.add(
            sent.interaction(
                status=http.status_code,
                content=b"".join(chunks),
                headers=http.headers.multi_items(),
                wire_headers=wire,
                error=None if error is None else _failure(error, kind="read"),
            )
        )

    http.stream = watched_stream(http.stream, chunks.append, ended, asynchronous=asynchronous)


# -- replaying ---------------------------------------------------------------------------------------------
def transport_error(error: Mapping[str, str]) -> Exception:
    """The httpx2 error a recorded transport failure stands for."""
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
                    raise transport_error(error)

        return AsyncReplayStream()

    class ReplayStream(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from pieces
            if error is not None:
                raise transport_error(error)

    return ReplayStream()


def replayed_http(interaction: Interaction, *, streamed: bool, asynchronous: bool, request: Any = None) -> Any:
    """The httpx2 response a recording with a status stands for: unread (a stream) when `streamed` or when it
    broke off mid-body (reading it raises the recorded failure), else read. `request` is what it answers
    (a stand-in naming `REPLAY_BASE_URL` when None)."""
    import httpx2

    if request is None:
        request = httpx2.Request(interaction.method, REPLAY_BASE_URL + interaction.path)
    if interaction.status is None:
        raise ValueError("a recorded failure without a response is raised, not replayed as one")
    content = body_bytes(interaction.response)
    headers = dict(interaction.headers)
    if streamed or interaction.error is not None:
        stream = _replay_stream(content, interaction.error, asynchronous=asynchronous)
        return httpx2.Response(interaction.status, headers=headers, stream=stream, request=request)
    return httpx2.Response(interaction.status, headers=headers, content=content, request=request)
