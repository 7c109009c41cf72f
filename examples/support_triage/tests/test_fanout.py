"""Concurrent summaries: `asyncio.gather` over the app's own AsyncAnthropic client."""

from __future__ import annotations

import asyncio

from triage import Ticket


def test_concurrent_summaries_return_one_result_per_ticket(triage, inbox: list[Ticket], llm_cost) -> None:
    summaries = asyncio.run(triage.summarize_all(inbox, concurrency=3))

    assert len(summaries) == len(inbox)
    assert all(s.strip() for s in summaries)
    assert llm_cost.calls == len(inbox)


def test_concurrent_summaries_are_not_mixed_up(emulator, triage, inbox: list[Ticket]) -> None:
    # The emulator answers the same request with the same text, so each concurrent summary can be matched
    # with the one made alone for the same ticket (the real API is not deterministic: emulator only).
    concurrent = asyncio.run(triage.summarize_all(inbox[:3], concurrency=3))

    assert concurrent == [triage.summarize(ticket) for ticket in inbox[:3]]
