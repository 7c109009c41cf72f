"""Budgets: the error a refused call raises, and the worst-case cost of a request before it is sent.

The worst-case bound (`worst_case_cost`) is what makes a hard cap possible: a call is admitted only when its
worst case fits in what is left of the budget. Its assumptions, documented in docs/budgets.md:

* Input tokens <= UTF-8 bytes of the request's billed content serialized as compact JSON (system, messages,
  tools). Claude's tokenizer is a byte-level BPE, so a text never has more tokens than bytes; the JSON keys and
  punctuation more than cover the few template tokens the API adds per message.
* Tool use adds a hidden system prompt (a few hundred tokens): `TOOL_PROMPT_ALLOWANCE` is added when tools are
  given. Images and documents given by URL or file id are not in the request bytes: each adds
  `REMOTE_IMAGE_ALLOWANCE` / `REMOTE_DOCUMENT_ALLOWANCE` tokens. Inline (base64) media are bounded by their bytes.
* Output tokens <= `max_tokens` (thinking included).
* Server web searches: `max_uses` of the tool, or `DEFAULT_WEB_SEARCH_USES`; each may add
  `WEB_SEARCH_RESULT_ALLOWANCE` input tokens of results.
* Input is priced at the dearest rate it could be billed at: the 1-hour cache write rate when a 1-hour
  breakpoint is present, the 5-minute write rate when any breakpoint is, else the plain input rate; tiered
  (long-context) prices are taken at the tier the bound falls in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from ..domain.money import format_usd
from ..domain.records import CostRecord
from .pricing import US_ONLY_MULTIPLIER, PriceBook, Rates, default_price_book

__all__ = [
    "BudgetExceededError",
    "Overspend",
    "find_overspend",
    "input_token_bound",
    "worst_case_cost",
]

TOOL_PROMPT_ALLOWANCE = 1_000
REMOTE_IMAGE_ALLOWANCE = 10_000
REMOTE_DOCUMENT_ALLOWANCE = 100_000
DEFAULT_WEB_SEARCH_USES = 10
WEB_SEARCH_RESULT_ALLOWANCE = 50_000
_INLINE_SOURCES = {"base64", "text", "content"}
_BILLED = ("system", "messages", "tools")
_MTOK = Decimal(1_000_000)
_new_tuple = tuple.__new__
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
# `JSONEncoder.encode` builds a C encoder on every call; build ours once. No circular-reference markers (so it
# can be reused safely after an error): a circular body falls back to `_ENCODER`, which reports it.
_C_ENCODE = (
    None if c_make_encoder is None
    else c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
)
_SCALARS = (str, int, float, bool, type(None))


class BudgetExceededError(Exception):
    """A call was refused because its worst-case cost does not fit in what is left of a budget."""

    def __init__(
        self,
        spent: Decimal | float,
        limit: Decimal | float,
        requested: Decimal | float | None = None,
        *,
        scope: str = "session",
        reserved: Decimal | float = Decimal(0),
    ) -> None:
        self.spent = Decimal(str(spent))
        self.limit = Decimal(str(limit))
        self.requested = None if requested is None else Decimal(str(requested))
        self.reserved = Decimal(str(reserved))
        self.scope = scope
        super().__init__(self._message())

    def _message(self) -> str:
        left = max(self.limit - self.spent - self.reserved, Decimal(0))
        held = f", {format_usd(self.reserved)} held by calls in flight" if self.reserved else ""
        if self.requested is None:
            return f"LLM {self.scope} budget exceeded: spent {format_usd(self.spent)} of {format_usd(self.limit)}"
        return (
            f"LLM {self.scope} budget would be exceeded: this call could cost up to {format_usd(self.requested)}, "
            f"but only {format_usd(left)} of the {format_usd(self.limit)} budget is left "
            f"({format_usd(self.spent)} spent{held}); the call was not sent"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_budget_error,
            (self.spent, self.limit, self.requested, self.scope, self.reserved),
        )


def _rebuild_budget_error(
    spent: Decimal, limit: Decimal, requested: Decimal | None, scope: str, reserved: Decimal
) -> BudgetExceededError:
    return BudgetExceededError(spent, limit, requested, scope=scope, reserved=reserved)


@dataclass(frozen=True, slots=True)
class Overspend:
    """Settled spend over a budget: the cap's assumptions failed for some call (a pricier model answered,
    usage the bound did not foresee)."""

    scope: str
    """Which budget: "session" or "test <nodeid>"."""
    limit: Decimal
    """The budget, USD."""
    spent: Decimal
    """What was settled against it, USD."""
    call_index: int
    """The position, among the records given, of the call whose settlement first went over."""
    call: CostRecord
    """That call."""

    @property
    def over(self) -> Decimal:
        """How far the settled spend is over the budget, USD."""
        return self.spent - self.limit

    def describe(self) -> str:
        """Say what overran, for a test failure or the terminal summary."""
        call = self.call
        asked = f" (asked for {call.requested_model})" if call.requested_model not in (None, call.model) else ""
        reserved = f", {format_usd(call.reserved_usd)} reserved" if call.reserved_usd is not None else ""
        where = f" in {call.tag}" if call.tag is not None and not self.scope.startswith("test ") else ""
        return (
            f"LLM {self.scope} budget overspent: {format_usd(self.spent)} settled of {format_usd(self.limit)}, "
            f"{format_usd(self.over)} over; the call that went over{where} was answered by {call.model}{asked} "
            f"and cost {format_usd(call.cost_usd)}{reserved}"
        )


def find_overspend(records: Iterable[CostRecord], limit: Decimal | None, scope: str) -> Overspend | None:
    """Return how `records` (in settlement order) went over `limit`, or None when they stayed within it."""
    if limit is None:
        return None
    spent = Decimal(0)
    first: tuple[int, CostRecord] | None = None
    for index, record in enumerate(records):
        spent += record.cost_usd
        if first is None and spent > limit:
            first = (index, record)
    if first is None:
        return None
    return Overspend(scope, limit, spent, first[0], first[1])


def _walk_blocks(value: Any, counts: dict[str, int]) -> None:
    """Count remote media and cache breakpoints anywhere in a request's content."""
    if isinstance(value, (dict, Mapping)):
        if "cache_control" in value and isinstance(value["cache_control"], Mapping):
            counts["breakpoints"] += 1
            if value["cache_control"].get("ttl") == "1h":
                counts["ttl_1h"] += 1
        kind = value.get("type")
        source = value.get("source")
        if kind in ("image", "document") and isinstance(source, Mapping) and source.get("type") not in _INLINE_SOURCES:
            counts["remote_image" if kind == "image" else "remote_document"] += 1
        for item in value.values():
            if isinstance(item, (Mapping, list)):
                _walk_blocks(item, counts)
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, _SCALARS):
                _walk_blocks(item, counts)


