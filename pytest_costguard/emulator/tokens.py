"""Input token counting: the request cut into billed segments, in cache-prefix order.

A segment of `b` UTF-8 bytes of text counts `ceil(b / 4)` tokens; the first segment of every message also
counts a template overhead of `min(MESSAGE_OVERHEAD, b - ceil(b / 4))`, so a text segment never counts more
tokens than its bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .cache import Segment, mark_breakpoints, ttl_of
from .validation import validate_request
from .wire import compact

__all__ = ["MESSAGE_OVERHEAD", "count_input_tokens", "segments", "text_of"]

MESSAGE_OVERHEAD = 3
_IMAGE_TOKENS = 1600
_REMOTE_DOCUMENT_TOKENS = 2000


def ceil4(size: int) -> int:
    """Return the tokens `size` bytes of text count: a quarter, rounded up."""
    return -(-size // 4)


def text_of(value: Any) -> str:
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
        return str(block.get("name", "")) + compact(block.get("input", {}))
    if kind == "tool_result":
        return text_of(block.get("content", ""))
    if kind == "thinking":
        return str(block.get("thinking", ""))
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            return str(source.get("data", ""))
        if isinstance(source, Mapping) and source.get("type") == "content":
            return text_of(source.get("content", ""))
    return ""


def _block_tokens(block: Mapping[str, Any]) -> tuple[int, int]:
    """Return (tokens, text bytes) of a content block; media count tokens without text bytes."""
    kind = block.get("type")
    source = block.get("source")
    if kind in ("image", "document") and isinstance(source, Mapping):
        if source.get("type") == "base64":
            # Bounded by the inline data's bytes, so the request-bytes bound still holds.
            tokens = ceil4(len(str(source.get("data", ""))))
            return (min(tokens, _IMAGE_TOKENS) if kind == "image" else tokens), 0
        if source.get("type") not in ("text", "content"):
            return (_IMAGE_TOKENS if kind == "image" else _REMOTE_DOCUMENT_TOKENS), 0
    size = len(_block_text(block).encode("utf-8"))
    return ceil4(size), size


def _without_cache_control(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "cache_control"}


def segments(body: Mapping[str, Any]) -> list[Segment]:
    """Cut a validated request into counted segments, in cache-prefix order (tools, system, messages).

    Raises `ApiError` (400) where the request's breakpoints are rejected.
    """
    found: list[Segment] = []
    for tool in body.get("tools") or []:
        definition = compact(_without_cache_control(tool)).encode()
        found.append(Segment(ceil4(len(definition)), b"tool:" + definition, ttl_of(tool.get("cache_control"))))
    system = body.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) and system else system or []
    for block in system_blocks:
        key = b"system:" + compact(_without_cache_control(block)).encode()
        found.append(Segment(_block_tokens(block)[0], key, ttl_of(block.get("cache_control"))))
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for index, block in enumerate(blocks):
            tokens, size = _block_tokens(block)
            if index == 0:
                # The chat template adds a few tokens per message; never more than the block's spare bytes.
                tokens += max(0, min(MESSAGE_OVERHEAD, size - tokens))
            head = f"{message['role']}:" if index == 0 else "+"
            key = (head + compact(_without_cache_control(block))).encode()
            found.append(Segment(tokens, key, ttl_of(block.get("cache_control"))))
    return mark_breakpoints(found, body.get("cache_control"))


def count_input_tokens(request: Mapping[str, Any]) -> int:
    """Return the input tokens the emulator counts for a Messages request (cache ignored)."""
    validate_request(request, for_count=True)
    return sum(segment.tokens for segment in segments(request))
