"""Budgets: the error a refused call raises, the worst-case cost of a request before it is sent, and the
overspend a settled run may still show.

The worst-case bound (`worst_case_cost`) is what makes a hard cap possible: a call is admitted only when its
worst case fits in what is left of the budget. Its rules, each with its source in docs/budgets.md:

* Text: input tokens <= UTF-8 bytes of the request's billed content serialized as compact JSON (system,
  messages, tools). Claude's tokenizer is a byte-level BPE, so a text never has more tokens than bytes; the JSON
  keys and punctuation more than cover the few template tokens the API adds per message.
* Content whose tokens are not in its bytes is bounded by what the API allows (`BoundRules`): an image, inline
  or by reference, at the per-image maximum (its base64 bytes are not counted); an inline PDF at its pages (counted
  from its bytes) times the per-page maximum, on top of its bytes; a PDF whose pages cannot be counted, and any
  document by URL or `file_id`, at the model's context window.
* Tools: the tool-use system prompt, plus each built-in tool's documented overhead (computer use, bash, text
  editor; an unknown typed tool a generous allowance).
* Server tools: web search `max_uses` (or `DEFAULT_WEB_SEARCH_USES`) searches at the per-search fee, each with
  `WEB_SEARCH_RESULT_ALLOWANCE` tokens of results; web fetch `max_uses` x `max_content_tokens`, the context
  window when either is absent.
* Without server tools, no request is billed more input than the model's context window: the bound is capped
  there. (Server tools run several samplings in one request, so their input is not capped.)
* Output tokens <= `max_tokens` (thinking included).
* An exact count (a preflight: `POST /v1/messages/count_tokens`, made by the provider adapter) replaces the
  request's own input in the bound (`bound_request(..., counted=N)`); what server tools may read after sending
  (web fetch content, web search results) cannot be counted and keeps its allowance on top.
* Input is priced at the dearest rate it could be billed at: the 1-hour cache write rate when a 1-hour
  breakpoint is present, the 5-minute write rate when any breakpoint is, else the plain input rate; tiered
  (long-context) prices are taken at the tier the bound falls in; `inference_geo="us"` adds 10%.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from ..domain.models import lookup_model_family
from ..domain.money import format_usd
from ..domain.openai_request import BILLED_KEYS, Endpoint, choices, output_limit
from ..domain.openai_request import parts as openai_parts
from ..domain.records import CostRecord
from ..domain.request import Block, blocks, content_blocks
from .pricing import US_ONLY_MULTIPLIER, PriceBook, Rates, UnknownModelPrice, default_price_book

__all__ = [
    "DEFAULT_RULES",
    "Bound",
    "BoundRules",
    "BudgetExceededError",
    "OpenAIBoundRules",
    "Overspend",
    "UnboundedCallError",
    "UnboundedRequestError",
    "bound_openai_request",
    "bound_request",
    "find_overspend",
    "input_token_bound",
    "refusal_frame",
    "with_openai_max_output",
    "worst_case_cost",
]

TOOL_PROMPT_ALLOWANCE = 1_000
"""The hidden tool-use system prompt (346 tokens on Claude 4 models, Anthropic's tool-use docs), with room."""
DEFAULT_WEB_SEARCH_USES = 10
WEB_SEARCH_RESULT_ALLOWANCE = 50_000
_BILLED = ("system", "messages", "tools")
_BILLED_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""How the billed parts are measured: compact, unescaped JSON (`json.dumps` with these options builds this same
encoder on every call)."""
_MTOK = Decimal(1_000_000)
# `/Type /Page` objects, not `/Type /Pages` (the page tree's nodes), and `/Count N` of the page tree.
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_PDF_COUNT = re.compile(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)|/Count\s+(\d+)[^>]*?/Type\s*/Pages\b")


@dataclass(frozen=True, slots=True)
class OpenAIBoundRules:
    """What OpenAI's API allows where the request sets no bound itself; docs/budgets.md gives each source.

    Each table is by model family, the longest match winning (`domain.models.lookup_model_family`).
    """

    max_output: tuple[tuple[str, int], ...] = (
        ("gpt-5", 128_000),
        ("gpt-5-chat", 16_384),
        ("gpt-4.1", 32_768),
        ("gpt-4o", 16_384),
        ("gpt-4-turbo", 4_096),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo", 4_096),
        ("o1", 100_000),
        ("o1-mini", 65_536),
        ("o3", 100_000),
        ("o4-mini", 100_000),
    )
    """The most output tokens a model generates when the request sets no limit (OpenAI's model pages,
    platform.openai.com/docs/models/<model>, "Max output tokens", 2026-12); `llm_openai_max_output` adds to it."""
    context_windows: tuple[tuple[str, int], ...] = (
        ("gpt-5", 400_000),
        ("gpt-5-chat", 128_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4o", 128_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo", 16_385),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("text-embedding", 8_192),
    )
    """Context windows (same source, "Context window")."""
    default_context_window: int = 1_050_000
    """The context window of a model not listed: the largest OpenAI offers."""
    image_max_tokens: tuple[tuple[str, int], ...] = (("gpt-4o-mini", 48_200),)
    """An image's most tokens where a model bills more than `default_image_tokens`: GPT-4o mini bills 2,833 +
    5,667 per 512-px tile, 8 tiles at most (OpenAI's vision guide, "Calculating costs")."""
    default_image_tokens: int = 10_000
    """An image's most tokens on other models: tile models (GPT-4o, GPT-5) at most 85 + 170 x 8 = 1,445; patch
    models at most 1,536 patches x 2.46 = 3,779 (same guide), with room for larger `detail` settings."""
    pdf_page_max_tokens: int = 13_000
    """A page of an inline PDF: its image (`default_image_tokens`) and its text (OpenAI's file-inputs guide)."""
    builtin_tool_fee: Decimal = Decimal("0.03")
    """The dearest per-call fee of a built-in tool (code interpreter $0.03 a container, web search $25 per
    1,000 calls, file search $2.50 per 1,000; OpenAI's pricing page)."""
    builtin_tool_calls: int = 10
    """Built-in tool calls assumed when the request sets no `max_tool_calls`."""
    default_max_output: int = 128_000
    """Without a budget, the output assumed for a model not in `max_output` (for charging a stream that
    reported no usage)."""

    def lookup(self, table: tuple[tuple[str, int], ...], model: str | None, default: int | None) -> int | None:
        """The value of `table` for `model`'s family, else `default`."""
        found = lookup_model_family(table, model) if model else None
        return found if found is not None else default


def with_openai_max_output(rules: BoundRules, table: Iterable[tuple[str, int]]) -> BoundRules:
    """`rules` with these OpenAI maximum outputs first (a user's entry wins over the built-in one)."""
    openai = rules.openai
    merged = OpenAIBoundRules(**{**_fields(openai), "max_output": (*table, *openai.max_output)})
    return replace(rules, openai=merged)


def _fields(rules: OpenAIBoundRules) -> dict[str, Any]:
    return {f.name: getattr(rules, f.name) for f in fields(rules)}


class UnboundedRequestError(ValueError):
    """A request the plugin cannot bound before sending (no output limit on a model of unknown maximum, audio)."""


@dataclass(frozen=True, slots=True)
class BoundRules:
    """What the API allows for content whose tokens are not in its bytes; docs/budgets.md gives each source."""

    image_max_tokens: int = 1_600
    """An image's most tokens: the API resizes to a long edge of 1568 px / ~1.15 MP, ~1,600 tokens at
    width x height / 750 (Anthropic's vision docs)."""
    pdf_page_max_tokens: int = 3_000
    """A PDF page's most tokens beyond the file's own bytes: its image (<= 1,600) and its extracted text; Anthropic's
    PDF docs give 1,500-3,000 tokens a page."""
    default_context_window: int = 200_000
    """The context window of a model `context_windows` does not list."""
    context_windows: tuple[tuple[str, int], ...] = (
        ("claude-sonnet-4", 1_000_000),
        ("claude-opus-4-6", 1_000_000),
        ("claude-opus-4-7", 1_000_000),
        ("claude-opus-4-8", 1_000_000),
        ("claude-opus-5", 1_000_000),
        ("claude-sonnet-5", 1_000_000),
        ("claude-haiku-5", 1_000_000),
        ("claude-fable", 1_000_000),
        ("claude-mythos", 1_000_000),
    )
    """Context windows by model family, the longest match winning (Anthropic's models overview and context-window
    docs: 1M tokens for Sonnet 4 and newer and Opus 4.6 and newer, 200k for the others)."""
    tool_overheads: tuple[tuple[str, int], ...] = (
        ("computer_", 1_500),
        ("bash_", 300),
        ("text_editor_", 800),
    )
    """Input tokens a built-in tool's definition adds, by its `type` prefix (Anthropic's tool docs: computer use
    466-499 tokens of system prompt plus 735 for the tool, bash 245, text editor 700), rounded up."""
    unknown_tool_tokens: int = 2_000
    """Input tokens of a typed tool (a `type` other than "custom") listed in neither table."""
    openai: OpenAIBoundRules = OpenAIBoundRules()
    """The rules for OpenAI requests."""

    def context_window(self, model: str | None) -> int:
        """The most input tokens a request to `model` can hold."""
        found = lookup_model_family(self.context_windows, model) if model else None
        return found if found is not None else self.default_context_window


DEFAULT_RULES = BoundRules()
"""The rules `worst_case_cost` applies unless given others."""


@dataclass(frozen=True, slots=True)
class Bound:
    """The worst case of one request: its input-token bound, what it depends on, and what made it large."""

    input_tokens: int
    """The input-token bound."""
    breakpoints: int = 0
    """Cache breakpoints (`cache_control`), anywhere."""
    ttl_1h: int = 0
    """Breakpoints with a 1-hour TTL."""
    web_searches: int = 0
    """Server web searches the request allows."""
    notes: tuple[str, ...] = field(default=())
    """Content whose tokens are not in its bytes, and the tokens the bound gave it (for a refusal's message)."""
    cost: Decimal = Decimal(0)
    """The worst-case cost, once priced (`bound_request`)."""
    loose: bool = False
    """Whether the bound holds allowances for content whose tokens are not in its bytes (media, documents,
    tools, server tools): an exact count can only make it tighter or correct it."""
    fetched_tokens: int = 0
    """Input tokens server tools may read after the request is sent (web fetch, web search results): no count
    made before sending can see them."""
    output_tokens: int = 0
    """The output-token bound (every choice's), once priced."""


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
        why: Iterable[str] = (),
    ) -> None:
        self.spent = Decimal(str(spent))
        self.limit = Decimal(str(limit))
        self.requested = None if requested is None else Decimal(str(requested))
        self.reserved = Decimal(str(reserved))
        self.scope = scope
        self.why = tuple(why)
        """What made the call's worst case large (content whose tokens are not in its bytes, a batch)."""
        super().__init__(self._message())

    def explained(self, why: Iterable[str]) -> BudgetExceededError:
        """The same refusal, saying what made the worst case large."""
        return BudgetExceededError(
            self.spent, self.limit, self.requested, scope=self.scope, reserved=self.reserved, why=why
        )

    def _message(self) -> str:
        left = max(self.limit - self.spent - self.reserved, Decimal(0))
        held = f", {format_usd(self.reserved)} held by calls in flight" if self.reserved else ""
        if self.requested is None:
            return f"LLM {self.scope} budget exceeded: spent {format_usd(self.spent)} of {format_usd(self.limit)}"
        message = (
            f"LLM {self.scope} budget would be exceeded: this call could cost up to {format_usd(self.requested)}, "
            f"but only {format_usd(left)} of the {format_usd(self.limit)} budget is left "
            f"({format_usd(self.spent)} spent{held}); the call was not sent"
        )
        if self.why:
            message += (
                f". What made its worst case large: {'; '.join(self.why)}. "
                "Bound it tighter (max_uses, max_content_tokens, smaller max_tokens), "
                "or count it exactly before sending with --llm-preflight (see docs/budgets.md)"
            )
        return message

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_budget_error,
            (self.spent, self.limit, self.requested, self.scope, self.reserved, self.why),
        )


