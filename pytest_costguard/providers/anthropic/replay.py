"""The Anthropic edge of record and replay: SDK requests and responses to cassette interactions and back.

The middleware (`middleware.py`) admits each attempt first (routed, and with nothing reserved when a tape may
answer it); `tapped` then decides, by the body that would go on the wire: a recording answers it (the SDK
gets a response built from the cassette and nothing is sent), or it is sent and recorded (reserved like any
live call, its bytes kept as they pass to the SDK, as the stream meter sees them), or it is refused before
it is sent (`--llm-record=none`, or a `once` cassette without it).

The SDK offers middleware no public way to build a response, so a replayed one is made as the SDK makes its
own: an `APIResponse` over an `httpx2.Response`, bound to a stand-in client that never sends anything (the
client lends the SDK's own parsing: models, stream decoding, error mapping). What is not Anthropic's (httpx2
responses to interactions and back) is shared with the OpenAI adapter in `providers/_tape.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ...domain.request import content_text
from .._tape import (
    REPLAY_BASE_URL,
    Sent,
    answer_or_admit,
    record_failure,
    record_response,
    replayed_http,
    transport_error,
    wire_path,
)
from .._tape import describe_call as describe

if TYPE_CHECKING:
    from anthropic import APIRequest

    from ...replay.cassette import Interaction
    from ...replay.store import Tape

__all__ = ["describe_call", "replayed_response", "tapped"]

PROVIDER = "anthropic"
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"


def describe_call(body: Any) -> str:
    """Name a call for a person: its model and the first line of its last user turn."""
    if not isinstance(body, dict):
        return "a request"
    prompt = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            prompt = content_text(message.get("content"))
            break
    return describe(body.get("model"), prompt)


def _sent(request: APIRequest) -> Sent:
    return Sent(PROVIDER, request.method.upper(), wire_path(request.url), request.json)


def tapped(attempt: Any, call_next: Callable[[APIRequest], Any], *, asynchronous: bool) -> Callable[..., Any]:
    """What sends `attempt` when its test has a tape: a replay, a recording `call_next`, or a refusal (raised)."""
    tape: Tape = attempt.tape
    request = attempt.request
    what = partial(describe_call, request.json)  # named only for a refusal
    found = answer_or_admit(tape, _sent(request), attempt.guard, attempt.ticket, what)
    if found is not None:
        if asynchronous:

            async def replay_async(req: APIRequest) -> Any:
                return replayed_response(req, found, asynchronous=True)

            return replay_async
        return lambda req: replayed_response(req, found, asynchronous=False)
    if asynchronous:

        async def record_async(req: APIRequest) -> Any:
            try:
                response = await call_next(req)
            except BaseException as exc:
                record_failure(tape, _sent(req), exc)
                raise
            record_response(tape, _sent(req), response.http_response, asynchronous=True)
            return response

        return record_async

    def record(req: APIRequest) -> Any:
        try:
            response = call_next(req)
        except BaseException as exc:
            record_failure(tape, _sent(req), exc)
            raise
        record_response(tape, _sent(req), response.http_response, asynchronous=False)
        return response

    return record


# -- replaying ---------------------------------------------------------------------------------------------
_standins: dict[tuple[type[Any], bool], Any] = {}


def _standin(asynchronous: bool) -> Any:
    """A client that lends replayed responses the SDK's parsing; it never sends a request."""
    import anthropic

    key = (anthropic.Anthropic, asynchronous)
    client = _standins.get(key)
    if client is None:
        cls = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
        client = _standins[key] = cls(api_key="costguard-replay", base_url=REPLAY_BASE_URL, max_retries=0)
    return client


def replayed_response(request: APIRequest, interaction: Interaction, *, asynchronous: bool) -> Any:
    """The SDK response a recording stands for, as `call_next` would have returned it (or its failure, raised)."""
    import anthropic
    import httpx2

    http_request = httpx2.Request(request.method, REPLAY_BASE_URL + wire_path(request.url))
    if interaction.status is None:
        error = interaction.error or {}
        cause = transport_error(error)
        if error.get("kind") == "timeout":
            raise anthropic.APITimeoutError(request=http_request) from cause
        raise anthropic.APIConnectionError(request=http_request) from cause
    options = request.options
    given = options.headers if isinstance(options.headers, dict) else {}
    streamed = bool(request.stream) or given.get(_RAW_RESPONSE_HEADER) == "stream"
    raw = replayed_http(interaction, streamed=streamed, asynchronous=asynchronous, request=http_request)
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
