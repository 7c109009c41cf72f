"""Meter the OpenAI SDK's HTTP attempts: admit before sending, settle from the usage the response reports.

`send` / `send_async` stand in for the SDK's `_send_request` (see `patch.py` for why there): each attempt is
routed and admitted through the `CostGuard` before it is sent, released when it fails before reaching the
server or answers with an error status (not billed), and settled from the body's `usage`. A body the SDK has
not read yet (a stream, `with_streaming_response`) is metered as its bytes pass to the caller, never read
ahead of it, and settled when it is closed.

What the SDK sends is never changed, except the `model` a routing policy the user asked for rewrites: in
particular, a stream without `stream_options.include_usage` is left so, and charged as described in
`StreamMeter.finish`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...core.pricing import Usage
from ...domain.openai_request import Endpoint, endpoint_of
from ...domain.records import usage_from_openai
from .._common import BodyTap, metered_stream, reached_the_server
from .patch import active_guard

if TYPE_CHECKING:
    from ...metering.guard import CostGuard, Ticket
    from ...replay.store import Tape

__all__ = ["StreamMeter", "send", "send_async"]

_NON_REASONING = re.compile(r"^(?:gpt-4|gpt-3\.5|chatgpt-4o)")
"""Models that spend no hidden reasoning tokens: their output is all in the stream (the GPT-5 and o-series
models reason, and bill reasoning tokens nobody receives)."""
_PER_CHOICE_ALLOWANCE = 16
"""Output tokens a choice may be billed beyond the bytes of its deltas (its role and stop tokens)."""
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def _event_end(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """Find the end of the first complete SSE event: (end of event, start of the next)."""
    best: tuple[int, int] | None = None
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        at = buffer.find(sep)
        if at != -1 and (best is None or at < best[0]):
            best = (at, at + len(sep))
    return best


class StreamMeter:
    """Follow an OpenAI SSE stream (Chat Completions chunks or Responses events) and keep what it reports."""

    __slots__ = ("_buffer", "choices", "done", "error", "model", "received_bytes", "service_tier", "usage_json")

    def __init__(self) -> None:
        self._buffer = b""
        self.usage_json: Mapping[str, Any] | None = None
        self.model: str | None = None
        self.service_tier: Any = None
        self.received_bytes = 0
        """UTF-8 bytes of generated text, refusals and tool-call arguments seen in the deltas."""
        self.done = False
        """The stream ended as the API ends it (`[DONE]`, or a final Responses event)."""
        self.error = False
        self.choices: set[Any] = set()
        """The indexes of the choices seen."""

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
        if data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if isinstance(kind, str):
            self._on_responses_event(kind, event)
            return
        # A Chat Completions chunk: the model on each, usage (when asked for) on the last, with no choices.
        self.model = event.get("model") or self.model
        self.service_tier = event.get("service_tier") or self.service_tier
        if isinstance(event.get("usage"), dict):
            self.usage_json = event["usage"]
        if "error" in event:
            self.error = True
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                self.choices.add(choice.get("index"))
                self.received_bytes += _delta_bytes(delta)

    def _on_responses_event(self, kind: str, event: Mapping[str, Any]) -> None:
        if kind == "error":
            self.error = True
            return
        response = event.get("response")
        if isinstance(response, dict):
            self.model = response.get("model") or self.model
            self.service_tier = response.get("service_tier") or self.service_tier
            if kind in _FINAL_EVENTS:
                self.done = True
                if isinstance(response.get("usage"), dict):
                    self.usage_json = response["usage"]
        delta = event.get("delta")
        if isinstance(delta, str):
            self.received_bytes += len(delta.encode("utf-8"))

    def usage(self) -> Usage | None:
        """The usage the stream reported, or None."""
        if self.usage_json is None:
            return None
        return usage_from_openai(self.usage_json, service_tier=self.service_tier)

    def finish(self, guard: CostGuard, ticket: Ticket) -> None:
        """Settle the attempt from what the stream showed.

        With usage (always on Responses; on Chat Completions with `stream_options.include_usage`), that usage.
        Without: the worst case it was admitted for, marked estimated, unless what was received proves less,
        which it does only for a stream that ended normally from a model without hidden reasoning tokens: its
        output is then at most the bytes of its deltas plus a few tokens a choice (its input stays the bound).
        """
        usage = self.usage()
        if usage is not None:
            guard.settle(ticket, usage, self.model)
            return
        model = self.model or ticket.model
        if self.done and not self.error and _NON_REASONING.match(model):
            proven = self.received_bytes + _PER_CHOICE_ALLOWANCE * max(len(self.choices), 1)
            if proven < ticket.max_tokens:
                tier = self.service_tier if isinstance(self.service_tier, str) else ticket.tier
                bound = usage_from_openai(
                    {"prompt_tokens": ticket.input_bound, "completion_tokens": proven}, service_tier=tier
                )
                guard.settle(ticket, bound, self.model, estimated=True)
                return
        guard.settle(ticket, None, self.model)


def _delta_bytes(delta: Mapping[str, Any]) -> int:
    size = 0
    for key in ("content", "refusal", "reasoning_content"):
        value = delta.get(key)
        if isinstance(value, str):
            size += len(value.encode("utf-8"))
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                value = function.get(key)
                if isinstance(value, str):
                    size += len(value.encode("utf-8"))
    return size


class _BodyMeter(BodyTap):
    """Follow a successful response's body as the caller gets it; settle the attempt when it ends."""

    __slots__ = ()

    def __init__(self, guard: CostGuard, ticket: Ticket) -> None:
        super().__init__(guard, ticket, StreamMeter())

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        guard, ticket = self._guard, self._ticket
        if ticket.batch:
            guard.settle(ticket, None)  # a batch's creation: its results are charged their worst case now
            return
        if self._kind == "sse":
            self._sse.finish(guard, ticket)
            return
        try:
            body = json.loads(b"".join(self._body))
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
            # A 200 without readable usage (a background response, a cut body) was billed something.
            model = body.get("model") if isinstance(body, dict) else None
            guard.settle(ticket, None, model if isinstance(model, str) else None)
            return
        usage = usage_from_openai(body["usage"], service_tier=body.get("service_tier"))
        model = body.get("model")
        guard.settle(ticket, usage, model if isinstance(model, str) else None)


