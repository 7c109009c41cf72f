"""Ticket summaries: one `messages.create` call per ticket."""

from __future__ import annotations

from decimal import Decimal

import pytest
from triage import DEFAULT_MODEL, Ticket


def test_a_summary_is_text_for_the_next_agent(triage, refund_ticket: Ticket, llm_cost) -> None:
    summary = triage.summarize(refund_ticket)

    assert summary.strip()
    assert llm_cost.calls == 1


def test_summaries_ask_for_the_mid_tier_model(triage, refund_ticket: Ticket, llm_cost) -> None:
    triage.summarize(refund_ticket)

    (record,) = llm_cost.records
    # `requested_model` is what the app asked for; `model` is where --llm-route sent it.
    assert record.requested_model == DEFAULT_MODEL


@pytest.mark.llm_budget(0.15)
def test_a_summary_costs_well_under_a_cent_once_the_policy_is_cached(
    triage, refund_ticket: Ticket, llm_cost
) -> None:
    # The per-test cap refuses any call whose worst case does not fit in what is left: every request byte
    # counted as a token written to the cache, every output token, about $0.08 here. What a summary really
    # costs is about $0.02 when it writes the policy to the cache and $0.002 when it reads it.
    triage.summarize(refund_ticket)
    triage.summarize(refund_ticket)

    assert llm_cost.records[-1].cost_usd < Decimal("0.01")
    assert llm_cost.remaining is not None and llm_cost.remaining > 0
