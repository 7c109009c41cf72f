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
from typing import Any, Literal

from ..core.budget import (
    DEFAULT_RULES,
    Bound,
    BoundRules,
    BudgetExceededError,
    UnboundedCallError,
    UnboundedRequestError,
    bound_openai_request,
    bound_request,
    refusal_frame,
)
from ..core.caching import DEFAULT_MINIMUMS, CacheMinimums, mark_system_prompt_cacheable
from ..core.pricing import PriceBook, Rates, UnknownModelPrice, Usage, default_price_book, usage_from_response
from ..core.routing import RoutePolicy
from ..core.tally import Tally
from ..domain.openai_request import Endpoint
from ..domain.records import PRICED_TIERS, CostRecord, Refusal
from ..domain.request import content_blocks
from .ledger import BatchSharing, InMemoryLedger, Ledger, Reservation
from .scope import SESSION, Scope, current_scope, deliver

__all__ = ["CostGuard", "GuardConfig", "Plan", "PreflightMode", "Refusal", "RunFinishedError", "Ticket"]

PreflightMode = Literal["auto", "always", "off"]
"""When to count a request's input exactly before admitting it (`POST /v1/messages/count_tokens`)."""

LOOSE_MARGIN = 10
"""Under `auto`, a loose bound (media, documents, tools) is admitted without a count when it fits this many times
over in what is left: the count could not change its admission, a bound this many times too low (its allowances'
assumptions broken tenfold) would still fit, and the hold it keeps while the call runs leaves nine tenths of the
room to the calls beside it. The code under test then sees no extra `count_tokens` request on the wire."""


class RunFinishedError(RuntimeError):
    """A call made after its metered run wrote its report: it could not be counted, so it is not sent."""


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
    free_endpoints: tuple[str, ...] = ()
    """Endpoint path patterns the user declared free (`llm_free_endpoints`): passed through, not metered."""
    preflight: PreflightMode = "auto"
    """When a budget applies, count a request's input exactly before admitting it: `always`; `auto` when its
    local bound does not fit what is left, or is loose (media, documents, tools) and does not fit it
    `LOOSE_MARGIN` times over; `off` never."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One attempt routed and bounded but not admitted yet: what a preflight count can tighten."""

    scope: Scope
    """Who would be charged."""
    requested: str
    """The model the request asked for."""
    model: str
    """The model it goes to."""
    body: Mapping[str, Any]
    """The body to send (routed, maybe marked cacheable)."""
    rates: Rates | None
    """The model's prices; None when unknown and no budget applies."""
    bound: Bound | None
    """Its local worst case; None when unpriced."""
    preflight: bool
    """Whether to count its input exactly (`CostGuard.admit(..., counted=)`) before admitting it."""
    provider: str = "anthropic"
    """Whose API the body is for."""
    tier: str = ""
    """OpenAI's priced service tier the body asks for ("flex", "priority"), else empty."""