def refusal_frame(excinfo: Any) -> bool:
    """Tell pytest to hide a frame from a refused call's traceback (its `__tracebackhide__`), not from a bug's.

    The guard's, ledgers' and middleware's frames explain nothing a refusal's message does not; any other error
    raised through them keeps them. `excinfo` is pytest's `ExceptionInfo` (duck-typed: the core imports no pytest).
    """
    return bool(excinfo.errisinstance((BudgetExceededError, UnknownModelPrice)))


def _rebuild_budget_error(
    spent: Decimal, limit: Decimal, requested: Decimal | None, scope: str, reserved: Decimal, why: tuple[str, ...] = ()
) -> BudgetExceededError:
    return BudgetExceededError(spent, limit, requested, scope=scope, reserved=reserved, why=why)


class UnboundedCallError(BudgetExceededError):
    """A call was refused because nothing in the request bounds its cost (an endpoint the meter does not
    know, a body it cannot read), so no budget can hold it."""

    def __init__(
        self,
        endpoint: str,
        reason: str,
        limit: Decimal | float,
        spent: Decimal | float = Decimal(0),
        *,
        scope: str = "session",
        advice: str = "",
    ) -> None:
        self.endpoint = endpoint
        """The request, as `POST /v1/...`."""
        self.reason = reason
        """Why its cost cannot be bounded."""
        self.advice = advice
        """What the caller can do about it."""
        super().__init__(spent, limit, None, scope=scope)

    def _message(self) -> str:
        message = f"LLM {self.scope} budget cannot bound {self.endpoint}: {self.reason}; the call was not sent"
        return f"{message}. {self.advice}" if self.advice else message

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_unbounded_error,
            (self.endpoint, self.reason, self.limit, self.spent, self.scope, self.advice),
        )


