"""The guard: admits, routes and meters every intercepted LLM call, whatever client made it.

Provider adapters (`providers/anthropic.py`) call `begin` before an HTTP attempt is sent and `settle` or
`release` when it ends. The guard is provider-neutral: it sees request bodies, usages and money.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from ..core.budget import (
    DEFAULT_RULES,
    Bound,
    BoundRules,
    BudgetExceededError,
    UnboundedCallError,
    UnboundedRequestError,
    bound_openai_request,
    bound_request,
)
from ..core.caching import DEFAULT_MINIMUMS, CacheMinimums, mark_system_prompt_cacheable
from ..core.pricing import PriceBook, Rates, UnknownModelPrice, Usage, default_price_book
from ..core.routing import RoutePolicy
from ..domain.openai_request import Endpoint
from ..domain.records import PRICED_TIERS, CostRecord, Refusal
from ..domain.request import content_blocks
from .ledger import InMemoryLedger, Ledger, Reservation
from .scope import SESSION, Scope, current_scope, deliver

__all__ = ["CostGuard", "GuardConfig", "Refusal", "Ticket"]


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """How the guard treats calls."""

    route: RoutePolicy = field(default_factory=RoutePolicy)
    """Which model each request is sent to."""
    auto_cache: bool = False
    """Mark a long system prompt cacheable once it recurs."""
    cache_minimums: CacheMinimums = DEFAULT_MINIMUMS
    """Minimum cacheable prompt length per model."""
    prices: PriceBook = field(default_factory=default_price_book)
    """Where prices come from."""
    bound_rules: BoundRules = DEFAULT_RULES
    """What the worst-case bound allows for content whose tokens are not in its bytes (images, PDFs, files)."""


@dataclass(slots=True)
class Ticket:
    """One admitted HTTP attempt: what was held for it and how to record it."""

    tag: str | None
    requested_model: str
    model: str
    worst_case: Decimal
    max_tokens: int
    streamed: bool
    retries: int
    holds: list[tuple[Ledger, Reservation]]
    rates: Rates | None
    """The prices the attempt was admitted at (the model's, standard tier, `fast` or not); None when no price
    is known for the model and no budget applies (the call is metered unpriced)."""
    fast: bool
    batch: bool = False
    """A Message Batches creation: charged its requests' worst case, estimated, when it is created."""
    done: bool = False
    provider: str = "anthropic"
    """Whose API the attempt went to."""
    tier: str = ""
    """OpenAI's priced service tier the attempt asked for ("flex", "priority"), else empty."""
    input_bound: int = 0
    """The input-token bound the attempt was admitted with."""


class CostGuard:
    """Admit, route and meter calls against a session ledger; keep every billed call's record."""

    def __init__(self, config: GuardConfig | None = None, ledger: Ledger | None = None) -> None:
        self.config = config or GuardConfig()
        self.ledger: Ledger = ledger if ledger is not None else InMemoryLedger()
        self.fallback_scope = SESSION
        """Who is charged for a call made where no scope is set (a thread that carries no context)."""
        self.scope_owner: object = self
        """Whose scopes this guard reads from the context (`metering.scope.running`)."""
        self.records: list[CostRecord] = []
        self.refusals: list[Refusal] = []
        self.failed_attempts = 0
        self.test_ledgers: dict[str, InMemoryLedger] = {}
        """Each budgeted test's own ledger, opened with its first call."""
        self._open: dict[int, Ticket] = {}
        self._prompt_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[CostRecord], None]] = []

    # -- admission -----------------------------------------------------------------------------------------
    def begin(
        self,
        body: Mapping[str, Any],
        *,
        streamed: bool,
        retries: int = 0,
        provider: str = "anthropic",
        endpoint: Endpoint | None = None,
        routable: bool = True,
    ) -> tuple[Ticket, Mapping[str, Any]]:
        """Route and admit one attempt; return its ticket and the body to send.

        `provider` is whose API the body is for ("anthropic": a Messages body; "openai": a body for `endpoint`);
        `routable` False keeps the requested model whatever the policy (an Azure deployment names its model in
        the URL). Raises `BudgetExceededError` (nothing is sent) when its worst case does not fit a budget, or
        cannot be bounded under one, and `UnknownModelPrice` when the model it would go to has no known price
        and a budget applies: without a budget such a call is sent and recorded unpriced, since observing must
        never break a test.
        """
        scope = self.scope
        config = self.config
        requested = body.get("model", "")
        if not isinstance(requested, str):
            requested = str(requested)
        route = config.route
        if (scope.pinned_model is None and route.is_off) or not routable:
            model = requested  # the common case, decided without building a RoutingDecision
        else:
            model = route.route(requested, body, pinned=scope.pinned_model, provider=provider, endpoint=endpoint).model
            if model != requested:
                body = {**body, "model": model}
        anthropic = provider == "anthropic"
        if config.auto_cache and anthropic:
            body = self._maybe_cache(body)
        fast = anthropic and body.get("speed") == "fast"
        tier = "" if anthropic or body.get("service_tier") not in PRICED_TIERS else str(body["service_tier"])
        budgeted = self.ledger.limit is not None or scope.budget is not None
        rates: Rates | None
        try:
            rates = config.prices.rates(model, fast=fast, provider=provider, tier=tier)
        except UnknownModelPrice:
            if budgeted:
                raise  # a budget cannot bound a call it cannot price
            rates = None
        bound = self._bound(scope, body, rates, model, provider, endpoint, budgeted) if rates is not None else None
        worst = bound.cost if bound is not None else _ZERO
        holds = self._reserve(scope, worst, bound.notes if bound is not None else ())
        if anthropic:
            max_tokens = body.get("max_tokens")
            max_tokens = max_tokens if isinstance(max_tokens, int) else 0
        else:
            max_tokens = bound.output_tokens if bound is not None else 0
        ticket = Ticket(
            scope.tag,
            requested,
            model,
            worst,
            max_tokens,
            streamed,
            retries,
            holds,
            rates,
            fast,
            provider=provider,
            tier=tier,
            input_bound=bound.input_tokens if bound is not None else 0,
        )
        with self._lock:
            self._open[id(ticket)] = ticket
        return ticket, body

    def _bound(
        self,
        scope: Scope,
        body: Mapping[str, Any],
        rates: Rates,
        model: str,
        provider: str,
        endpoint: Endpoint | None,
        budgeted: bool,
    ) -> Bound:
        """The worst case of `body` at `rates`, by its provider's rules; refuse (and record) what cannot be bounded."""
        rules = self.config.bound_rules
        if provider == "anthropic" or endpoint is None:
            return bound_request(body, rates, rules, model=model)
        try:
            return bound_openai_request(body, rates, rules, endpoint=endpoint, model=model, strict=budgeted)
        except UnboundedRequestError as exc:
            raise self.refuse_unbounded(str(exc), scope) from None

    def refuse_unbounded(self, reason: str, scope: Scope | None = None) -> UnboundedCallError:
        """Record (and return, for raising) the refusal of a call whose worst case cannot be bounded."""
        scope = scope or self.scope
        which = f"test {scope.tag}" if scope.budget is not None and scope.tag is not None else "session"
        limit = scope.budget if which != "session" else self.ledger.limit
        refused = UnboundedCallError(reason, scope=which, limit=limit or _ZERO)
        with self._lock:
            self.refusals.append(Refusal(scope.tag, which, _ZERO, str(refused)))
        return refused

    @property
    def budgeted(self) -> bool:
        """Whether a budget applies to a call made now (the session's, or the running test's)."""
        return self.ledger.limit is not None or self.scope.budget is not None

    def _reserve(self, scope: Scope, worst: Decimal, notes: tuple[str, ...]) -> list[tuple[Ledger, Reservation]]:
        """Hold `worst` against the test's budget and the session's, or record the refusal and raise it."""
        holds: list[tuple[Ledger, Reservation]] = []
        try:
            test_ledger = self.test_ledger(scope)
            if test_ledger is not None:
                holds.append((test_ledger, test_ledger.reserve(worst)))
            holds.append((self.ledger, self.ledger.reserve(worst)))
        except BudgetExceededError as exc:
            for ledger, reservation in holds:
                ledger.release(reservation)
            refused = exc.explained(notes) if notes else exc
            with self._lock:
                self.refusals.append(Refusal(scope.tag, refused.scope, worst, str(refused)))
            if refused is exc:
                raise
            raise refused from None
        return holds

    def begin_batch(
        self,
        body: Mapping[str, Any],
        *,
        retries: int = 0,
        provider: str = "anthropic",
        endpoint: Endpoint | None = None,
    ) -> Ticket:
        """Admit a batch's creation: hold the sum of its requests' worst cases at batch prices.

        `body` holds `requests`, each with its `params` (a Message Batch's own shape; an OpenAI batch's input
        file lines are given in it, their `endpoint` the batch's). The whole batch is refused (nothing is sent)
        when that sum does not fit a budget. Its results come up to 24 hours later, so the batch is charged
        that worst case, marked estimated, when it is created.
        """
        scope = self.scope
        config = self.config
        budgeted = self.ledger.limit is not None or scope.budget is not None
        worst = _ZERO
        notes: list[str] = []
        models: list[str] = []
        for request in content_blocks(body.get("requests")):
            params = request.get("params")
            if not isinstance(params, Mapping):
                continue
            model = str(params.get("model", ""))
            models.append(model)
            try:
                rates = config.prices.rates(
                    model, batch=True, fast=provider == "anthropic" and params.get("speed") == "fast", provider=provider
                )
            except UnknownModelPrice:
                if budgeted:
                    raise
                continue
            bound = self._bound(scope, params, rates, model, provider, endpoint, budgeted)
            worst += bound.cost
            notes.extend(note for note in bound.notes if note not in notes)
        kind = "a Message Batch" if provider == "anthropic" else "an OpenAI batch"
        why = (f"{kind} of {len(models)} request(s), at batch prices", *notes[:3])
        holds = self._reserve(scope, worst, why)
        label = models[0] if len(set(models)) == 1 else "message batch" if provider == "anthropic" else "batch"
        ticket = Ticket(
            scope.tag, label, label, worst, 0, False, retries, holds, None, False, batch=True, provider=provider
        )
        with self._lock:
            self._open[id(ticket)] = ticket
        return ticket

    def test_ledger(self, scope: Scope) -> InMemoryLedger | None:
        """The ledger of the test `scope` names, when it has its own budget (opened on its first call)."""
        if scope.tag is None or scope.budget is None:
            return None
        with self._lock:
            ledger = self.test_ledgers.get(scope.tag)
            if ledger is None:
                ledger = self.test_ledgers[scope.tag] = InMemoryLedger(limit=scope.budget, scope=f"test {scope.tag}")
        return ledger

    def _maybe_cache(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        system = body.get("system")
        if not system:
            return body
        digest = hashlib.blake2b(repr((body.get("model"), system)).encode(), digest_size=16).hexdigest()
        with self._lock:
            seen = self._prompt_counts.get(digest, 0)
            self._prompt_counts[digest] = seen + 1
        if seen == 0:
            # A prompt seen once is sent uncached: a cache write costs 1.25x and may never be read.
            return body
        marked = mark_system_prompt_cacheable(body, minimums=self.config.cache_minimums)
        return marked if marked is not None else body

    # -- settlement ----------------------------------------------------------------------------------------
    def _close(self, ticket: Ticket, record: CostRecord | None = None) -> bool:
        """Mark `ticket` done (once) and keep `record`, under one lock; return False if it was already done."""
        with self._lock:
            if ticket.done:
                return False
            ticket.done = True
            self._open.pop(id(ticket), None)
            if record is not None:
                self.records.append(record)
            return True

    def release(self, ticket: Ticket) -> None:
        """End an attempt that was not billed (an error status or a connection failure)."""
        if not self._close(ticket):
            return
        for ledger, reservation in ticket.holds:
            ledger.release(reservation)
        with self._lock:
            self.failed_attempts += 1

    def settle(
        self, ticket: Ticket, usage: Usage | None, model: str | None = None, *, estimated: bool = False
    ) -> CostRecord:
        """End an attempt that was billed: record its real cost (or its worst case when usage is missing)."""
        billed_model = model or ticket.model
        at_requested: Decimal | None
        uncached: Decimal | None
        unpriced = False
        if usage is None:
            # Billed, but how much is unknown: charge the worst case it was admitted for.
            usage, cost, estimated, at_requested, uncached = _NO_USAGE, ticket.worst_case, True, None, None
            unpriced = ticket.rates is None and not ticket.batch
        else:
            prices = self.config.prices
            priced_as_billed = True
            try:
                if (
                    ticket.rates is not None
                    and billed_model == ticket.model
                    and usage.fast == ticket.fast
                    and not usage.batch
                    and usage.service_tier == ticket.tier
                ):
                    cost = ticket.rates.cost(usage)  # billed as admitted (most calls): no second price lookup
                else:
                    cost = prices.cost(usage, billed_model)
            except UnknownModelPrice:
                # The response names a model we cannot price (an unexpected alias): bill it at the model we
                # admitted it for, whose price we know; with no price for that either (no budget applied),
                # record it unpriced at $0.
                cost = prices.cost(usage, ticket.model) if ticket.rates is not None else _ZERO
                priced_as_billed = False
                unpriced = True
            cached = usage.cache_write_5m_tokens or usage.cache_write_1h_tokens or usage.cache_read_input_tokens
            # Unrouted and uncached calls (most calls) cost the same in the counterfactuals: don't price them again.
            # A call we did not route costs what it cost at the model requested, even when the response names
            # another one (a gateway's substitute, a dated name): that difference is no routing saving.
            at_requested = (
                cost
                if ticket.model == ticket.requested_model
                or (priced_as_billed and ticket.requested_model == billed_model)
                else self._cost_or_none(usage, ticket.requested_model)
            )
            uncached = cost if priced_as_billed and not cached else self._cost_or_none(_uncached(usage), billed_model)
        record = CostRecord(
            model=billed_model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            requested_model=ticket.requested_model,
            cache_creation_input_tokens=usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            web_search_requests=usage.web_search_requests,
            tag=ticket.tag,
            streamed=ticket.streamed,
            retries=ticket.retries,
            estimated=estimated,
            cost_at_requested_usd=at_requested,
            cost_uncached_usd=uncached,
            reserved_usd=ticket.worst_case,
            unpriced=unpriced,
            provider=ticket.provider,
        )
        if not self._close(ticket, record):
            return record
        for ledger, reservation in ticket.holds:
            ledger.settle(reservation, record)
        for listener in self.listeners:
            listener(record)
        deliver(record, self)
        return record

    def settle_incomplete(self, ticket: Ticket, usage: Usage | None, model: str | None = None) -> CostRecord:
        """Charge an attempt whose usage never fully arrived (a stream cut or abandoned) conservatively.

        Input is what the stream reported at its start; output is `max_tokens`, the most that may have been
        generated and billed. Without even a start, the whole worst case is charged.
        """
        if usage is None:
            return self.settle(ticket, None, model)
        full = replace(usage, output_tokens=max(usage.output_tokens, ticket.max_tokens))
        return self.settle(ticket, full, model, estimated=True)

    def settle_open(self) -> None:
        """Charge every attempt still open (streams never closed) at its worst case."""
        with self._lock:
            tickets = list(self._open.values())
        for ticket in tickets:
            self.settle(ticket, None)

    def _cost_or_none(self, usage: Usage, model: str) -> Decimal | None:
        try:
            return self.config.prices.cost(usage, model)
        except (UnknownModelPrice, ValueError):
            return None

    # -- views ---------------------------------------------------------------------------------------------
    @property
    def scope(self) -> Scope:
        """Who is spending now: the context's scope, else the fallback (the running test, or the session)."""
        return current_scope(self.scope_owner, self.fallback_scope)

    @property
    def total_cost(self) -> Decimal:
        """Money billed by this process's calls."""
        with self._lock:
            return sum((r.cost_usd for r in self.records), Decimal(0))

    @property
    def session_refusals(self) -> int:
        """Calls refused by the session budget."""
        return sum(1 for r in self.refusals if r.scope == "session")


_NO_USAGE = Usage()
_ZERO = Decimal(0)


def _uncached(usage: Usage) -> Usage:
    return replace(
        usage,
        input_tokens=usage.total_input_tokens,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        cache_read_input_tokens=0,
    )