@dataclass(frozen=True, slots=True)
class _BatchRequest:
    """One request of a batch held for: its model and its worst case at batch prices."""

    model: str
    worst_case: Decimal


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
    """A Message Batches creation: its requests' worst case stays held until their results are read."""
    batch_requests: Mapping[str, _BatchRequest] = field(default_factory=dict)
    """A batch's requests by custom_id."""
    done: bool = False
    replayed: bool = False
    """Answered from a cassette: nothing is held or billed (`hold` turns it into a live attempt)."""
    notes: tuple[str, ...] = ()
    """What the worst-case bound assumed, for a refusal's message."""
    outer: tuple[str | None, ...] = ()
    """For a guard inside another (`parent`): who the enclosing guards charge, innermost first."""
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
        """The billed calls' records, in settlement order: every one, or the first `max_records`."""
        self.max_records: int | None = None
        """Keep at most this many records (None: every one); the calls beyond are counted in `overflow`."""
        self.overflow: Tally | None = None
        """Once `max_records` is reached, the tally of every call settled here, kept and not: what the report
        reads its figures from. Built by `new_tally`, so that it knows the budgets it is checked against."""
        self.new_tally: Callable[[], Tally] = Tally
        self.refusals: list[Refusal] = []
        self.failed_attempts = 0
        self.preflight_calls = 0
        """Exact input counts asked for before admitting a call (free, but rate-limited by the API)."""
        self.preflight_failed = 0
        """Of those, the ones that failed (the call fell back to its local bound)."""
        self._batches: dict[str, _OpenBatch] = {}
        """Batches created in this process whose results were not all settled yet, by batch id."""
        self.test_ledgers: dict[str, InMemoryLedger] = {}
        """Each budgeted test's own ledger, opened with its first call."""
        self._open: dict[int, Ticket] = {}
        self._prompt_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[CostRecord], None]] = []
        self.tapes: Any = None
        """The run's record/replay `replay.Recorder` (`--llm-record`), or None: calls are answered live."""
        self.parent: CostGuard | None = None
        """The guard of an enclosing run (a pytest run inside a test, a child process's session): every call
        is held against its budgets too, so an inner run may add limits, never escape the outer ones."""

    # -- admission -----------------------------------------------------------------------------------------
    def begin(
        self,
        body: Mapping[str, Any],
        *,
        streamed: bool,
        retries: int = 0,
        replay: bool = False,
        provider: str = "anthropic",
        endpoint: Endpoint | None = None,
        routable: bool = True,
    ) -> tuple[Ticket, Mapping[str, Any]]:
        """Route and admit one attempt at its local bound; return its ticket and the body to send.

        `provider` is whose API the body is for ("anthropic": a Messages body; "openai": a body for `endpoint`);
        `routable` False keeps the requested model whatever the policy (an Azure deployment names its model in
        the URL). Raises `BudgetExceededError` (nothing is sent) when its worst case does not fit a budget, or
        cannot be bounded under one, and `UnknownModelPrice` when the model it would go to has no known price
        and a budget applies: without a budget such a call is sent and recorded unpriced, since observing must
        never break a test. With `replay`, nothing is reserved: the attempt may be answered from a cassette
        (`hold` it if not).
        """
        plan = self.plan(body, replay=replay, provider=provider, endpoint=endpoint, routable=routable)
        return self.admit(plan, streamed=streamed, retries=retries, replay=replay), plan.body

    def plan(
        self,
        body: Mapping[str, Any],
        *,
        replay: bool = False,
        provider: str = "anthropic",
        endpoint: Endpoint | None = None,
        routable: bool = True,
    ) -> Plan:
        """Route and bound one attempt, and say whether an exact count of its input is worth asking for.

        Raises `UnknownModelPrice` as `begin` does (not with `replay`: a recording may answer it).
        """
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
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
        budgeted = not replay and self.budget_applies(scope)
        rates: Rates | None
        try:
            rates = config.prices.rates(model, fast=fast, provider=provider, tier=tier)
        except UnknownModelPrice:
            if budgeted:
                raise  # a budget cannot bound a call it cannot price
            rates = None
        bound = self._bound(scope, body, rates, model, provider, endpoint, budgeted) if rates is not None else None
        preflight = (
            anthropic
            and not replay
            and bound is not None
            and rates is not None
            and self._wants_preflight(scope, body, rates, bound)
        )
        return Plan(scope, requested, model, body, rates, bound, preflight, provider, tier)

    def _wants_preflight(self, scope: Scope, body: Mapping[str, Any], rates: Rates, bound: Bound) -> bool:
        """Whether counting `body`'s input exactly could change its admission (never without a budget)."""
        mode = self.config.preflight
        ledgers = self._capped_ledgers(scope)
        if mode == "off" or not ledgers:
            return False  # without a budget nothing is admitted or refused: the code under test sees no count
        if mode == "always":
            return True
        try:
            left = [ledger.remaining for ledger in ledgers]
        except Exception:
            return False  # a ledger that cannot be read now: the reservation reports it (and fails closed)
        if _fits(bound.cost, left, loose=bound.loose):
            return False  # a text bound that fits, or a loose one that fits with its margin: nothing to count
        # Even an input of zero tokens (output at max_tokens, what server tools may fetch) must fit, or the call
        # is refused whatever the count says.
        floor = bound_request(body, rates, self.config.bound_rules, model=str(body.get("model")), counted=0).cost
        return all(room is None or floor <= room for room in left)

    def admit(
        self,
        plan: Plan,
        *,
        streamed: bool,
        retries: int = 0,
        counted: int | None = None,
        preflight_failure: str | None = None,
        replay: bool = False,
    ) -> Ticket:
        """Admit a planned attempt: reserve its worst case, or record the refusal and raise it.

        `counted` is its input counted exactly before sending (replacing the local input bound);
        `preflight_failure` says why a count that was asked for failed (the local bound then applies, never a
        smaller one). With `replay`, nothing is reserved (see `begin`).
        """
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        scope, body, rates = plan.scope, plan.body, plan.rates
        bound = plan.bound
        if counted is not None or preflight_failure is not None:
            with self._lock:
                self.preflight_calls += 1
                self.preflight_failed += counted is None
        if counted is not None and rates is not None:
            bound = bound_request(body, rates, self.config.bound_rules, model=plan.model, counted=counted)
        worst = bound.cost if bound is not None else _ZERO
        notes = bound.notes if bound is not None else ()
        if preflight_failure is not None:
            notes = (*notes, f"the exact count before sending failed ({preflight_failure}): the local bound applied")
        holds = [] if replay else self._reserve(scope, worst, notes)
        if plan.provider == "anthropic":
            max_tokens = body.get("max_tokens")
            max_tokens = max_tokens if isinstance(max_tokens, int) else 0
        else:
            max_tokens = bound.output_tokens if bound is not None else 0
        ticket = Ticket(
            scope.tag,
            plan.requested,
            plan.model,
            worst,
            max_tokens,
            streamed,
            retries,
            holds,
            rates,
            plan.provider == "anthropic" and body.get("speed") == "fast",
            replayed=replay,
            notes=notes,
            outer=self._outer_tags(),
            provider=plan.provider,
            tier=plan.tier,
            input_bound=bound.input_tokens if bound is not None else 0,
        )
        with self._lock:
            self._open[id(ticket)] = ticket
        return ticket

    def hold(self, ticket: Ticket) -> None:
        """Make a replay ticket (`begin(replay=True)`) that found no recording a live attempt: reserve it now.

        Raises what `begin` would have (nothing is sent): `BudgetExceededError`, or `UnknownModelPrice` when a
        budget applies to a model with no known price.
        """
        if not ticket.replayed:
            return
        scope = self.scope
        if ticket.rates is None and not ticket.batch and (self.budget_applies(scope)):
            self.forget(ticket)
            # raises UnknownModelPrice, naming the model (priced as its provider bills it)
            self.config.prices.rates(ticket.model, fast=ticket.fast, provider=ticket.provider, tier=ticket.tier)
        try:
            ticket.holds = self._reserve(scope, ticket.worst_case, ticket.notes)
        except BudgetExceededError:
            self.forget(ticket)
            raise
        ticket.replayed = False

    def forget(self, ticket: Ticket) -> None:
        """Drop an attempt that was never sent and holds nothing (a call refused for want of a recording)."""
        if self._close(ticket):
            for ledger, reservation in ticket.holds:
                ledger.release(reservation)

    def budget_applies(self, scope: Scope) -> bool:
        """Whether a budget caps a call made in `scope`: the session's, the test's, or an enclosing run's."""
        if self.ledger.limit is not None or scope.budget is not None:
            return True
        parent = self.parent
        return parent is not None and parent.budget_applies(parent.scope)

    def _capped_ledgers(self, scope: Scope) -> list[Ledger]:
        """The ledgers with a limit that a call made in `scope` is held against: the test's and the session's,
        then each enclosing run's (as `_reserve` holds it), so an inner run without a budget of its own counts
        its input as the outer budget requires."""
        ledgers: list[Ledger] = []
        guard: CostGuard | None = self
        while guard is not None:
            test_ledger = guard.test_ledger(scope)
            ledgers.extend(
                ledger for ledger in (test_ledger, guard.ledger) if ledger is not None and ledger.limit is not None
            )
            guard = guard.parent
            if guard is not None:
                scope = guard.scope
        return ledgers

    def _outer_tags(self) -> tuple[str | None, ...]:
        tags: list[str | None] = []
        parent = self.parent
        while parent is not None:
            tags.append(parent.scope.tag)
            parent = parent.parent
        return tuple(tags)

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
        spent = self.ledger.spent if which == "session" else _ZERO
        refused = UnboundedCallError("this OpenAI request", reason, limit or _ZERO, spent, scope=which)
        with self._lock:
            self.refusals.append(Refusal(scope.tag, which, _ZERO, str(refused)))
        return refused

    @property
    def budgeted(self) -> bool:
        """Whether a budget applies to a call made now (the session's, the running test's, an enclosing run's)."""
        return self.budget_applies(self.scope)

    def _reserve(self, scope: Scope, worst: Decimal, notes: tuple[str, ...]) -> list[tuple[Ledger, Reservation]]:
        """Hold `worst` against the test's budget and the session's, or record the refusal and raise it."""
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        holds: list[tuple[Ledger, Reservation]] = []
        parent = self.parent
        outer = False
        try:
            test_ledger = self.test_ledger(scope)
            if test_ledger is not None:
                holds.append((test_ledger, test_ledger.reserve(worst)))
            holds.append((self.ledger, self.ledger.reserve(worst)))
            if parent is not None:
                outer = True  # the enclosing guard records its own refusal, explained
                holds.extend(parent._reserve(parent.scope, worst, notes))
        except BudgetExceededError as exc:
            for ledger, reservation in holds:
                ledger.release(reservation)
            refused = exc.explained(notes) if notes and not outer else exc
            with self._lock:
                self.refusals.append(Refusal(scope.tag, refused.scope, worst, str(refused)))
            if refused is exc:
                raise
            raise refused from None
        return holds

    def batch_preflight(self, body: Mapping[str, Any], *, replay: bool = False) -> list[tuple[str, Mapping[str, Any]]]:
        """The requests of a Message Batch creation worth counting exactly before it is admitted.

        Each is `(custom_id, params)`; their counts go to `begin_batch(counted=)`. As for one call
        (`_wants_preflight`): none without a budget, under `off` or when replayed; every request under `always`;
        under `auto` none when the batch's local bound fits what is left (`LOOSE_MARGIN` times over if any of its
        requests' bounds is loose); otherwise those whose local bound is loose (media, documents, tools), and
        every one when the batch's local bound does not fit, unless even its bound with no input at all does not.
        """
        mode = self.config.preflight
        ledgers = self._capped_ledgers(self.scope)
        if replay or mode == "off" or not ledgers:
            return []
        rules = self.config.bound_rules
        bounded: list[tuple[str, Mapping[str, Any], Rates, Bound]] = []
        for request in content_blocks(body.get("requests")):
            params = request.get("params")
            if not isinstance(params, Mapping):
                continue
            model = str(params.get("model", ""))
            try:
                rates = self.config.prices.rates(model, batch=True, fast=params.get("speed") == "fast")
            except UnknownModelPrice:
                return []  # `begin_batch` refuses the batch: there is nothing to count for
            bounded.append(
                (str(request.get("custom_id")), params, rates, bound_request(params, rates, rules, model=model))
            )
        if mode == "always":
            return [(custom_id, params) for custom_id, params, _, _ in bounded]
        try:
            left = [ledger.remaining for ledger in ledgers]
        except Exception:
            return []  # a ledger that cannot be read now: the reservation reports it (and fails closed)
        worst = sum((bound.cost for *_, bound in bounded), _ZERO)
        if _fits(worst, left, loose=any(bound.loose for *_, bound in bounded)):
            return []  # as for one call: the counts could not change the batch's admission
        fits = _fits(worst, left, loose=False)
        floor = sum(
            (
                bound_request(params, rates, rules, model=str(params.get("model")), counted=0).cost
                for _, params, rates, _ in bounded
            ),
            _ZERO,
        )
        if not all(room is None or floor <= room for room in left):
            return []  # refused whatever the counts say
        return [(custom_id, params) for custom_id, params, _, bound in bounded if bound.loose or not fits]

    def begin_batch(
        self,
        body: Mapping[str, Any],
        *,
        retries: int = 0,
        replay: bool = False,
        provider: str = "anthropic",
        endpoint: Endpoint | None = None,
        counted: Mapping[str, int | str] | None = None,
    ) -> Ticket:
        """Admit a batch's creation: hold the sum of its requests' worst cases at batch prices.

        `body` holds `requests`, each with its `params` (a Message Batch's own shape; an OpenAI batch's input
        file lines are given in it, their `endpoint` the batch's). The whole batch is refused (nothing is sent)
        when that sum does not fit a budget. The hold stays until a Message Batch's results are read in this
        process (`batch_created`, `batch_result`, `batch_results_read`), which settles each request at its real
        cost; a batch whose results are never read (an OpenAI batch's are not followed) is charged that worst
        case, marked estimated, when the session ends (`settle_open`). With `replay`, nothing is reserved.
        `counted` holds, by custom_id, the input of the requests counted exactly before sending
        (`batch_preflight`), or why a count failed (that request keeps its local bound, never a smaller one).
        """
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        scope = self.scope
        config = self.config
        budgeted = not replay and (self.budget_applies(scope))
        worst = _ZERO
        notes: list[str] = []
        counted = counted or {}
        failures = [why for why in counted.values() if isinstance(why, str)]
        if counted:
            with self._lock:
                self.preflight_calls += len(counted)
                self.preflight_failed += len(failures)
        if failures:
            notes.append(
                f"the exact count before sending failed for {len(failures)} request(s) ({failures[0]}): "
                "their local bound applied"
            )
        models: list[str] = []
        parts: dict[str, _BatchRequest] = {}
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
                parts[str(request.get("custom_id"))] = _BatchRequest(model, _ZERO)
                continue
            bound = self._bound(scope, params, rates, model, provider, endpoint, budgeted)
            tokens = counted.get(str(request.get("custom_id")))
            if isinstance(tokens, int) and provider == "anthropic":
                bound = bound_request(params, rates, config.bound_rules, model=model, counted=tokens)
            worst += bound.cost
            parts[str(request.get("custom_id"))] = _BatchRequest(model, bound.cost)
            notes.extend(note for note in bound.notes if note not in notes)
        kind = "a Message Batch" if provider == "anthropic" else "an OpenAI batch"
        why = (f"{kind} of {len(models)} request(s), at batch prices", *notes[:3])
        holds = [] if replay else self._reserve(scope, worst, why)
        label = models[0] if len(set(models)) == 1 else "message batch" if provider == "anthropic" else "batch"
        ticket = Ticket(
            scope.tag,
            label,
            label,
            worst,
            0,
            False,
            retries,
            holds,
            None,
            False,
            batch=True,
            batch_requests=parts,
            replayed=replay,
            notes=why,
            outer=self._outer_tags(),
            provider=provider,
        )
        with self._lock:
            self._open[id(ticket)] = ticket
        return ticket

    def begin_unbounded(self, endpoint: str, why: str, *, advice: str = "", retries: int = 0) -> Ticket:
        """Admit a call nothing in the request bounds (an endpoint not known to be free, a body not readable).

        Under a budget it is refused (nothing is sent), naming `endpoint` and `why`: a cap cannot hold a call
        it cannot price. Without one it is sent, and recorded unpriced when it ends (priced from the response's
        usage when it reports one for a known model).
        """
        scope = self.scope
        test_ledger = self.test_ledger(scope)
        refusing = self.ledger if self.ledger.limit is not None else test_ledger
        if refusing is not None and refusing.limit is not None:
            where = "session" if refusing is self.ledger else f"test {scope.tag}"
            refused = UnboundedCallError(endpoint, why, refusing.limit, refusing.spent, scope=where, advice=advice)
            with self._lock:
                self.refusals.append(Refusal(scope.tag, where, _ZERO, str(refused)))
            raise refused
        parent = self.parent
        if parent is not None and parent.budget_applies(parent.scope):
            # An enclosing run's budget applies: it refuses the call (and records why), whichever run holds it.
            parent.begin_unbounded(endpoint, why, advice=advice, retries=retries)
        holds = self._reserve(scope, _ZERO, ())
        ticket = Ticket(
            scope.tag, endpoint, endpoint, _ZERO, 0, False, retries, holds, None, False, outer=self._outer_tags()
        )
        with self._lock:
            self._open[id(ticket)] = ticket
        return ticket

    # -- batch settlement ----------------------------------------------------------------------------------
    def batch_created(self, ticket: Ticket, batch_id: str | None) -> None:
        """Keep a created batch's hold until its results are read; without its id, charge its worst case now.

        When the session ledger is shared with other processes (xdist workers) and can say which reservation
        holds for a batch (`BatchSharing`), the batch is published there: whichever process reads its results
        settles it, charged to the test that created it.
        """
        if batch_id is None:
            self.settle(ticket, None)
            return
        batch = _OpenBatch(ticket)
        shared = self.ledger if isinstance(self.ledger, BatchSharing) else None
        held = next((reservation for ledger, reservation in ticket.holds if ledger is self.ledger), None)
        if shared is not None and held is not None:
            details = {
                "tag": ticket.tag,
                "requested_model": ticket.requested_model,
                "model": ticket.model,
                "retries": ticket.retries,
                "requests": {cid: [r.model, str(r.worst_case)] for cid, r in ticket.batch_requests.items()},
            }
            shared.share_batch(batch_id, held, details)
            batch.shared = held
        with self._lock:
            self._batches[batch_id] = batch

    def reads_batch(self, batch_id: str) -> bool:
        """Whether `batch_id` is a batch this guard holds for and has not settled yet, or one another process
        sharing the session ledger created (`batch_created`): its results settle it here."""
        with self._lock:
            if batch_id in self._batches:
                return True
        if not isinstance(self.ledger, BatchSharing):
            return False
        found = self.ledger.shared_batch(batch_id)
        if found is None:
            return False
        reservation, details = found
        requests = {cid: _BatchRequest(model, Decimal(worst)) for cid, (model, worst) in details["requests"].items()}
        ticket = Ticket(
            details["tag"],
            details["requested_model"],
            details["model"],
            reservation.amount,
            0,
            False,
            details["retries"],
            [(self.ledger, reservation)],
            None,
            False,
            batch=True,
            batch_requests=requests,
        )
        with self._lock:
            self._batches.setdefault(batch_id, _OpenBatch(ticket, shared=reservation, foreign=True))
        return True

    def batch_result(self, batch_id: str, line: Mapping[str, Any]) -> None:
        """Take one line of a batch's results (`{"custom_id": ..., "result": {...}}`) as the caller reads it."""
        custom_id, result = line.get("custom_id"), line.get("result")
        if not isinstance(custom_id, str) or not isinstance(result, Mapping):
            return
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is not None and custom_id in batch.ticket.batch_requests:
                batch.results[custom_id] = result

    def batch_results_read(self, batch_id: str) -> None:
        """Settle a batch whose results were read to the end: each request at what its result reports."""
        with self._lock:
            batch = self._batches.pop(batch_id, None)
        if batch is not None:
            self._settle_batch(batch)

    def _settle_batch(self, batch: _OpenBatch) -> CostRecord | None:
        """Charge a batch: each request read at its real cost (batch prices), each unread at its worst case.

        A batch published in the shared ledger is settled by the first process to settle its reservation there
        (`BatchSharing.settle_held`): the other settles nothing (None), so it is never charged twice.
        """
        ticket = batch.ticket
        prices = self.config.prices
        cost = _ZERO
        total = Usage(batch=True)
        estimated = unpriced = False
        for custom_id, request in ticket.batch_requests.items():
            result = batch.results.get(custom_id)
            if result is None:
                cost += request.worst_case  # never read: what it could have cost
                estimated = True
                continue
            if result.get("type") != "succeeded":
                continue  # errored, canceled, expired: not billed
            message = result.get("message")
            raw = message.get("usage") if isinstance(message, Mapping) else None
            if not isinstance(raw, Mapping):
                cost += request.worst_case  # billed, by how much unknown
                estimated = True
                continue
            assert isinstance(message, Mapping)
            usage = replace(usage_from_response(raw), batch=True)
            answered = message.get("model")
            try:
                cost += prices.cost(usage, answered if isinstance(answered, str) else request.model)
            except UnknownModelPrice:
                try:
                    cost += prices.cost(usage, request.model)
                except UnknownModelPrice:
                    unpriced = True  # only without a budget: begin_batch priced every model otherwise
            total = _sum_usage(total, usage)
        record = CostRecord(
            model=ticket.model,
            input_tokens=total.input_tokens,
            output_tokens=total.output_tokens,
            cost_usd=cost,
            requested_model=ticket.requested_model,
            cache_creation_input_tokens=total.cache_creation_input_tokens,
            cache_read_input_tokens=total.cache_read_input_tokens,
            web_search_requests=total.web_search_requests,
            tag=ticket.tag,
            streamed=False,
            retries=ticket.retries,
            estimated=estimated,
            cost_at_requested_usd=cost,
            reserved_usd=ticket.worst_case,
            unpriced=unpriced,
        )
        if ticket.replayed:  # answered from a cassette: nothing held or billed; what it would have cost is saved
            record = replace(record, cost_usd=_ZERO, reserved_usd=None, replayed=True, replay_cost_usd=cost)
        if batch.shared is not None:
            assert isinstance(self.ledger, BatchSharing)
            if not self.ledger.settle_held(batch.shared, record):
                # Another process settled it first (it read the results, or it created the batch and its session
                # ended): drop what this one holds without a record.
                if self._close(ticket):
                    for ledger, reservation in ticket.holds:
                        if ledger is not self.ledger:
                            ledger.release(reservation)
                return None
        if batch.foreign:
            # Created by another process, for one of its tests: keep the record (the run reports it under that
            # test), but it is not this context's spend. Its money is in the shared ledger already.
            if self._close(ticket, record):
                for listener in self.listeners:
                    listener(record)
            return record
        self._book(ticket, record)
        return record

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
                self._keep(record)
            return True

    def _keep(self, record: CostRecord) -> None:
        """Keep `record` while under `max_records`, else count it in `overflow` (called under the lock)."""
        limit = self.max_records
        if limit is None or len(self.records) < limit:
            self.records.append(record)
            return
        if self.overflow is None:
            self.overflow = tally = self.new_tally()
            for kept in self.records:
                tally.add(kept)
        self.overflow.add(record)

    def tally(self) -> Tally:
        """The sums of every call settled here (the overflow tally, or one made from the records)."""
        with self._lock:
            if self.overflow is not None:
                return self.overflow
            tally = self.new_tally()
            for record in self.records:
                tally.add(record)
            return tally

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
        if ticket.replayed:
            # Nothing was sent: nothing is billed or held. What it would have cost is what replay saved.
            record = replace(record, cost_usd=_ZERO, reserved_usd=None, replayed=True, replay_cost_usd=cost)
        self._book(ticket, record)
        return record

    def _book(self, ticket: Ticket, record: CostRecord) -> None:
        """Replace `ticket`'s holds by `record` (once) and tell the listeners and the collecting scope."""
        if not self._close(ticket, record):
            return
        for ledger, reservation in ticket.holds:
            ledger.settle(reservation, record)
        for listener in self.listeners:
            listener(record)
        deliver(record, self)
        parent = self.parent
        for tag in ticket.outer:
            if parent is None:
                break
            parent._adopt(replace(record, tag=tag))
            parent = parent.parent

    def _adopt(self, record: CostRecord) -> None:
        """Keep a record an inner guard settled (its money is already in this guard's ledgers)."""
        with self._lock:
            self._keep(record)
        for listener in self.listeners:
            listener(record)

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
        """Charge every attempt still open (streams never closed) at its worst case, and every batch whose
        results were not all read at what was read plus the worst case of the rest, estimated."""
        with self._lock:
            batches = list(self._batches.values())
            self._batches.clear()
        for batch in batches:
            self._settle_batch(batch)
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
            if self.overflow is not None:
                return self.overflow.total
            return sum((r.cost_usd for r in self.records), Decimal(0))

    @property
    def session_refusals(self) -> int:
        """Calls refused by the session budget."""
        return sum(1 for r in self.refusals if r.scope == "session")


