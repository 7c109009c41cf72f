"""`costguard cassettes DIR [--stale] [--check-secrets]`: list, price, find stale cassettes and stored secrets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.cli import main as costguard
from pytest_costguard.core.pricing import default_price_book, usage_from_response
from pytest_costguard.replay import Cassette, Interaction

USAGE = {"input_tokens": 1200, "output_tokens": 300}
STREAM_EVENTS = [
    {
        "event": "message_start",
        "data": {
            "type": "message_start",
            "message": {"model": "claude-opus-4-7", "usage": {"input_tokens": 500, "output_tokens": 1}},
        },
    },
    {"event": "message_delta", "data": {"type": "message_delta", "usage": {"output_tokens": 80}}},
    {"event": "message_stop", "data": {"type": "message_stop"}},
]


def _write(path: Path, test: str, *interactions: Interaction) -> None:
    Cassette(test, interactions, "2026-12-02T00:00:00Z").save(path)


def _reply(response: dict, status: int = 200, **kw: object) -> Interaction:
    return Interaction("POST", "/v1/messages", {"model": "m", "messages": []}, status, response, **kw)  # type: ignore[arg-type]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_app.py").write_text(
        "def test_kept():\n    pass\n\nclass TestGroup:\n    def test_inner(self):\n        pass\n"
    )
    folder = tests / "cassettes" / "test_app"
    _write(
        folder / "test_kept.json",
        "tests/test_app.py::test_kept",
        _reply({"json": {"model": "claude-sonnet-4-6", "usage": USAGE}}),
        _reply({"json": {"type": "error"}}, status=529),
    )
    _write(
        folder / "TestGroup.test_inner.json",
        "tests/test_app.py::TestGroup::test_inner",
        _reply({"events": STREAM_EVENTS}),
    )
    return tmp_path


def test_cassettes_are_listed_with_their_cost_at_todays_prices(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert costguard(["cassettes", str(project / "tests")]) == 0

    out = capsys.readouterr().out
    book = default_price_book()
    expected = book.cost(usage_from_response(USAGE), "claude-sonnet-4-6") + book.cost(
        usage_from_response({"input_tokens": 500, "output_tokens": 80}), "claude-opus-4-7"
    )
    from pytest_costguard.domain.money import format_usd

    assert "cassettes/test_app/test_kept.json: 2 interaction(s), recorded 2026-12-02T00:00:00Z" in out
    assert f"total: {format_usd(expected)} at today's prices" in out
    assert expected > Decimal(0)


def test_stale_finds_cassettes_whose_test_is_gone(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = project / "tests" / "cassettes" / "test_app"
    _write(folder / "test_removed.json", "tests/test_app.py::test_removed", _reply({"json": {}}))
    _write(
        project / "tests" / "cassettes" / "test_gone" / "test_x.json",
        "tests/test_gone.py::test_x",
        _reply({"json": {}}),
    )

    assert costguard(["cassettes", str(project / "tests"), "--stale"]) == 1

    stale = [line for line in capsys.readouterr().out.splitlines() if "STALE" in line]
    assert len(stale) == 2
    assert any("test_removed.json: STALE: tests/test_app.py::test_removed is no longer defined" in x for x in stale)
    assert any("test_gone.py is gone" in line for line in stale)


def test_check_secrets_passes_clean_cassettes_and_fails_on_a_key_or_an_auth_header(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert costguard(["cassettes", str(project / "tests"), "--check-secrets"]) == 0

    folder = project / "tests" / "cassettes" / "test_app"
    _write(
        folder / "test_leaky.json",
        "tests/test_app.py::test_kept",
        _reply({"json": {"text": "sk-ant-api03-" + "x" * 40}}, request_headers={"authorization": "Bearer abc"}),
    )

    assert costguard(["cassettes", str(project / "tests"), "--check-secrets"]) == 1
    out = capsys.readouterr().out
    assert "test_leaky.json: SECRET: Anthropic API key" in out
    assert "test_leaky.json: SECRET: header 'authorization' stored unredacted" in out
    assert "x" * 40 not in out  # the report does not print the secret


def test_a_corrupt_cassette_is_reported_with_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "tests" / "cassettes" / "test_app" / "broken.json").write_text("{")

    assert costguard(["cassettes", str(project / "tests")]) == 2
    assert "broken.json: CORRUPT:" in capsys.readouterr().out


def test_a_missing_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert costguard(["cassettes", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
