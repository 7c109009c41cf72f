"""The overnight backlog: one Message Batch of summaries, polled with `retrieve`, read through `results`."""

from __future__ import annotations

from decimal import Decimal

from triage import DEFAULT_MODEL, Ticket


def test_a_backlog_is_summarised_overnight_in_one_batch_at_half_price(
    triage, inbox: list[Ticket], llm_cost, anthropic_backend: str
) -> None:
    backlog = inbox[:3]

    summaries = triage.summarize_backlog(backlog, poll_interval=0.01)

    assert list(summaries) == [ticket.id for ticket in backlog]
    assert all(summary and summary.strip() for summary in summaries.values())
    # The whole batch is one call, charged to this test once its results are read: at what they report
    # (batch prices), not at the worst case held while it ran.
    (record,) = llm_cost.records
    assert record.requested_model == DEFAULT_MODEL
    if anthropic_backend == "replay":
        assert record.replayed and record.cost_usd == 0  # nothing was sent: the recording answered
    else:
        assert not record.estimated and record.reserved_usd is not None
        assert Decimal(0) < record.cost_usd < record.reserved_usd
        assert record.output_tokens > 0


def test_a_backlog_request_that_fails_is_left_for_the_next_night(emulator, triage, inbox: list[Ticket]) -> None:
    # The emulator errors a batch request whose prompt carries a fault marker (a batch has no connection to
    # drop): that ticket gets no summary, the others do.
    broken = Ticket("T-2099", "Export stuck", "The CSV export spins forever. [[costguard:fault=500]]")

    summaries = triage.summarize_backlog([inbox[0], broken], poll_interval=0.01)

    assert summaries[broken.id] is None
    assert summaries[inbox[0].id]