# -- batches: the input file is uploaded first, the batch names it --------------------------------------------
_UPLOADS_KEPT = 256
_uploads: dict[str, list[Mapping[str, Any]]] = {}
_uploads_lock = threading.Lock()


def _batch_lines(content: bytes) -> list[Mapping[str, Any]] | None:
    """The request lines of a `purpose=batch` upload's multipart body, or None when it is not one."""
    if b'name="purpose"' not in content or not re.search(rb'name="purpose"\r?\n\r?\n\s*batch\b', content):
        return None
    lines: list[Mapping[str, Any]] = []
    for line in content.splitlines():
        stripped = line.strip()
        if not stripped.startswith(b"{"):
            continue
        try:
            item = json.loads(stripped)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("body"), dict):
            lines.append(item)
    return lines


class _Upload:
    """A batch input file on its way up: remembered by the id the API gives it."""

    __slots__ = ("lines", "request")

    def __init__(self, request: Any, lines: list[Mapping[str, Any]]) -> None:
        self.request = request
        self.lines = lines

    def answered(self, response: Any) -> None:
        with contextlib.suppress(Exception):
            if response.is_success:
                file_id = json.loads(response.content).get("id")
                if isinstance(file_id, str):
                    with _uploads_lock:
                        if len(_uploads) >= _UPLOADS_KEPT:
                            _uploads.pop(next(iter(_uploads)))
                        _uploads[file_id] = self.lines


# -- admission ---------------------------------------------------------------------------------------------
class _Attempt:
    __slots__ = ("guard", "request", "ticket")

    def __init__(self, guard: CostGuard, ticket: Ticket, request: Any) -> None:
        self.guard = guard
        self.ticket = ticket
        self.request = request

    def failed(self, exc: BaseException) -> None:
        # As for Anthropic: a read timeout after the request went out may have been billed (the SDK's retry
        # reuses its idempotency key, but a reply generated and lost is still billed once): charge it.
        if reached_the_server(exc):
            self.guard.settle(self.ticket, None)
        else:
            self.guard.release(self.ticket)

    def answered(self, response: Any, *, asynchronous: bool) -> None:
        if not response.is_success:
            self.guard.release(self.ticket)
            return
        meter = _BodyMeter(self.guard, self.ticket)
        if not (response.is_stream_consumed or response.is_closed):
            response.stream = metered_stream(response.stream, meter, asynchronous=asynchronous)
            return
        with contextlib.suppress(Exception):  # closed unread: nothing to read, the worst case is charged
            meter.feed(response.content)
        meter.finish()


def _body(request: Any) -> Any:
    try:
        content = request.content
    except Exception:  # a streamed upload body, not JSON
        return None
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


def _retries(request: Any) -> int:
    try:
        return max(int(request.headers.get("x-stainless-retry-count", 0)), 0)
    except ValueError:
        return 0


def _with_body(request: Any, body: Mapping[str, Any]) -> Any:
    """The same request with another JSON body (a routed `model`)."""
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    content = json.dumps(body, separators=(",", ":")).encode()
    return type(request)(request.method, request.url, headers=headers, content=content, extensions=request.extensions)


