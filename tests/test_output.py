"""What a run prints: cost tables whose columns explain their costs, refusals that read like pytest's own
failures, and a final line that says when the run failed for want of its report."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from test_plugin import _suite

from pytest_costguard.domain.records import CostRecord, Refusal
from pytest_costguard.reports.model import (
    build_report,
    cost_rows,
    plural,
    render_markdown,
    savings_line,
    terminal_lines,
)

MODEL = "claude-sonnet-4-6"


def _record(cost: str, tag: str | None, **fields: object) -> CostRecord:
    values: dict[str, object] = {"input_tokens": 100, "output_tokens": 20, **fields}
    return CostRecord(model=MODEL, cost_usd=Decimal(cost), tag=tag, **values)  # type: ignore[arg-type]


def test_a_row_shows_the_cache_tokens_its_cost_is_made_of() -> None:
    record = _record("0.0319", "t.py::test_draft", cache_creation_input_tokens=4921, cache_read_input_tokens=7)
    report = build_report([record], {"t.py::test_draft": "passed"})
    lines = terminal_lines(report)
    header = lines[0].split()
    assert header == ["cost", "calls", "input", "cache", "write", "cache", "read", "output", "test"]
    assert lines[1].split() == ["$0.0319", "1", "100", "4,921", "7", "20", "t.py::test_draft"]
    markdown = render_markdown(report)
    assert "| Test | Cost | Calls | Input | Cache write | Cache read | Output |" in markdown
    assert "| `t.py::test_draft` | $0.0319 | 1 | 100 | 4,921 | 7 | 20 |" in markdown
    assert "| `claude-sonnet-4-6` | $0.0319 | 1 | 100 | 4,921 | 7 | 20 |" in markdown


def test_the_rows_add_up_to_the_total_with_the_rest_and_the_calls_outside_tests() -> None:
    tags = [f"t.py::test_{i:02}" for i in range(12)]
    records = [_record(f"0.0{i + 10}", tag) for i, tag in enumerate(tags)]  # $0.010 to $0.021
    records.append(_record("0.5", None, cache_read_input_tokens=3))
    report = build_report(records, dict.fromkeys(tags, "passed"))
    rows = cost_rows(report, top=10)
    assert [name for name, _ in rows[-2:]] == ["(2 more tests)", "(outside tests)"]
    assert sum(Decimal(str(totals["cost_usd"])) for _, totals in rows) == sum(r.cost_usd for r in records)
    assert sum(totals["calls"] for _, totals in rows) == len(records)
    lines = terminal_lines(report, top=10)
    assert lines[11].endswith("  (2 more tests)") and lines[12].endswith("  (outside tests)")
    assert lines[12].split()[:5] == ["$0.50", "1", "100", "0", "3"]
    markdown = render_markdown(report, top=10)
    assert "| (outside tests) | $0.50 | 1 | 100 | 0 | 3 | 20 |" in markdown
    assert "| (2 more tests) | $0.021 | 2 | 200 | 0 | 0 | 40 |" in markdown


def test_counts_agree_with_their_nouns() -> None:
    assert [plural(1, "call"), plural(2, "call"), plural(0, "call"), plural(1234, "call")] == [
        "1 call",
        "2 calls",
        "0 calls",
        "1,234 calls",
    ]
    one = build_report(
        [_record("0.01", "t::a", estimated=True)],
        {"t::a": "failed"},
        budget=Decimal("0.01"),
        refusals=[Refusal("t::a", "session", Decimal("0.02"), "no")],
        failed_attempts=1,
    )
    text = "\n".join(terminal_lines(one))
    assert "1 failed attempt (not billed); 1 call estimated" in text
    assert "(s)" not in text and " 1 calls" not in text
    two = build_report([_record("0.01", "t::a")] * 2, {"t::a": "passed"}, failed_attempts=2)
    assert "2 failed attempts (not billed)" in "\n".join(terminal_lines(two))


def test_a_run_without_calls_prints_no_empty_table_or_by_model_line() -> None:
    report = build_report(
        [], {"t::a": "failed"}, budget=Decimal("0.001"), refusals=[Refusal("t::a", "session", Decimal("0.08"), "no")]
    )
    assert terminal_lines(report) == ["budget used: $0.00 of $0.001, 0.0%"]
    assert "by model" not in render_markdown(report).lower()
    assert "### Most expensive tests" not in render_markdown(report)


@pytest.mark.parametrize(
    ("routing", "caching", "expected"),
    [
        ("0", "0", None),
        ("0", "0.313", "saved $0.313 by caching"),
        ("0.0658", "0.105", "saved $0.171 (routing $0.0658, caching $0.105)"),
        (
            "-0.0083",
            "0.313",
            "saved $0.313 by caching; routing cost $0.0083 more (the models asked for would have cost less)",
        ),
        ("0", "-0.0012", "caching cost $0.0012 more (cache writes not read back enough)"),
    ],
)
def test_savings_are_said_in_words_and_a_lever_that_cost_more_is_never_a_negative_saving(
    routing: str, caching: str, expected: str | None
) -> None:
    record = _record(
        "0.01",
        "t::a",
        requested_model="claude-haiku-4-5",
        cost_at_requested_usd=Decimal("0.01") + Decimal(routing),
        cost_uncached_usd=Decimal("0.01") + Decimal(caching),
    )
    report = build_report([record], {"t::a": "passed"})
    assert savings_line(report) == expected
    printed = "\n".join(terminal_lines(report)) + render_markdown(report)
    assert not re.search(r"-\$|\$-", printed)


def test_a_refused_test_fails_in_one_line_naming_the_worst_case_and_what_was_left(
    fake_pytester: pytest.Pytester,
) -> None:
    _suite(
        fake_pytester,
        """
