"""One view of a Messages request body: its blocks in prompt order, their text, media, tools and breakpoints.

The worst-case bound, routing, prompt caching and the emulator all read requests; they read them through
these functions, so a block's text or a breakpoint means the same thing everywhere. Malformed parts are
skipped, never raised on: the plugin meters whatever bodies the code under test sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MAX_BREAKPOINTS",
    "Block",
    "Section",
    "block_text",
    "blocks",
    "breakpoint_ttls",
    "content_blocks",
    "content_text",
    "count_breakpoints",
    "message_blocks",
    "request_size",
    "system_text",
]

MAX_BREAKPOINTS = 4
"""The API rejects a request with more `cache_control` breakpoints than this."""

Section = Literal["tools", "system", "messages"]
"""Where a block sits; the prompt (and its cache prefix) runs tools, then system, then messages."""


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a request, where it sits and what it is."""

    section: Section
    """tools, system or messages."""
    data: Mapping[str, Any]
    """The block as sent."""

    @property
    def kind(self) -> str | None:
        """The block's `type` ("text", "image", "document", "tool_result", a tool's type...)."""
        kind = self.data.get("type")
        return kind if isinstance(kind, str) else None

    @property
    def source_type(self) -> str | None:
        """For an image or document, how it is given: "base64", "url", "file", "text", "content"."""
        source = self.data.get("source")
        kind = source.get("type") if isinstance(source, Mapping) else None
        return kind if isinstance(kind, str) else None

    @property
    def ttl(self) -> str | None:
        """The TTL of its cache breakpoint ("5m" or "1h"), or None when it sets none."""
        control = self.data.get("cache_control")
        if not isinstance(control, Mapping):
            return None
        ttl = control.get("ttl")
        return ttl if isinstance(ttl, str) else "5m"


def content_blocks(value: Any) -> list[Mapping[str, Any]]:
    """The mapping blocks of a content list (a string or anything else has none)."""
    return [block for block in value if isinstance(block, Mapping)] if isinstance(value, list) else []


def message_blocks(body: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Yield every content block of the messages, tool-result content blocks included, in prompt order."""
    for message in content_blocks(body.get("messages")):
        for block in content_blocks(message.get("content")):
            yield block
            if block.get("type") == "tool_result":
                yield from content_blocks(block.get("content"))


def blocks(body: Mapping[str, Any]) -> Iterator[Block]:
    """Yield every block of a request in prompt order: tool definitions, system blocks, message blocks."""
    for tool in content_blocks(body.get("tools")):
        yield Block("tools", tool)
    for block in content_blocks(body.get("system")):
        yield Block("system", block)
    for block in message_blocks(body):
        yield Block("messages", block)


def block_text(block: Any) -> str:
    """The text a block carries: text and thinking blocks, tool calls (name and input), tool results' text,
    and plain-text documents."""
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return ""
    kind = block.get("type")
    if kind in ("text", "thinking"):
        text = block.get(kind)
        return text if isinstance(text, str) else ""
    if kind in ("tool_use", "server_tool_use"):
        name = block.get("name")
        arguments = json.dumps(block.get("input", {}), ensure_ascii=False, separators=(",", ":"), default=str)
        return (name if isinstance(name, str) else "") + arguments
    if kind == "tool_result":
        return content_text(block.get("content"))
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping):
            if source.get("type") == "text":
                data = source.get("data")
                return data if isinstance(data, str) else ""
            if source.get("type") == "content":
                return content_text(source.get("content"))
    return ""


def content_text(content: Any) -> str:
    """The text of a `content` value: a string, or the joined text of its blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block_text(block) for block in content)
    return ""


def system_text(system: Any) -> str | None:
    """The system prompt's text, or None when it is absent or not made of text blocks."""
    if isinstance(system, str):
        return system
    parts = content_blocks(system)
    if not parts or len(parts) != len(system):
        return None
    return "".join(block_text(part) for part in parts if part.get("type") == "text")


def request_size(body: Mapping[str, Any]) -> tuple[int, int]:
    """Return (text_length, item_count): characters of text in system and messages, and the number of messages."""
    length = len(content_text(body.get("system")))
    messages = body.get("messages")
    if not isinstance(messages, list):
        return length, 0
    for message in messages:
        if isinstance(message, Mapping):
            length += len(content_text(message.get("content")))
    return length, len(messages)


def breakpoint_ttls(body: Mapping[str, Any], section: Section | None = None) -> list[str]:
    """The TTLs of the request's cache breakpoints in prompt order (of one section when given)."""
    return [block.ttl for block in blocks(body) if block.ttl is not None and section in (None, block.section)]


def count_breakpoints(body: Mapping[str, Any]) -> int:
    """Count the cache breakpoints a request sets: on blocks anywhere, plus a top-level `cache_control`."""
    return len(breakpoint_ttls(body)) + (1 if isinstance(body.get("cache_control"), Mapping) else 0)