def _web_search_uses(tools: Any) -> int:
    uses = 0
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("web_search"):
                max_uses = tool.get("max_uses")
                uses += max_uses if isinstance(max_uses, int) and max_uses >= 0 else DEFAULT_WEB_SEARCH_USES
    return uses


def _compact_json(value: Any) -> str:
    """Serialize `value` as compact JSON, non-ASCII text kept as is (so its UTF-8 length is the wire size)."""
    if _C_ENCODE is not None:
        try:
            return "".join(_C_ENCODE(value, 0))
        except (ValueError, RecursionError):
            pass  # a circular structure: let the checking encoder say so
    return _ENCODER.encode(value)


class _Scan(NamedTuple):
    """What a request holds that its worst case depends on."""

    input_tokens: int
    """The input-token bound."""
    breakpoints: int = 0
    """Cache breakpoints (`cache_control`), anywhere."""
    ttl_1h: int = 0
    """Breakpoints with a 1-hour TTL."""
    web_searches: int = 0
    """Server web searches the request allows."""


def _scan(request: Mapping[str, Any]) -> _Scan:
    """Return the input-token bound of `request` and what it holds (breakpoints, 1h TTLs, web searches)."""
    billed = {}
    for key in _BILLED:
        if key in request:
            billed[key] = request[key]
    text = _compact_json(billed)
    bound = len(text) if text.isascii() else len(text.encode("utf-8"))
    tools = request.get("tools")
    top = request.get("cache_control")
    if not tools and top is None and '"cache_control"' not in text and '"source"' not in text:
        # The common case (plain text, no tools, no breakpoints, no remote media); tuple.__new__ skips the
        # NamedTuple's Python-level constructor, on every call.
        return _new_tuple(_Scan, (bound, 0, 0, 0))
    counts = {"breakpoints": 0, "ttl_1h": 0, "remote_image": 0, "remote_document": 0}
    if '"cache_control"' in text or '"source"' in text:
        _walk_blocks(billed, counts)  # the only keys it counts: most requests have neither
    if isinstance(top, Mapping):
        counts["breakpoints"] += 1
        counts["ttl_1h"] += top.get("ttl") == "1h"
    bound += counts["remote_image"] * REMOTE_IMAGE_ALLOWANCE
    bound += counts["remote_document"] * REMOTE_DOCUMENT_ALLOWANCE
    searches = _web_search_uses(tools)
    if tools:
        bound += TOOL_PROMPT_ALLOWANCE
    bound += searches * WEB_SEARCH_RESULT_ALLOWANCE
    return _Scan(bound, counts["breakpoints"], counts["ttl_1h"], searches)


def input_token_bound(request: Mapping[str, Any]) -> int:
    """Return an upper bound on the input tokens a Messages request can be billed for."""
    return _scan(request).input_tokens


def worst_case_from_rates(request: Mapping[str, Any], rates: Rates) -> Decimal:
    """Return the most `request` can cost at `rates` (see the module docstring for the assumptions)."""
    scan = _scan(request)
    tokens_in = scan.input_tokens
    input_rate = rates.input.at(tokens_in)
    if scan.breakpoints:
        input_rate = max(input_rate, rates.cache_write_5m.at(tokens_in))
    if scan.ttl_1h:
        input_rate = max(input_rate, rates.cache_write_1h.at(tokens_in))
    max_tokens = request.get("max_tokens")
    tokens_out = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    cost = (tokens_in * input_rate + tokens_out * rates.output.at(tokens_in)) / _MTOK
    if scan.web_searches:
        cost += scan.web_searches * rates.web_search_per_1k / 1000
    if request.get("inference_geo") == "us":
        # US-only inference costs 1.1x on recent models (`pricing.US_ONLY_MULTIPLIER`); the bound takes it on
        # every model and on search fees too, the dear side of what settlement charges.
        cost *= US_ONLY_MULTIPLIER
    return cost


def worst_case_cost(
    request: Mapping[str, Any], prices: PriceBook | None = None, *, model: str | None = None
) -> Decimal:
    """Return an upper bound on what a Messages request can cost, before it is sent.

    Priced at `model` when given (the routed model), else at the request's own `model`.
    Raises `UnknownModelPrice` when no price is known for that model.
    """
    name = model or request.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError("the request names no model: cannot bound its cost")
    rates = (prices or default_price_book()).rates(name, fast=request.get("speed") == "fast")
    return worst_case_from_rates(request, rates)