def _rebuild_unbounded_error(
    endpoint: str, reason: str, limit: Decimal, spent: Decimal, scope: str, advice: str
) -> UnboundedCallError:
    return UnboundedCallError(endpoint, reason, limit, spent, scope=scope, advice=advice)


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


def _inline_data(block: Block) -> str | None:
    """The base64 `data` of an inline image or document, or None."""
    source = block.data.get("source")
    if not isinstance(source, Mapping) or source.get("type") != "base64":
        return None
    data = source.get("data")
    return data if isinstance(data, str) else None


def pdf_page_count(data: str) -> int | None:
    """Count a base64 PDF's pages from its bytes: its `/Type /Page` objects, or its page tree's `/Count`; None
    when neither can be read (object streams compress them, or the data is not base64)."""
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None
    pages = len(_PDF_PAGE.findall(raw))
    counts = [int(a or b) for a, b in _PDF_COUNT.findall(raw)]
    found = max([pages, *counts])
    return found or None


class _Tally:
    """What the block walk found: tokens beyond the bytes, bytes not billed as text, and why."""

    __slots__ = ("breakpoints", "extra", "fetched", "notes", "ttl_1h", "unbilled_bytes")

    def __init__(self) -> None:
        self.breakpoints = 0
        self.ttl_1h = 0
        self.extra = 0
        self.fetched = 0
        self.unbilled_bytes = 0
        self.notes: list[str] = []

    def add(self, tokens: int, note: str, *, fetched: bool = False) -> None:
        self.extra += tokens
        if fetched:
            self.fetched += tokens
        self.notes.append(f"{note}: up to {tokens:,} tokens")