def _admit(guard: CostGuard, request: Any, *, replay: bool = False) -> _Attempt | _Upload | None:
    url = str(request.url)
    endpoint = endpoint_of(request.method, url)
    if endpoint is None:
        return None
    if endpoint == "files":
        try:
            content = request.read()
        except Exception:
            return None
        lines = _batch_lines(content) if isinstance(content, bytes) else None
        return _Upload(request, lines) if lines is not None else None
    body = _body(request)
    if not isinstance(body, dict):
        body = {}  # unreadable: no model, so a budget refuses it (it cannot be priced) and no budget records it
    if endpoint == "batches":
        return _Attempt(guard, _begin_batch(guard, body, _retries(request), replay=replay), request)
    ticket, sent = guard.begin(
        body,
        streamed=bool(body.get("stream")),
        retries=_retries(request),
        replay=replay,
        provider="openai",
        endpoint=endpoint,
        routable="/deployments/" not in url,  # Azure sends to the deployment the URL names, whatever the body says
    )
    if sent is not body:
        request = _with_body(request, sent)
    return _Attempt(guard, ticket, request)


def _begin_batch(guard: CostGuard, body: Mapping[str, Any], retries: int, *, replay: bool = False) -> Ticket:
    file_id = body.get("input_file_id")
    with _uploads_lock:
        lines = _uploads.get(file_id) if isinstance(file_id, str) else None
    target = body.get("endpoint")
    endpoint: Endpoint | None = endpoint_of("POST", target) if isinstance(target, str) else None
    if lines is None or endpoint is None or endpoint in ("batches", "files"):
        reason = (
            f"the batch's input file {file_id!r} was not uploaded through a metered client in this process, so "
            "its requests cannot be bounded: upload it in the same run, or submit the batch without a budget"
        )
        if guard.budgeted and not replay:
            raise guard.refuse_unbounded(reason)
        return guard.begin_batch({"requests": []}, retries=retries, provider="openai", endpoint=endpoint, replay=replay)
    requests = [{"custom_id": line.get("custom_id"), "params": line["body"]} for line in lines]
    return guard.begin_batch(
        {"requests": requests}, retries=retries, provider="openai", endpoint=endpoint, replay=replay
    )


def _tape(guard: CostGuard) -> Tape | None:
    """The running test's cassette (`--llm-record`), or None."""
    tapes = guard.tapes
    return tapes.tape_for(guard.scope.tag) if tapes is not None else None


def _taped(
    tape: Tape,
    guard: CostGuard,
    attempt: _Attempt | _Upload | None,
    request: Any,
    original: Callable[..., Any],
    *,
    asynchronous: bool,
) -> Callable[..., Any]:
    """What stands in for `original` when the running test records or replays (`replay.tapped`)."""
    from .replay import tapped

    if isinstance(attempt, _Attempt):
        request, ticket = attempt.request, attempt.ticket
    else:
        ticket = None
    return tapped(tape, guard, ticket, request, _body(request), original, asynchronous=asynchronous)


def send(original: Callable[..., Any], client: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
    """Send one attempt through `original` (the SDK's `_send_request`), metered (and taped, under a cassette)."""
    guard = active_guard()
    if guard is None:
        return original(client, request, stream=stream, **kwargs)
    tape = _tape(guard)
    attempt = _admit(guard, request, replay=tape is not None and tape.replays)
    if tape is not None:
        original = _taped(tape, guard, attempt, request, original, asynchronous=False)
    if attempt is None:
        return original(client, request, stream=stream, **kwargs)
    if isinstance(attempt, _Upload):
        response = original(client, request, stream=stream, **kwargs)
        attempt.answered(response)
        return response
    try:
        response = original(client, attempt.request, stream=stream, **kwargs)
    except BaseException as exc:
        attempt.failed(exc)
        raise
    attempt.answered(response, asynchronous=False)
    return response


async def send_async(original: Callable[..., Any], client: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
    """Send one attempt through `original` (the SDK's async `_send_request`), metered (and taped)."""
    guard = active_guard()
    if guard is None:
        return await original(client, request, stream=stream, **kwargs)
    tape = _tape(guard)
    attempt = _admit(guard, request, replay=tape is not None and tape.replays)
    if tape is not None:
        original = _taped(tape, guard, attempt, request, original, asynchronous=True)
    if attempt is None:
        return await original(client, request, stream=stream, **kwargs)
    if isinstance(attempt, _Upload):
        response = await original(client, request, stream=stream, **kwargs)
        attempt.answered(response)
        return response
    try:
        response = await original(client, attempt.request, stream=stream, **kwargs)
    except BaseException as exc:
        attempt.failed(exc)
        raise
    attempt.answered(response, asynchronous=True)
    return response
