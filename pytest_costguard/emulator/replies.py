"""Replies: a deterministic sentence for each request, cut at `max_tokens`, and the Message that carries it.

The reply is a sentence of three-letter words chosen from a hash of the request's model, system, messages
and tools. Every word plus its trailing space or final full stop is 4 bytes and exactly one output token.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .tokens import text_of
from .wire import compact

__all__ = ["MAX_MARKER_OUTPUT", "Reply", "chunks", "message_body", "reply_words"]

MAX_MARKER_OUTPUT = 200_000
_WORDS_PER_DELTA = 3

# 64 three-letter words: with a trailing space (or the final full stop) each is 4 bytes and one token.
# fmt: off
_WORDS = (
    "the", "and", "for", "you", "not", "are", "all", "new", "was", "can", "has", "but", "our", "one", "may",
    "out", "use", "any", "see", "his", "who", "web", "now", "get", "how", "its", "top", "had", "day", "two",
    "way", "she", "set", "own", "too", "big", "yes", "far", "run", "sun", "sea", "sky", "cat", "dog", "owl",
    "fox", "bee", "ant", "elk", "yak", "emu", "cup", "pen", "map", "key", "box", "bag", "hat", "car", "bus",
    "jet", "oak", "ivy", "fig",
)
# fmt: on
_OUTPUT_MARKER = re.compile(r"\[\[costguard:output=(\d+)\]\]")


@dataclass(slots=True)
class Reply:
    """A message the emulator is about to deliver, with the usage it bills."""

    model: str
    """The model requested (and billed)."""
    message_id: str
    """Its `msg_...` id."""
    words: list[str]
    """The reply text as one-token pieces."""
    stop_reason: str
    """"end_turn", or "max_tokens" when the reply was cut."""
    usage: dict[str, Any]
    """The usage as the API reports it (`output_tokens` is the full reply's)."""


def last_user_text(body: Mapping[str, Any]) -> str:
    """Return the text of the request's last user message (where markers are read from)."""
    for message in reversed(body["messages"]):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def reply_words(body: Mapping[str, Any]) -> list[str]:
    """Return the reply as one-token pieces, before any `max_tokens` cut."""
    seed = hashlib.sha256(
        compact({k: body.get(k) for k in ("model", "system", "messages", "tools")}).encode()
    ).digest()
    marker = _OUTPUT_MARKER.search(last_user_text(body))
    count = min(max(int(marker.group(1)), 1), MAX_MARKER_OUTPUT) if marker else 8 + seed[0] % 24
    words: list[str] = []
    block = 0
    while len(words) < count:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        words.extend(_WORDS[byte % len(_WORDS)] for byte in digest)
        block += 1
    del words[count:]
    words[0] = words[0].capitalize()
    return [word + " " for word in words[:-1]] + [words[-1] + "."]


def message_body(reply: Reply, *, usage: bool = True) -> dict[str, Any]:
    """Return the Message JSON for `reply` (without `usage` when asked, as the `no_usage` fault sends it)."""
    body: dict[str, Any] = {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [{"type": "text", "text": "".join(reply.words)}],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
    }
    if usage:
        body["usage"] = reply.usage
    return body


def chunks(words: list[str]) -> Iterator[list[str]]:
    """Yield the words a stream sends per `content_block_delta`."""
    for start in range(0, len(words), _WORDS_PER_DELTA):
        yield words[start : start + _WORDS_PER_DELTA]