def _media(block: Block, rules: BoundRules, window: int, tally: _Tally) -> None:
    """Bound one image or document block (and images inside a document's content)."""
    kind = block.kind
    source = block.source_type
    data = _inline_data(block)
    if kind == "image":
        if data is not None and data.isascii():
            tally.unbilled_bytes += len(data)  # its tokens come from its pixels, not its base64
        tally.add(rules.image_max_tokens, f"an image ({source or 'unknown source'}) at the per-image maximum")
        return
    if kind != "document" or source in ("text", None):
        return  # plain text is in the bytes
    if source == "content":
        for inner in content_blocks(block.data["source"].get("content")):
            if inner.get("type") == "image":
                _media(Block(block.section, inner), rules, window, tally)
        return
    pages = pdf_page_count(data) if data is not None else None
    if pages is not None:
        tally.add(pages * rules.pdf_page_max_tokens, f"an inline PDF of {pages} page(s) at the per-page maximum")
    elif data is not None:
        tally.add(window, "an inline document whose pages cannot be counted, at the context window")
    else:
        tally.add(window, f"a document by {source}, not visible before sending, at the context window")


def _tool_tokens(tools: Any, rules: BoundRules, window: int, tally: _Tally) -> tuple[int, bool]:
    """Add the tools' overheads and server tools' input to `tally`; return (web searches, any server tool)."""
    searches = 0
    server = False
    tally.extra += TOOL_PROMPT_ALLOWANCE
    for tool in content_blocks(tools):
        kind = tool.get("type")
        if not isinstance(kind, str) or kind == "custom":
            continue
        if kind.startswith("web_search"):
            server = True
            max_uses = tool.get("max_uses")
            uses = max_uses if isinstance(max_uses, int) and max_uses >= 0 else DEFAULT_WEB_SEARCH_USES
            searches += uses
            tally.extra += uses * WEB_SEARCH_RESULT_ALLOWANCE
            tally.fetched += uses * WEB_SEARCH_RESULT_ALLOWANCE
        elif kind.startswith("web_fetch"):
            server = True
            fetches, per_fetch = tool.get("max_uses"), tool.get("max_content_tokens")
            if isinstance(fetches, int) and fetches >= 0 and isinstance(per_fetch, int) and per_fetch >= 0:
                tally.add(
                    fetches * per_fetch, f"web_fetch, {fetches} use(s) of up to {per_fetch:,} tokens", fetched=True
                )
            else:
                tally.add(
                    window, "web_fetch without max_uses and max_content_tokens, at the context window", fetched=True
                )
        else:
            server = server or kind.startswith("code_execution")
            overhead = next((t for prefix, t in rules.tool_overheads if kind.startswith(prefix)), None)
            tally.extra += overhead if overhead is not None else rules.unknown_tool_tokens
    return searches, server


