"""Records: what one call used (`Usage`), what it cost (`CostRecord`) and a call refused (`Refusal`), with one codec.

The same codec (`record_to_dict` / `record_from_dict`, `refusal_to_dict` / `refusal_from_dict`) serves the
xdist wire, the SQLite ledger's rows and the JSON report: field names are the dataclasses' own, money is
Decimal text unless the caller converts it at its edge (the JSON report writes numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from .money import to_decimal, usd_from_json

__all__ = [
    "MONEY_FIELDS",
    "RECORD_FIELDS",
    "CostRecord",
    "Refusal",
    "Usage",
    "endpoint_label",
    "is_endpoint_label",
    "record_from_dict",
    "record_to_dict",
    "refusal_from_dict",
    "refusal_to_dict",
    "usage_from_openai",
    "usage_from_response",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one Messages response, in the API's own terms."""

    input_tokens: int = 0
    """Uncached input tokens only (the API's `usage.input_tokens`)."""
    output_tokens: int = 0
    """Output tokens, thinking included."""
    cache_write_5m_tokens: int = 0
    """Input tokens written to the 5-minute cache."""
    cache_write_1h_tokens: int = 0
    """Input tokens written to the 1-hour cache."""
    cache_read_input_tokens: int = 0
    """Input tokens read from the cache."""
    web_search_requests: int = 0
    """Server-side web searches performed."""
    batch: bool = False
    """Billed at the Message Batches tier (`service_tier == "batch"`)."""
    fast: bool = False
    """Billed at fast-mode prices (`speed == "fast"`)."""
    us_only: bool = False
    """Run with US-only inference (`inference_geo == "us"`), which costs more on recent models."""
    service_tier: str = ""
    """OpenAI's processing tier when it changes prices ("flex" or "priority"); empty for the standard tier."""
    provider: str = "anthropic"
    """Whose API billed it: "anthropic" or "openai" (prices are looked up under this provider)."""

    @property
    def cache_creation_input_tokens(self) -> int:
        """All cache writes, whatever their TTL."""
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def total_input_tokens(self) -> int:
        """Every input token the request was billed for: uncached, written and read."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def _int(value: Any) -> int:
    if type(value) is int:
        return value if value > 0 else 0
    return int(value) if isinstance(value, (int, float)) and value > 0 else 0


def usage_from_response(usage: Mapping[str, Any] | None) -> Usage:
    """Build a `Usage` from a Messages response's `usage` object (a dict, as in the JSON body)."""
    if not usage:
        return Usage()
    get = usage.get
    creation_total = _int(get("cache_creation_input_tokens"))
    write_5m = write_1h = 0
    split = get("cache_creation")
    if split and isinstance(split, (dict, Mapping)):
        write_1h = _int(split.get("ephemeral_1h_input_tokens"))
        write_5m = _int(split.get("ephemeral_5m_input_tokens"))
    if write_5m + write_1h < creation_total:
        # Older responses carry only the total: those writes were 5-minute writes.
        write_5m = creation_total - write_1h
    server_tools = get("server_tool_use")
    searches = 0
    if server_tools and isinstance(server_tools, (dict, Mapping)):
        searches = _int(server_tools.get("web_search_requests"))
    return Usage(
        _int(get("input_tokens")),
        _int(get("output_tokens")),
        write_5m,
        write_1h,
        _int(get("cache_read_input_tokens")),
        searches,
        get("service_tier") == "batch",
        get("speed") == "fast",
        get("inference_geo") == "us",
    )


PRICED_TIERS = ("flex", "priority")
"""OpenAI service tiers priced apart from the standard one (genai-prices' `service_tier` price context)."""


def _details(usage: Mapping[str, Any], key: str, field: str) -> int:
    nested = usage.get(key)
    return _int(nested.get(field)) if isinstance(nested, Mapping) else 0


def usage_from_openai(usage: Mapping[str, Any] | None, *, service_tier: Any = None, batch: bool = False) -> Usage:
    """Build a `Usage` from an OpenAI response's `usage` (Chat Completions, Responses or Embeddings).

    OpenAI counts the other way round from Anthropic: `prompt_tokens` (Chat, Embeddings) and `input_tokens`
    (Responses) are the *total* input, and `cached_tokens` is the part of it read from the cache, so the
    uncached input is their difference. Reasoning tokens are already inside `completion_tokens` /
    `output_tokens` (they are billed as output and never added again). `service_tier` is the response's own
    (what was billed); "flex" and "priority" are priced apart, anything else at the standard tier.
    """
    tier = service_tier if service_tier in PRICED_TIERS else ""
    if not usage:
        return Usage(service_tier=tier, batch=batch, provider="openai")
    if "prompt_tokens" in usage:
        total_in = _int(usage.get("prompt_tokens"))
        cached = _details(usage, "prompt_tokens_details", "cached_tokens")
        output = _int(usage.get("completion_tokens"))
    else:
        total_in = _int(usage.get("input_tokens"))
        cached = _details(usage, "input_tokens_details", "cached_tokens")
        output = _int(usage.get("output_tokens"))
    cached = min(cached, total_in)
    return Usage(
        input_tokens=total_in - cached,
        output_tokens=output,
        cache_read_input_tokens=cached,
        batch=batch,
        service_tier=tier,
        provider="openai",
    )


