"""Outage rehearsals: the emulator fails on request and the app must cope (skipped against the real API)."""

from __future__ import annotations

import pytest
from triage import IncompleteReplyError, Ticket, TriageError


def test_an_overloaded_api_is_retried_without_the_caller_noticing(
    emulator, triage, refund_ticket: Ticket, llm_cost
) -> None:
    emulator.inject("529", times=2, retry_after=0.001)

    assert triage.summarize(refund_ticket)

    (record,) = llm_cost.records  # two failed attempts, one billed call
    assert record.retries == 2


def test_a_rejected_request_is_reported_as_a_triage_error(
    emulator, triage, refund_ticket: Ticket, llm_cost
) -> None:
    emulator.inject("400", message="messages: text content blocks must be non-empty")

    with pytest.raises(TriageError, match="non-empty"):
        triage.summarize(refund_ticket)
    assert llm_cost.calls == 0  # a failed attempt is not billed


def test_a_reply_cut_off_mid_stream_is_never_sent(emulator, triage, refund_ticket: Ticket, llm_cost) -> None:
    emulator.inject("drop")

    with pytest.raises(IncompleteReplyError):
        "".join(triage.draft_reply(refund_ticket))
    (record,) = llm_cost.records
    assert record.estimated  # charged conservatively: the full max_tokens of output