class AppError(Exception):
    pass

def test_refused():
    ask()

def test_wrapped():
    try:
        ask()
    except Exception as exc:
        raise AppError("could not summarise") from exc
""",
    )
    # -vv: the short test summary shows the whole line (as on CI); a narrow terminal shows its start.
    result = fake_pytester.runpytest("--llm-budget=0.001", "-rf", "-vv")
    result.assert_outcomes(failed=2)
    shown = r"LLM call not sent: worst case \$0\.0\d+, but only \$0\.001 of the session budget \(\$0\.001\) is left"
    result.stdout.re_match_lines(
        [
            r"_+ test_refused _+",
            shown + r" \(test_suite\.py:\d+\)",
            r"_+ test_wrapped _+",
            shown + r"; it reached the test as AppError \(test_suite\.py:\d+\)",
            r"=+ short test summary info =+",
            r"FAILED test_suite\.py::test_refused - " + shown + r" \(test_suite\.py:\d+\)",
        ]
    )
    out = result.stdout.str()
    failures = out[out.index("= FAILURES =") : out.index("LLM cost (pytest-costguard)")].splitlines()[1:-1]
    assert len(failures) == 4  # a title and one line per refused test
    for frame in ("_base_client.py", "guard.py", "ledger.py", "middleware.py", "Traceback"):
        assert frame not in out


def test_a_long_traceback_still_hides_the_plugins_frames(fake_pytester: pytest.Pytester) -> None:
    _suite(fake_pytester, "def test_refused():\n    ask()\n")
    result = fake_pytester.runpytest("--llm-budget=0.001", "--tb=long")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "BudgetExceededError: LLM session budget would be exceeded" in out
    assert "_base_client.py" in out  # the SDK's frames are the SDK's: shown as pytest shows them
    for frame in ("metering/guard.py", "metering/ledger.py", "anthropic/middleware.py"):
        assert frame not in out


def test_an_empty_report_path_is_a_usage_error_naming_the_option(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile("def test_plain(): pass")
    result = fake_pytester.runpytest("--llm-report=")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --llm-report: the path is empty; give a file ending in .json, .md or .html"])


def test_a_report_that_cannot_be_written_is_said_last_and_in_the_final_line(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile("def test_plain(): pass")
    (fake_pytester.path / "afile").write_text("not a folder")
    result = fake_pytester.runpytest("--llm-report=afile/r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = result.stdout.str().rstrip().splitlines()
    assert re.fullmatch(r"pytest-costguard: --llm-report: cannot write '.*afile/r\.json': .+; the run fails", lines[-2])
    assert re.fullmatch(r"=+ 1 passed, 1 cost report failed in [\d.]+s =+", lines[-1])
