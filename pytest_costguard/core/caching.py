"""Mark system prompts for prompt caching, only where the API will actually cache them.

A prompt shorter than the model's minimum cacheable length runs uncached without any error, so a
`cache_control` there is dead weight; a cache write costs 1.25x (5 minutes) or 2x (1 hour) the input price,
so caching a prompt that is sent only once costs more than not caching it. This module decides from
offline estimates; the response's `usage` (cache_creation / cache_read tokens) is the truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ..domain.models import lookup_model_family
from ..domain.request import MAX_BREAKPOINTS, breakpoint_ttls, content_blocks, count_breakpoints, system_text

__all__ = [
    "DEFAULT_MINIMUMS",
    "MAX_BREAKPOINTS",
    "CacheMinimums",
    "CacheTTL",
    "build_cached_messages",
    "count_breakpoints",
    "estimate_tokens",
    "mark_system_prompt_cacheable",
    "min_cacheable_tokens",
]

CacheTTL = Literal["5m", "1h"]

_TTL_RANK: Mapping[str, int] = MappingProxyType({"5m": 0, "1h": 1})


@dataclass(frozen=True, slots=True)
class CacheMinimums(Mapping[str, int]):
    """Minimum cacheable prompt length, in tokens, by model-name prefix; the longest matching prefix wins.

    Matched by `domain.models.lookup_model_family`: a prefix matches the model id it names and every id that
    continues it after a dash (`claude-opus-4-7` matches `claude-opus-4-7-20260101`, `claude-opus-4-7@20260101`,
    Bedrock's `us.anthropic.claude-opus-4-7-v1:0` and `claude-opus-4.7`, not `claude-opus-4-70`).
    """

    by_prefix: Mapping[str, int]
    """Model-name prefix -> minimum cacheable tokens."""
    default: int = 1024
    """Minimum for a model no prefix matches."""
    _longest_first: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = dict(self.by_prefix)
        for prefix, minimum in [*table.items(), ("default", self.default)]:
            if not isinstance(prefix, str) or not prefix:
                raise ValueError(f"CacheMinimums: {prefix!r} is not a model-name prefix")
            if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
                raise ValueError(
                    f"CacheMinimums: minimum for {prefix!r} must be an int >= 0, got {minimum!r}"
                )
        # Frozen all the way down, and hashable as a whole only via `default`: the table is a read-only view.
        object.__setattr__(self, "by_prefix", MappingProxyType(table))
        ordered = tuple(sorted(table.items(), key=lambda item: (-len(item[0]), item[0])))
        object.__setattr__(self, "_longest_first", ordered)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for the session's child processes (metering.children); a read-only view does not pickle.
        return (CacheMinimums, (dict(self.by_prefix), self.default))

    def __getitem__(self, prefix: str) -> int:
        return self.by_prefix[prefix]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_prefix)

    def __len__(self) -> int:
        return len(self.by_prefix)

    def __hash__(self) -> int:
        return hash((self._longest_first, self.default))

    def for_model(self, model: str) -> int:
        """Return the minimum cacheable prompt length of `model`, in tokens."""
        found = lookup_model_family(self._longest_first, model)
        return self.default if found is None else found


DEFAULT_MINIMUMS = CacheMinimums(
    {
        "claude-opus-5": 512,
        "claude-opus-5-5": 512,
        "claude-sonnet-5-5": 512,
        "claude-haiku-5-5": 512,
        "claude-fable": 512,
        "claude-mythos": 512,
        "claude-opus-4-8": 1024,
        "claude-sonnet-5": 1024,
        "claude-sonnet-4-5": 1024,
        "claude-sonnet-4-6": 1024,
        "claude-opus-4-7": 2048,
        "claude-opus-4-5": 4096,
        "claude-opus-4-6": 4096,
        "claude-haiku-4-5": 4096,
        # Legacy Haiku 3 and 3.5 (Anthropic's docs); every other older model is at the 1024 default.
        "claude-3-haiku": 2048,
        "claude-3-5-haiku": 2048,
    },
    default=1024,
)
"""Anthropic's published minimums. Some observers report 2048 for Sonnet 4.6: pass your own if needed."""


def min_cacheable_tokens(model: str, minimums: Mapping[str, int] = DEFAULT_MINIMUMS) -> int:
    """Return the fewest prompt tokens `model` caches; below it a breakpoint is silently ignored.

    `minimums` may be a `CacheMinimums` or a plain prefix -> tokens mapping (then the default is 1024).
    """
    return _as_minimums(minimums).for_model(model)


def _as_minimums(minimums: Mapping[str, int] | None) -> CacheMinimums:
    if minimums is None:
        return DEFAULT_MINIMUMS
    return minimums if isinstance(minimums, CacheMinimums) else CacheMinimums(minimums)


def estimate_tokens(text: str) -> int:
    """Estimate the tokens in `text`, on the low side: ceil(UTF-8 bytes / 4).

    Low on purpose. The estimate only decides whether a prompt is long enough to be worth a breakpoint,
    and the two possible errors are not equal: marking a prompt that turns out below the minimum is
    harmless (it runs uncached, no error, no write premium), while underestimating only skips prompts near
    the threshold, where the saving is smallest and a write premium on a prompt sent once is likeliest
    to be wasted. Four bytes per token is about what English takes and less than code, non-Latin text or
    the newer tokenizer of 4.7+ models (~30% more tokens) take, so real counts are usually higher.
    """
    return math.ceil(len(text.encode("utf-8")) / 4)


def _check_ttl(ttl: str | None) -> None:
    if ttl is not None and ttl not in _TTL_RANK:
        raise ValueError(f"ttl must be None, '5m' or '1h', got {ttl!r}")


def _cache_control(ttl: str | None) -> dict[str, str]:
    # 5 minutes is the API's default TTL: the bare form is what every Anthropic example sends.
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


def build_cached_messages(
    system_prompt: str,
    user_input: str,
    *,
    model: str,
    ttl: CacheTTL | None = None,
    minimums: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Build `system` and `messages` kwargs, the system prompt marked for caching when it is long enough.

    Splat the result into `client.messages.create(model=model, max_tokens=..., **kwargs)`. The system
    prompt becomes one text block with `cache_control` when its estimated tokens reach `model`'s minimum,
    and stays a plain string otherwise; an empty one is left out. `ttl` is None or "5m" (5 minutes) or
    "1h". Only worth it for a prompt that is sent more than once within the TTL.
    """
    _check_ttl(ttl)
    kwargs: dict[str, Any] = {}
    if system_prompt:
        if estimate_tokens(system_prompt) >= min_cacheable_tokens(model, _as_minimums(minimums)):
            kwargs["system"] = [{"type": "text", "text": system_prompt, "cache_control": _cache_control(ttl)}]
        else:
            kwargs["system"] = system_prompt
    kwargs["messages"] = [{"role": "user", "content": user_input}]
    return kwargs


def _fitting_ttl(wanted: str, earlier: list[str], later: list[str]) -> str | None:
    """Return `wanted` or else the other TTL, whichever keeps longer TTLs first; None if neither does."""
    for ttl in (wanted, *(other for other in _TTL_RANK if other != wanted)):
        rank = _TTL_RANK[ttl]
        if all(_TTL_RANK.get(t, 0) >= rank for t in earlier) and all(
            _TTL_RANK.get(t, 0) <= rank for t in later
        ):
            return ttl
    return None


def mark_system_prompt_cacheable(
    body: Mapping[str, Any],
    *,
    minimums: Mapping[str, int] = DEFAULT_MINIMUMS,
    ttl: CacheTTL | None = None,
) -> dict[str, Any] | None:
    """Return a copy of a Messages request body with its system prompt marked cacheable, or None to leave it.

    The input is never mutated; only `system` and the block that gets the breakpoint are copied. A string
    system prompt becomes a single text block; with a list, the last block gets the breakpoint. None when:
    there is no system prompt (or it is not text blocks), its estimate is below the minimum for
    `body["model"]`, the system prompt already has a breakpoint, the body uses top-level (automatic)
    caching, or it already has 4 breakpoints.

    TTL ordering: breakpoints run tools -> system -> messages and a longer TTL may not follow a shorter one.
    When the wanted TTL (`ttl`, default 5m) would break that, the other TTL is used if it fits: 1h when a
    later message breakpoint is 1h (the system tokens sit before that breakpoint and are billed as 1-hour
    writes anyway, so this costs nothing extra), 5m when `ttl="1h"` was asked but a tool breakpoint is 5m.
    When neither fits (a 5m tool breakpoint before a 1h message one: the body is invalid already), None.
    """
    _check_ttl(ttl)
    model = body.get("model")
    system = body.get("system")
    text = system_text(system)
    if not isinstance(model, str) or not text:
        return None
    if isinstance(body.get("cache_control"), Mapping) or count_breakpoints(body) >= MAX_BREAKPOINTS:
        return None
    system_blocks = content_blocks(system)
    if breakpoint_ttls(body, "system"):
        return None
    if estimate_tokens(text) < min_cacheable_tokens(model, _as_minimums(minimums)):
        return None
    chosen = _fitting_ttl(
        ttl or "5m",
        earlier=breakpoint_ttls(body, "tools"),
        later=breakpoint_ttls(body, "messages"),
    )
    if chosen is None:
        return None
    control = _cache_control(chosen)
    if isinstance(system, str):
        new_system: list[Any] = [{"type": "text", "text": system, "cache_control": control}]
    else:
        new_system = list(system_blocks)
        new_system[-1] = {**new_system[-1], "cache_control": control}
    return {**body, "system": new_system}
