"""Batch classification: all tickets in one call, a JSON array back."""

from __future__ import annotations

from triage import CATEGORIES, PRIORITIES, Ticket, parse_classifications


def test_a_batch_of_tickets_is_classified_in_a_single_call(triage, inbox: list[Ticket], llm_cost) -> None:
    results = triage.classify(inbox)

    assert llm_cost.calls == 1
    assert [r.ticket_id for r in results] == [t.id for t in inbox]
    assert all(r.category in CATEGORIES and r.priority in PRIORITIES for r in results)


def test_an_empty_batch_makes_no_call(triage, llm_cost) -> None:
    assert triage.classify([]) == []
    assert llm_cost.calls == 0


def test_the_parser_reads_the_answer_the_policy_asks_for(inbox: list[Ticket]) -> None:
    answer = (
        '[{"id": "T-2001", "category": "account_access", "priority": "P2"},'
        ' {"id": "T-2006", "category": "outage", "priority": "P1"}]'
    )

    results = {r.ticket_id: r for r in parse_classifications(answer, inbox[:1] + inbox[-1:])}

    assert (results["T-2001"].category, results["T-2001"].priority) == ("account_access", "P2")
    assert (results["T-2006"].category, results["T-2006"].priority) == ("outage", "P1")
    assert not any(r.needs_review for r in results.values())


def test_tickets_the_model_missed_or_garbled_go_to_a_person(inbox: list[Ticket]) -> None:
    answer = 'Sure! [{"id": "T-2001", "category": "urgent!!", "priority": "P1"}] Hope that helps.'

    results = parse_classifications(answer, inbox[:2])

    assert [r.needs_review for r in results] == [True, True]
    assert parse_classifications("not json at all", inbox[:1])[0].needs_review