def _scan(request: Mapping[str, Any], rules: BoundRules, model: str | None) -> Bound:
    """Return the input-token bound of `request` and what it holds (breakpoints, 1h TTLs, web searches)."""
    billed = {key: request[key] for key in _BILLED if key in request}
    text = _BILLED_JSON.encode(billed)
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    tools = request.get("tools")
    top = request.get("cache_control")
    if not tools and top is None and '"cache_control"' not in text and '"source"' not in text:
        return Bound(size)  # the common case: plain text, no tools, no breakpoints, no media
    window = rules.context_window(model if model is not None else _model(request))
    tally = _Tally()
    for block in blocks(request):
        ttl = block.ttl
        if ttl is not None:
            tally.breakpoints += 1
            tally.ttl_1h += ttl == "1h"
        if block.section != "tools" and block.kind in ("image", "document"):
            _media(block, rules, window, tally)
    if isinstance(top, Mapping):
        tally.breakpoints += 1
        tally.ttl_1h += top.get("ttl") == "1h"
    searches, server = _tool_tokens(tools, rules, window, tally) if tools else (0, False)
    bound = size - tally.unbilled_bytes + tally.extra
    if not server and bound > window:
        # The API rejects (and does not bill) a prompt over the context window; server tools sample repeatedly.
        bound = window
        tally.notes.append(f"capped at the context window, {window:,} tokens")
    loose = bool(tally.extra or tally.unbilled_bytes)
    return Bound(
        bound, tally.breakpoints, tally.ttl_1h, searches, tuple(tally.notes), loose=loose, fetched_tokens=tally.fetched
    )