def _fits(worst: Decimal, left: list[Decimal | None], *, loose: bool) -> bool:
    """Whether `worst` fits every capped ledger's room (`None`: no limit), `LOOSE_MARGIN` times over when its bound
    is `loose`: then no count could change its admission."""
    needed = worst * LOOSE_MARGIN if loose else worst
    return all(room is None or needed <= room for room in left)


_NO_USAGE = Usage()
_ZERO = Decimal(0)


@dataclass(slots=True)
class _OpenBatch:
    """A created batch held for at its worst case, and the results read of it so far."""

    ticket: Ticket
    results: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Each request's `result` object, by custom_id."""
    shared: Reservation | None = None
    """The session ledger's reservation for it, when the batch is published there (`BatchSharing`)."""
    foreign: bool = False
    """Created by another process sharing the session ledger (its results are read here)."""


def _sum_usage(a: Usage, b: Usage) -> Usage:
    return replace(
        a,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_write_5m_tokens=a.cache_write_5m_tokens + b.cache_write_5m_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
        cache_read_input_tokens=a.cache_read_input_tokens + b.cache_read_input_tokens,
        web_search_requests=a.web_search_requests + b.web_search_requests,
    )


def _uncached(usage: Usage) -> Usage:
    return replace(
        usage,
        input_tokens=usage.total_input_tokens,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        cache_read_input_tokens=0,
    )
