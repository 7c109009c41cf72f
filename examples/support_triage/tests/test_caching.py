"""The support policy is a long system prompt sent with every call: it must come from the prompt cache."""

from __future__ import annotations

from triage import Ticket


def test_the_policy_is_read_from_the_cache_after_the_first_call(triage, refund_ticket: Ticket, llm_cost) -> None:
    triage.summarize(refund_ticket)
    triage.summarize(refund_ticket)

    later = llm_cost.records[-1]
    assert later.cache_read_input_tokens > 1000  # the policy is ~5,000 tokens


def test_a_cached_call_costs_less_than_the_same_call_uncached(triage, refund_ticket: Ticket, llm_cost) -> None:
    triage.summarize(refund_ticket)
    triage.summarize(refund_ticket)

    later = llm_cost.records[-1]
    assert later.cost_uncached_usd is not None
    assert later.cost_usd < later.cost_uncached_usd