def _model(request: Mapping[str, Any]) -> str | None:
    model = request.get("model")
    return model if isinstance(model, str) else None


def input_token_bound(request: Mapping[str, Any], rules: BoundRules = DEFAULT_RULES) -> int:
    """Return an upper bound on the input tokens a Messages request can be billed for."""
    return _scan(request, rules, None).input_tokens


def bound_request(
    request: Mapping[str, Any],
    rates: Rates,
    rules: BoundRules = DEFAULT_RULES,
    *,
    model: str | None = None,
    counted: int | None = None,
) -> Bound:
    """Return the worst case of `request` at `rates`, with what made it large (see the module docstring).

    `counted`: the request's input tokens counted exactly before sending (a preflight). It replaces the local
    input bound; output, cache-write rates, search fees and what server tools may fetch are bounded as without it.
    """
    scan = _scan(request, rules, model)
    if counted is not None:
        notes = [f"its input, counted exactly before sending: {counted:,} tokens"]
        if scan.fetched_tokens:
            notes.append(f"what its server tools may read after sending: up to {scan.fetched_tokens:,} tokens")
        scan = replace(scan, input_tokens=counted + scan.fetched_tokens, notes=tuple(notes))
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
    # Built whole rather than with `dataclasses.replace` (a field-by-field copy in Python, on every call).
    return Bound(
        tokens_in,
        scan.breakpoints,
        scan.ttl_1h,
        scan.web_searches,
        scan.notes,
        cost=cost,
        loose=scan.loose,
        fetched_tokens=scan.fetched_tokens,
        output_tokens=tokens_out,
    )


def worst_case_from_rates(request: Mapping[str, Any], rates: Rates, rules: BoundRules = DEFAULT_RULES) -> Decimal:
    """Return the most `request` can cost at `rates` (see the module docstring for the assumptions)."""
    return bound_request(request, rates, rules).cost


def worst_case_cost(
    request: Mapping[str, Any],
    prices: PriceBook | None = None,
    *,
    model: str | None = None,
    rules: BoundRules = DEFAULT_RULES,
) -> Decimal:
    """Return an upper bound on what a Messages request can cost, before it is sent.

    Priced at `model` when given (the routed model), else at the request's own `model`.
    Raises `UnknownModelPrice` when no price is known for that model.
    """
    name = model or request.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError("the request names no model: cannot bound its cost")
    rates = (prices or default_price_book()).rates(name, fast=request.get("speed") == "fast")
    return bound_request(request, rates, rules, model=name).cost


# -- OpenAI ---------------------------------------------------------------------------------------------------
_OPENAI_MEDIA = ("image_url", "input_image", "file", "input_file")
_OPENAI_AUDIO = ("input_audio", "audio")
_FUNCTION_TOOLS = ("function", "custom")
_CONTEXT_KEYS = ("previous_response_id", "conversation", "prompt")
"""Responses parameters that add input the request does not show (earlier turns, a stored prompt)."""


def _openai_media(part: Mapping[str, Any], rules: OpenAIBoundRules, model: str, window: int, tally: _Tally) -> None:
    kind = part.get("type")
    if kind in _OPENAI_AUDIO:
        raise UnboundedRequestError(
            "audio input is billed at audio token prices, which the plugin does not bound: "
            "keep audio out of budgeted tests, or run them without a budget"
        )
    if kind in ("image_url", "input_image"):
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, Mapping) else url
        if isinstance(url, str) and url.startswith("data:"):
            tally.unbilled_bytes += len(url)  # its tokens come from its pixels, not its base64
        image = rules.lookup(rules.image_max_tokens, model, rules.default_image_tokens) or 0
        tally.add(image, "an image at the per-image maximum")
        return
    file = part.get("file") if kind == "file" else part
    data = file.get("file_data") if isinstance(file, Mapping) else None
    if isinstance(data, str):
        encoded = data.split(",", 1)[-1]
        tally.unbilled_bytes += len(data)
        pages = pdf_page_count(encoded)
        if pages is not None:
            tally.add(pages * rules.pdf_page_max_tokens, f"an inline PDF of {pages} page(s) at the per-page maximum")
            return
        tally.add(window, "an inline file whose pages cannot be counted, at the context window")
        return
    tally.add(window, "a file by id or URL, not visible before sending, at the context window")


