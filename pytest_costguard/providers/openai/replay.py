"""The OpenAI edge of record and replay: the SDK's HTTP attempts to cassette interactions and back.

The meter (`meter.py`) admits each attempt first (with nothing reserved when a tape may answer it); `tapped`
then decides, by the body that would go on the wire, what stands in for the SDK's `_send_request`: a
recording answers it (an `httpx2.Response` built from the cassette, or the transport error it recorded,
raised where the SDK's retry loop expects it; nothing is sent), or it is sent and recorded (reserved like any
live call, its bytes kept as they pass to the SDK), or it is refused before it is sent
(`--llm-record=none`, or a `once` cassette without it).

Simpler than the Anthropic side: the seam hands back a bare `httpx2.Response`, which the SDK parses itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ...domain.records import usage_from_openai
from .._tape import (
    Sent,
    answer_or_admit,
    describe_call,
    record_failure,
    record_response,
    replayed_http,
    transport_error,
    wire_path,
)

if TYPE_CHECKING:
    from ...core.pricing import Usage
    from ...metering.guard import CostGuard, Ticket
    from ...replay.cassette import Interaction
    from ...replay.store import Tape

__all__ = ["describe_request", "recorded_usage", "tapped"]

PROVIDER = "openai"


def _text(value: Any) -> str:
    """The text of a message's content: a string, or the text of its parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(t for t in (_text(part) for part in value) if t)
    if isinstance(value, Mapping):
        return _text(value.get("text") or value.get("content") or "")
    return ""


def describe_request(body: Any) -> str:
    """Name a call for a person: its model and the first line of its last user turn (Chat or Responses)."""
    if not isinstance(body, Mapping):
        return "a request"
    turns = body.get("messages") if "messages" in body else body.get("input")
    prompt = ""
    if isinstance(turns, str):
        prompt = turns
    elif isinstance(turns, list):
        for turn in reversed(turns):
            if isinstance(turn, Mapping) and turn.get("role", "user") == "user":
                prompt = _text(turn.get("content"))
                break
    elif isinstance(body.get("prompt"), str):
        prompt = body["prompt"]
    return describe_call(body.get("model"), prompt)


def tapped(
    tape: Tape,
    guard: CostGuard,
    ticket: Ticket | None,
    request: Any,
    body: Any,
    send: Callable[..., Any],
    *,
    asynchronous: bool,
) -> Callable[..., Any]:
    """What sends `request` (an `httpx2.Request`) when its test has a tape, in the place of the SDK's
    `_send_request` (`send`): a replay, a recording `send`, or a refusal (raised, nothing sent)."""
    sent = Sent(PROVIDER, request.method.upper(), wire_path(str(request.url)), body)
    found = answer_or_admit(tape, sent, guard, ticket, partial(describe_request, body))
    if found is not None:
        if asynchronous:

            async def replay_async(client: Any, req: Any, *, stream: bool, **kwargs: Any) -> Any:
                return _replayed(found, req, stream=stream, asynchronous=True)

            return replay_async
        return lambda client, req, *, stream, **kwargs: _replayed(found, req, stream=stream, asynchronous=False)
    if asynchronous:

        async def record_async(client: Any, req: Any, *, stream: bool, **kwargs: Any) -> Any:
            try:
                response = await send(client, req, stream=stream, **kwargs)
            except BaseException as exc:
                record_failure(tape, sent, exc, wire_headers=req.headers.multi_items())
                raise
            record_response(tape, sent, response, asynchronous=True)
            return response

        return record_async

    def record(client: Any, req: Any, *, stream: bool, **kwargs: Any) -> Any:
        try:
            response = send(client, req, stream=stream, **kwargs)
        except BaseException as exc:
            record_failure(tape, sent, exc, wire_headers=req.headers.multi_items())
            raise
        record_response(tape, sent, response, asynchronous=False)
        return response

    return record


def _replayed(interaction: Interaction, request: Any, *, stream: bool, asynchronous: bool) -> Any:
    """The response `_send_request` would have returned (or the transport error it would have raised)."""
    if interaction.status is None:
        raise transport_error(interaction.error or {})
    if interaction.error is not None and not stream:
        raise transport_error(interaction.error)  # the client read the body, and the read broke off
    return replayed_http(interaction, streamed=stream, asynchronous=asynchronous, request=request)


# -- reading recordings back ---------------------------------------------------------------------------------
def recorded_usage(interaction: Interaction) -> tuple[Usage, str] | None:
    """The usage and model a recorded Chat Completions or Responses reply reports, or None."""
    if interaction.status is None or not 200 <= interaction.status < 300:
        return None
    stored = interaction.response
    found: tuple[Mapping[str, Any], Any, Any] | None = None
    if isinstance(stored.get("json"), Mapping):
        data = stored["json"]
        found = (data.get("usage"), data.get("model"), data.get("service_tier"))
    for event in stored.get("events") or ():
        data = event.get("data") if isinstance(event, Mapping) else None
        if not isinstance(data, Mapping):
            continue
        response = data.get("response")
        holder: Mapping[str, Any] = response if isinstance(response, Mapping) else data
        if isinstance(holder.get("usage"), Mapping):
            found = (holder["usage"], holder.get("model"), holder.get("service_tier"))
    if found is None or not isinstance(found[0], Mapping) or not isinstance(found[1], str):
        return None
    usage, model, tier = found
    return usage_from_openai(usage, service_tier=tier), model