@dataclass(frozen=True, slots=True)
class CostRecord:
    """What one billed LLM call cost."""

    model: str
    """The model that billed the call (the response's `model`)."""
    input_tokens: int
    """Uncached input tokens."""
    output_tokens: int
    """Output tokens."""
    cost_usd: Decimal
    """Exact cost in USD."""
    requested_model: str | None = None
    """The model the caller asked for, before routing (None when it was not routed)."""
    cache_creation_input_tokens: int = 0
    """Input tokens written to the prompt cache."""
    cache_read_input_tokens: int = 0
    """Input tokens read from the prompt cache."""
    web_search_requests: int = 0
    """Server-side web searches."""
    tag: str | None = None
    """What the caller attached: for the pytest plugin, the test's node id."""
    streamed: bool = False
    """The response was streamed (SSE)."""
    retries: int = 0
    """HTTP attempts that failed before this one."""
    estimated: bool = False
    """The usage was incomplete (a stream cut short, a body without usage): cost is a conservative bound."""
    cost_at_requested_usd: Decimal | None = None
    """What the same usage would have cost at the requested model (for routing savings)."""
    cost_uncached_usd: Decimal | None = None
    """What the same tokens would have cost with no prompt caching (for caching savings)."""
    reserved_usd: Decimal | None = None
    """The worst case reserved before sending: a real cost above it means the bound's assumptions failed."""
    unpriced: bool = False
    """No price was known for the billed model (only possible without a budget): `cost_usd` is 0, or the
    admitted model's price standing in when the response named an unknown model."""
    replayed: bool = False
    """Answered from a cassette (`--llm-record`): nothing was sent or billed, `cost_usd` is 0."""
    replay_cost_usd: Decimal | None = None
    """For a replayed call, what it would have cost live, priced at today's rates: what replay saved."""
    provider: str = "anthropic"
    """Whose API billed the call: "anthropic" or "openai" (reports and ledgers written before it read as
    anthropic)."""

    def __post_init__(self) -> None:
        if not isinstance(self.cost_usd, Decimal):
            object.__setattr__(self, "cost_usd", to_decimal(self.cost_usd, name="cost_usd"))

    @property
    def total_input_tokens(self) -> int:
        """All input tokens: uncached, written and read."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def endpoint_label(path: str) -> str:
    """What a call to an endpoint the meter cannot price is recorded as, in place of a model: `POST /v1/...`."""
    return f"POST {path}"


def is_endpoint_label(model: str) -> bool:
    """Return whether a record's `model` is an `endpoint_label` (model names never hold a space)."""
    return model.startswith("POST /")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call refused before it was sent."""

    tag: str | None
    """The test that made it (its node id), or None outside tests."""
    scope: str
    """Which budget refused it: "session" or "test <nodeid>"."""
    worst_case_usd: Decimal
    """Its worst-case cost."""
    message: str
    """The refusal as the caller saw it."""
    worker: str | None = None
    """The process that made it (an xdist worker id), when it had one."""


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CostRecord))
"""Every field of a `CostRecord`, in order: what the codec carries."""
MONEY_FIELDS: frozenset[str] = frozenset(f.name for f in fields(CostRecord) if "Decimal" in str(f.type))
"""The `CostRecord` fields holding USD amounts."""

Money = Callable[[Decimal], Any]


_FIELD_IS_MONEY: tuple[tuple[str, bool], ...] = tuple((name, name in MONEY_FIELDS) for name in RECORD_FIELDS)


def record_to_dict(record: CostRecord, *, money: Money = str) -> dict[str, Any]:
    """Return a record as plain values, money converted by `money` (Decimal text by default: nothing rounded)."""
    # One pass, each field read once: a report of 50,000 calls converts 50,000 records (docs/performance.md).
    out: dict[str, Any] = {}
    for name, is_money in _FIELD_IS_MONEY:
        value = getattr(record, name)
        out[name] = money(value) if is_money and value is not None else value
    return out


def record_from_dict(data: Mapping[str, Any]) -> CostRecord:
    """Rebuild a record from `record_to_dict`'s output (unknown keys ignored, missing ones defaulted)."""
    values = {name: data[name] for name in RECORD_FIELDS if name in data}
    for name in MONEY_FIELDS:
        if values.get(name) is not None:
            values[name] = usd_from_json(values[name])
    for name in ("streamed", "estimated", "unpriced", "replayed"):
        if name in values:
            values[name] = bool(values[name])
    if not values.get("provider"):
        values.pop("provider", None)  # written before OpenAI was metered: an Anthropic call
    return CostRecord(**values)


def refusal_to_dict(refusal: Refusal, *, money: Money = str) -> dict[str, Any]:
    """Return a refusal as plain values, money converted by `money`."""
    return {
        "nodeid": refusal.tag,
        "scope": refusal.scope,
        "worst_case_usd": money(refusal.worst_case_usd),
        "message": refusal.message,
        "worker": refusal.worker,
    }


def refusal_from_dict(data: Mapping[str, Any]) -> Refusal:
    """Rebuild a refusal from `refusal_to_dict`'s output."""
    return Refusal(
        data.get("nodeid"),
        str(data["scope"]),
        usd_from_json(data["worst_case_usd"]),
        str(data["message"]),
        data.get("worker"),
    )