def bound_openai_request(
    request: Mapping[str, Any],
    rates: Rates,
    rules: BoundRules = DEFAULT_RULES,
    *,
    endpoint: Endpoint,
    model: str,
    strict: bool = True,
) -> Bound:
    """Return the worst case of an OpenAI request at `rates` (docs/budgets.md, "OpenAI").

    Input: the UTF-8 bytes of what the model reads (OpenAI's tokenizers are byte-level BPEs, so a text has no
    more tokens than bytes), images and files at their maxima, earlier turns (`previous_response_id`) and
    built-in tools' results at the context window; capped at the window when nothing samples repeatedly.
    Output: the request's limit (`max_completion_tokens`, `max_tokens`, `max_output_tokens`) times `n`,
    else the model's maximum output. With `strict` (a budget applies), a request with no limit on a model of
    unknown maximum, or with audio, raises `UnboundedRequestError`; without, generous defaults stand in.
    """
    openai_rules = rules.openai
    window = openai_rules.lookup(openai_rules.context_windows, model, openai_rules.default_context_window) or 0
    keys = BILLED_KEYS.get(endpoint, ())
    billed = {key: request[key] for key in keys if key in request}
    text = _BILLED_JSON.encode(billed)
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    tally = _Tally()
    fees = Decimal(0)
    repeated = False
    if endpoint in ("chat", "responses"):
        for part in openai_parts(request, endpoint):
            if part.get("type") in _OPENAI_MEDIA or part.get("type") in _OPENAI_AUDIO:
                try:
                    _openai_media(part, openai_rules, model, window, tally)
                except UnboundedRequestError:
                    if strict:
                        raise
        audio_out = request.get("audio") is not None or "audio" in (request.get("modalities") or ())
        if strict and endpoint == "chat" and audio_out:
            raise UnboundedRequestError(
                "audio output is billed at audio token prices, which the plugin does not bound: "
                "keep audio out of budgeted tests, or run them without a budget"
            )
        tools = request.get("tools")
        if tools:
            tally.extra += TOOL_PROMPT_ALLOWANCE
            for tool in content_blocks(tools):
                kind = tool.get("type")
                if isinstance(kind, str) and kind not in _FUNCTION_TOOLS:
                    repeated = True
                    calls = request.get("max_tool_calls")
                    uses = calls if isinstance(calls, int) and calls >= 0 else openai_rules.builtin_tool_calls
                    fees += uses * openai_rules.builtin_tool_fee
                    tally.add(window, f"built-in tool {kind}, whose results are billed as input, at the context window")
        for key in _CONTEXT_KEYS:
            if request.get(key):
                tally.add(window, f"{key}: earlier input the request does not show, at the context window")
    tokens_in = size - tally.unbilled_bytes + tally.extra
    if not repeated and tokens_in > window:
        tokens_in = window
        tally.notes.append(f"capped at the context window, {window:,} tokens")
    limit = output_limit(request, endpoint)
    if limit is None:
        limit = openai_rules.lookup(openai_rules.max_output, model, None)
        if limit is None:
            if strict:
                raise UnboundedRequestError(
                    f"the request sets no output limit and the most {model!r} can generate is unknown: set "
                    "max_completion_tokens (Chat Completions) or max_output_tokens (Responses), or give the "
                    "model's maximum in llm_openai_max_output"
                )
            limit = openai_rules.default_max_output
        tally.notes.append(f"no output limit set: up to the model's maximum output, {limit:,} tokens")
    tokens_out = limit * choices(request, endpoint)
    cost = (tokens_in * rates.input.at(tokens_in) + tokens_out * rates.output.at(tokens_in)) / _MTOK + fees
    return Bound(tokens_in, notes=tuple(tally.notes), cost=cost, output_tokens=tokens_out)
