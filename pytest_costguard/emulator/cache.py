"""Prompt caching as the API bills it: breakpoints, minimum lengths, TTLs, and which prefixes are cached.

A request is a sequence of `Segment`s in cache-prefix order (tools, then system, then messages). A segment
that carries a breakpoint closes a prefix; the prefix is cacheable when it holds at least the model's minimum.
The longest prefix already cached is a read, the tokens from there to the last cacheable breakpoint are a
write (5m or 1h by the TTL of the breakpoint closing each stretch), the rest is uncached input.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ..core.caching import DEFAULT_MINIMUMS, min_cacheable_tokens
from ..domain.request import MAX_BREAKPOINTS
from .errors import ApiError

__all__ = [
    "CACHE_MINIMUMS",
    "DEFAULT_CACHE_MINIMUM",
    "MAX_BREAKPOINTS",
    "TTL_SECONDS",
    "CacheUsage",
    "PromptCache",
    "Segment",
    "cache_minimum",
    "mark_breakpoints",
    "ttl_of",
]

# The same table the caching module uses to decide what to mark: one source for Anthropic's minimums.
CACHE_MINIMUMS = DEFAULT_MINIMUMS
"""Minimum cacheable prompt length in tokens, by model-name prefix (the longest matching prefix wins)."""
DEFAULT_CACHE_MINIMUM = DEFAULT_MINIMUMS.default


TTL_SECONDS: Mapping[str, float] = {"5m": 300.0, "1h": 3600.0}
"""How long an entry lives after its last write or read, by `cache_control.ttl`."""


def cache_minimum(model: str) -> int:
    """Return the minimum cacheable prompt length of `model`, in tokens."""
    return min_cacheable_tokens(model)


@dataclass(frozen=True, slots=True)
class Segment:
    """One counted piece of a prompt, in cache-prefix order."""

    tokens: int
    """The input tokens it is billed."""
    key: bytes
    """What identifies its content in a cache key (its block without `cache_control`)."""
    ttl: str | None
    """The TTL of the breakpoint on it, or None when it carries none."""


def ttl_of(cache_control: Any) -> str | None:
    """Return the TTL a (validated) `cache_control` value asks for, or None when there is none."""
    if isinstance(cache_control, Mapping):
        return str(cache_control.get("ttl", "5m"))
    return None


def mark_breakpoints(segments: list[Segment], top_cache_control: Any) -> list[Segment]:
    """Apply automatic caching to `segments` and raise `ApiError` (400) where the API rejects the breakpoints."""
    found = sum(segment.ttl is not None for segment in segments)
    if isinstance(top_cache_control, Mapping) and segments:
        # Automatic caching takes one of the four slots and marks the last block (unless already marked).
        found += 1
        if segments[-1].ttl is None:
            segments[-1] = replace(segments[-1], ttl=ttl_of(top_cache_control))
    if found > MAX_BREAKPOINTS:
        raise ApiError(
            400, f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )
    seen_5m = False
    for segment in segments:
        if segment.ttl == "5m":
            seen_5m = True
        elif segment.ttl == "1h" and seen_5m:
            raise ApiError(
                400, "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"
            )
    return segments


class CacheUsage(NamedTuple):
    """How a request's input tokens split between uncached input, cache writes and cache reads."""

    uncached: int
    write_5m: int
    write_1h: int
    read: int


class PromptCache:
    """The cached prefixes, keyed by model and content, each with its expiry time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._expiry.clear()

    def usage(self, model: str, segments: Sequence[Segment], now: float) -> CacheUsage:
        """Return how `segments` are billed at time `now`, and write or refresh the entries they touch."""
        total = sum(segment.tokens for segment in segments)
        minimum = cache_minimum(model)
        digest = hashlib.sha256(model.encode())
        done = 0
        points: list[tuple[int, str, str]] = []
        for segment in segments:
            digest.update(len(segment.key).to_bytes(8, "big") + segment.key)
            done += segment.tokens
            if segment.ttl is not None and done >= minimum:
                points.append((done, digest.hexdigest(), segment.ttl))
        if not points:
            return CacheUsage(total, 0, 0, 0)
        with self._lock:
            cache = self._expiry
            for key in [key for key, expiry in cache.items() if expiry <= now]:
                del cache[key]
            read = max((tokens for tokens, key, _ in points if key in cache), default=0)
            write_5m = write_1h = 0
            covered = read
            for tokens, key, ttl in points:
                if tokens > covered:
                    if ttl == "1h":
                        write_1h += tokens - covered
                    else:
                        write_5m += tokens - covered
                    covered = tokens
                cache[key] = max(cache.get(key, 0.0), now + TTL_SECONDS[ttl])
        return CacheUsage(total - points[-1][0], write_5m, write_1h, read)
