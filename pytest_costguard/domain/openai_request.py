"""One view of an OpenAI request body (Chat Completions, Responses, Embeddings, legacy Completions).

The worst-case bound, routing and the emulator read OpenAI requests through these functions, as they read
Messages requests through `domain.request`. Malformed parts are skipped, never raised on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = [
    "BILLED_KEYS",
    "Endpoint",
    "choices",
    "endpoint_of",
    "output_limit",
    "parts",
    "request_size",
    "request_text",
]

Endpoint = Literal["chat", "responses", "embeddings", "completions", "batches", "files"]
"""A POST the plugin looks at: the billable calls, a batch's creation and the upload of its input file."""

_SUFFIXES: tuple[tuple[str, Endpoint], ...] = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/embeddings", "embeddings"),
    ("/completions", "completions"),
    ("/batches", "batches"),
    ("/files", "files"),
)

BILLED_KEYS: Mapping[Endpoint, tuple[str, ...]] = {
    "chat": ("messages", "tools", "functions", "response_format", "prediction"),
    "responses": ("instructions", "input", "tools", "text"),
    "embeddings": ("input",),
    "completions": ("prompt", "suffix"),
}
"""The parts of a body billed as input: what the model reads (tool definitions and output schemas included)."""


def endpoint_of(method: str, url: str) -> Endpoint | None:
    """Return which OpenAI endpoint a request goes to, when it is one the plugin meters (POST only)."""
    if method.upper() != "POST":
        return None
    path = url.split("?", 1)[0].rstrip("/")
    for suffix, endpoint in _SUFFIXES:
        if path.endswith(suffix):
            return endpoint
    return None


def _content_parts(content: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                yield part


def parts(body: Mapping[str, Any], endpoint: Endpoint) -> Iterator[Mapping[str, Any]]:
    """Yield every typed content part of the request's input (text, images, files, audio), in order."""
    key = "messages" if endpoint == "chat" else "input"
    items = body.get(key)
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if "content" in item:
            yield from _content_parts(item.get("content"))
        elif isinstance(item.get("type"), str):
            yield item  # a Responses input item given bare (input_text, input_image, function_call_output...)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        for key in ("text", "content", "output", "input"):
            if key in value:
                return _text(value[key])
    return ""


def request_text(body: Mapping[str, Any], endpoint: Endpoint) -> str:
    """The text of the request's prompt (instructions and messages or input), for routing by size."""
    if endpoint == "chat":
        return "".join(_text(m) for m in body.get("messages") or () if isinstance(m, Mapping))
    if endpoint == "completions":
        return _text(body.get("prompt"))
    return _text(body.get("instructions")) + _text(body.get("input"))


def request_size(body: Mapping[str, Any], endpoint: Endpoint) -> tuple[int, int]:
    """Return (text_length, item_count) as `domain.request.request_size` does for Messages."""
    key = "messages" if endpoint == "chat" else "input"
    items = body.get(key)
    count = len(items) if isinstance(items, list) else 1
    return len(request_text(body, endpoint)), count


def output_limit(body: Mapping[str, Any], endpoint: Endpoint) -> int | None:
    """The most output tokens one choice may have, as the request sets it; None when it sets none.

    Chat: `max_completion_tokens` (reasoning included), else the deprecated `max_tokens`; Responses:
    `max_output_tokens`; legacy Completions: `max_tokens`, 16 by the API's default; Embeddings: no output.
    """
    if endpoint == "embeddings":
        return 0
    keys = {
        "chat": ("max_completion_tokens", "max_tokens"),
        "responses": ("max_output_tokens",),
        "completions": ("max_tokens",),
    }.get(endpoint, ())
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 16 if endpoint == "completions" else None


def choices(body: Mapping[str, Any], endpoint: Endpoint) -> int:
    """How many completions one request generates (`n`, and legacy `best_of`)."""
    count = 1
    for key in ("n", "best_of") if endpoint in ("chat", "completions") else ():
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > count:
            count = value
    return count
