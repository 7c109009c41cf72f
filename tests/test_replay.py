"""Record and replay through the plugin: inner pytest runs using the real SDK against a scripted API.

Each scenario records a suite against `FakeAPI` (which logs every request it receives and every reply it
bills), then runs it again with the API switched off (`FAKE_DOWN=1`: the handler fails any request) and checks
what reached the API, what the report says replay saved, and what the cassettes hold.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from fakeapi import billed_cost

KEY = "sk-ant-api03-" + "Rk7pX2vQ" * 10 + "-AbCdEf"
"""An API key of the real shape: it must never reach a cassette."""

SUITE = f"""
import asyncio
import json
import os

import pytest
from fakeapi import FakeAPI

KEY = {KEY!r}


class Offline(FakeAPI):
    def __call__(self, request):
        with open("requests.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({{"path": request.url.path, "body": json.loads(request.content or b"null")}}) + "\\n")
        if os.environ.get("FAKE_DOWN"):
            raise RuntimeError("the network is cut off: nothing may be sent")
        return super().__call__(request)


API = Offline({{"input_tokens": 900, "output_tokens": 40}}, log_path="billed.jsonl")
PROMPT = os.environ.get("PROMPT", "Summarise ticket T-1042")


def body(prompt=PROMPT, **extra):
    return dict(model="claude-sonnet-4-6", max_tokens=100, messages=[{{"role": "user", "content": prompt}}], **extra)


def test_create():
    message = API.client(api_key=KEY).messages.create(**body(metadata={{"user_id": os.environ.get("RUN", "a")}}))
    assert message.content[0].text == "ok" and message.usage.output_tokens == 40


def test_messages_stream():
    with API.client(api_key=KEY).messages.stream(**body(f"stream: {{PROMPT}}")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "ok" and final.stop_reason == "end_turn" and final.usage.output_tokens == 40


def test_create_stream_true():
    with API.client(api_key=KEY).messages.create(**body(f"raw stream: {{PROMPT}}"), stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_async_create():
    async def go():
        async with API.async_client(api_key=KEY) as client:
            asks = [client.messages.create(**body(f"async {{i}}: {{PROMPT}}")) for i in range(3)]
            answers = await asyncio.gather(*asks)
            async with client.messages.stream(**body(f"async stream: {{PROMPT}}")) as stream:
                text = "".join([piece async for piece in stream.text_stream])
                final = await stream.get_final_message()
            return answers, text, final

    answers, text, final = asyncio.run(go())
    assert [m.content[0].text for m in answers] == ["ok"] * 3
    assert text == "ok" and final.usage.output_tokens == 40


def test_raw_response():
    client = API.client(api_key=KEY, default_headers={{"x-api-key": KEY, "anthropic-organization-id": "org-7"}})
    raw = client.messages.with_raw_response.create(**body(f"raw: {{PROMPT}}"))
    assert raw.status_code == 200 and raw.parse().usage.output_tokens == 40


def test_same_request_twice_and_a_key_in_the_prompt():
    client = API.client(api_key=KEY)
    first = client.messages.create(**body(f"my key is {{KEY}}"))
    second = client.messages.create(**body(f"my key is {{KEY}}"))
    assert first.usage == second.usage and first.usage.output_tokens == 40


def test_batch():
    batch = API.client(api_key=KEY).messages.batches.create(requests=[{{"custom_id": "a", "params": body()}}])
    assert batch.processing_status == "in_progress"
"""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _report(pytester: pytest.Pytester, name: str = "r.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def _cassettes(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / "cassettes").rglob("*.json"))


@pytest.fixture
def suite(fake_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    fake_pytester.makepyfile(test_calls=SUITE)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return fake_pytester


def _record(suite: pytest.Pytester, *args: str) -> dict:
    result = suite.runpytest("--llm-record=all", "--llm-report=rec.json", *args)
    result.assert_outcomes(passed=7)
    return _report(suite, "rec.json")


def _sent(suite: pytest.Pytester) -> int:
    return len(_lines(suite.path / "requests.jsonl"))


def test_a_recorded_suite_replays_with_the_api_off_spending_nothing_and_saving_what_it_cost(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _record(suite)
    billed = _lines(suite.path / "billed.jsonl")
    sent = _sent(suite)
    # Recording is metered like any live run: the report charges what the API billed (and the batch its worst
    # case, as live: its results would come later).
    charged = sum(Decimal(str(c["cost_usd"])) for c in recorded["calls"] if not c["estimated"])
    assert abs(charged - billed_cost(billed)) < Decimal("1e-9")
    assert [c["requested_model"] for c in recorded["calls"] if c["estimated"]] == ["claude-sonnet-4-6"]
    assert not any(c["replayed"] for c in recorded["calls"])
    assert [p.name for p in _cassettes(suite)] == sorted(
        f"{name}.json"
        for name in (
            "test_create",
            "test_messages_stream",
            "test_create_stream_true",
            "test_async_create",
            "test_raw_response",
            "test_same_request_twice_and_a_key_in_the_prompt",
            "test_batch",
        )
    )

    monkeypatch.setenv("FAKE_DOWN", "1")
    monkeypatch.setenv("RUN", "b")  # metadata.user_id differs, and is left out of matching
    result = suite.runpytest("--llm-record=none", "--llm-report=rep.json", "--llm-budget=0.000001")

    result.assert_outcomes(passed=7)
    assert _sent(suite) == sent  # nothing reached the API
    report = _report(suite, "rep.json")
    assert report["total_cost_usd"] == 0 and not report["budget_exceeded"]  # and nothing taken from the budget
    assert report["calls"] and all(c["replayed"] for c in report["calls"])
    assert len(report["calls"]) == len(recorded["calls"])
    assert report["savings"]["replay_usd"] == recorded["total_cost_usd"]
    result.stdout.fnmatch_lines(["replay: 11 calls answered from cassettes, nothing sent or billed; saved $*"])


def test_streams_are_stored_event_by_event_and_bodies_as_data(suite: pytest.Pytester) -> None:
    _record(suite)
    folder = suite.path / "cassettes" / "test_calls"

    stream = json.loads((folder / "test_messages_stream.json").read_text())
    plain = json.loads((folder / "test_create.json").read_text())

    (interaction,) = stream["interactions"]
    events = [e["event"] for e in interaction["response"]["events"]]
    assert events[0] == "message_start" and events[-1] == "message_stop" and "message_delta" in events
    assert interaction["request"]["body"]["stream"] is True
    assert plain["format"] == "pytest-costguard-cassette/1" and plain["recorded_at"]
    usage = plain["interactions"][0]["response"]["json"]["usage"]
    assert (
        usage["output_tokens"] == 40
        and usage["input_tokens"] == _lines(suite.path / "billed.jsonl")[0]["usage"]["input_tokens"]
    )


def test_no_api_key_reaches_a_cassette(suite: pytest.Pytester) -> None:
    _record(suite)

    texts = [p.read_text() for p in _cassettes(suite)]

    assert texts and not any(KEY in t for t in texts)
    assert not any(KEY[:20] in t for t in texts)
    assert all('"authorization": "[REDACTED]"' in t for t in texts)
    assert any('"x-api-key": "[REDACTED]"' in t and '"anthropic-organization-id": "[REDACTED]"' in t for t in texts)
    assert not any("org-7" in t for t in texts)
    assert any("my key is [REDACTED]" in t for t in texts)


def test_a_changed_prompt_under_none_fails_its_test_and_sends_nothing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(suite)
    sent = _sent(suite)
    monkeypatch.setenv("FAKE_DOWN", "1")
    monkeypatch.setenv("PROMPT", "Summarise ticket T-2001\nsecond line")

    result = suite.runpytest("--llm-record=none", "-k", "test_create and not stream")

    result.assert_outcomes(failed=1)
    assert _sent(suite) == sent
    result.stdout.fnmatch_lines(
        [
            "*test_calls.py::test_create: a claude-sonnet-4-6 call (prompt: 'Summarise ticket T-2001') was not "
            "recorded in *test_create.json (--llm-record=none, nothing was sent); the closest recording differs at "
            "messages?0?.content;*"
        ]
    )


def test_a_missing_recording_fails_the_test_even_when_the_code_swallows_the_error(
    fake_pytester: pytest.Pytester,
) -> None:
    fake_pytester.makepyfile(
        test_swallows="""
        from fakeapi import FakeAPI

        def test_swallows():
            try:
                FakeAPI().client().messages.create(
                    model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            except Exception:
                pass
        """
    )

    result = fake_pytester.runpytest("--llm-record=none")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pytest-costguard: test_swallows.py::test_swallows: a claude-sonnet-4-6 call*"])


def test_once_records_a_test_without_a_cassette_and_only_replays_one_with_it(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.runpytest("--llm-record=once").assert_outcomes(passed=7)
    sent = _sent(suite)
    assert sent > 0 and len(_cassettes(suite)) == 7

    suite.runpytest("--llm-record=once").assert_outcomes(passed=7)
    assert _sent(suite) == sent

    monkeypatch.setenv("PROMPT", "another ticket")
    result = suite.runpytest("--llm-record=once", "-k", "test_create and not stream")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*only replays it; delete it or run --llm-record=new*"])
    assert _sent(suite) == sent


def test_new_replays_what_matches_and_records_what_does_not(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(suite)
    sent = _sent(suite)
    cassette = suite.path / "cassettes" / "test_calls" / "test_create.json"

    monkeypatch.setenv("PROMPT", "a new ticket")
    suite.runpytest("--llm-record=new", "-k", "test_create and not stream").assert_outcomes(passed=1)
    assert _sent(suite) == sent + 1
    assert len(json.loads(cassette.read_text())["interactions"]) == 2

    suite.runpytest("--llm-record=new", "-k", "test_create and not stream").assert_outcomes(passed=1)
    assert _sent(suite) == sent + 1  # now recorded: replayed


def test_all_records_everything_again(suite: pytest.Pytester) -> None:
    _record(suite)
    sent = _sent(suite)

    _record(suite)

    assert _sent(suite) == 2 * sent
    cassette = json.loads((suite.path / "cassettes" / "test_calls" / "test_create.json").read_text())
    assert len(cassette["interactions"]) == 1


def test_a_marker_overrides_the_run_mode(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(
        """
        import pytest
        from fakeapi import FakeAPI

        API = FakeAPI(log_path="billed.jsonl")

        @pytest.mark.llm_record("off")
        def test_live():
            API.client().messages.create(
                model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        """
    )

    result = fake_pytester.runpytest("--llm-record=none")

    result.assert_outcomes(passed=1)
    assert len(_lines(fake_pytester.path / "billed.jsonl")) == 1
    assert not (fake_pytester.path / "cassettes").exists()


def test_identical_requests_replay_in_the_order_they_were_recorded(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(
        """
        import json, os
        from fakeapi import FakeAPI

        class Counting(FakeAPI):
            calls = 0
            def __call__(self, request):
                if os.environ.get("FAKE_DOWN"):
                    raise RuntimeError("offline")
                Counting.calls += 1
                self.usage = {"input_tokens": 10 * Counting.calls, "output_tokens": 1}
                return super().__call__(request)

        def test_twice():
            client = Counting().client()
            ask = dict(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "same"}])
            assert [client.messages.create(**ask).usage.input_tokens for _ in range(3)] == [10, 20, 30]
        """
    )
    fake_pytester.runpytest("--llm-record=all").assert_outcomes(passed=1)

    import os

    os.environ["FAKE_DOWN"] = "1"
    try:
        fake_pytester.runpytest("--llm-record=none").assert_outcomes(passed=1)
    finally:
        del os.environ["FAKE_DOWN"]


def test_recordings_no_test_used_are_listed_as_stale(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _record(suite)
    folder = suite.path / "cassettes" / "test_calls"
    (folder / "test_removed_long_ago.json").write_text((folder / "test_create.json").read_text())
    monkeypatch.setenv("FAKE_DOWN", "1")

    result = suite.runpytest("--llm-record=none", "-k", "not batch", "--llm-report=r.json")

    result.assert_outcomes(passed=6, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "replay: 1 stale recording(s), used by no test in this run:",
            "*test_removed_long_ago.json: no collected test*",
        ]
    )
    assert [Path(s["path"]).name for s in _report(suite)["replay"]["stale"]] == ["test_removed_long_ago.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--llm-record=sometimes",), "--llm-record: 'sometimes' is not one of off, none, once, new, all"),
        (("--llm-record=none", "-k", "marked"), "@pytest.mark.llm_record on *takes one argument*"),
    ],
)
def test_a_bad_mode_is_a_usage_error_naming_it(
    fake_pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    fake_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm_record(1)
        def test_marked():
            pass
        """
    )

    result = fake_pytester.runpytest(*args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_corrupt_cassette_is_a_usage_error_naming_the_file(suite: pytest.Pytester) -> None:
    folder = suite.path / "cassettes" / "test_calls"
    folder.mkdir(parents=True)
    (folder / "test_create.json").write_text("{ not json")

    result = suite.runpytest("--llm-record=none")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_calls.py::test_create: *test_create.json: not a cassette (not JSON*"])
    assert _sent(suite) == 0


def test_llm_cassettes_moves_the_files(suite: pytest.Pytester) -> None:
    _record(suite, "--llm-cassettes=tapes")

    assert not (suite.path / "cassettes").exists()
    assert (suite.path / "tapes" / "test_calls" / "test_create.json").is_file()


@pytest.mark.slow  # two xdist runs of two workers each
def test_recording_and_replaying_under_xdist(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = ("-p", "xdist", "-n", "2")
    result = suite.runpytest_subprocess(*plugins, "--llm-record=all", "--llm-report=rec.json")
    result.assert_outcomes(passed=7)
    recorded = _report(suite, "rec.json")
    sent = _sent(suite)
    assert len(_cassettes(suite)) == 7

    monkeypatch.setenv("FAKE_DOWN", "1")
    result = suite.runpytest_subprocess(*plugins, "--llm-record=none", "--llm-report=rep.json")

    result.assert_outcomes(passed=7)
    assert _sent(suite) == sent
    report = _report(suite, "rep.json")
    assert report["total_cost_usd"] == 0 and report["replayed_calls"] == len(recorded["calls"])
    assert report["savings"]["replay_usd"] == recorded["total_cost_usd"]


def test_only_a_run_that_records_or_replays_watches_its_fixtures_set_up(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hook sends a shared fixture's calls to the session cassette; without a recorder it would only cost
    # every fixture of every test a wrapper.
    pytester.makepyfile(
        test_watch="""
import os

def test_watch(request):
    watched = request.config.pluginmanager.has_plugin("costguard-replay-fixtures")
    assert watched == bool(os.environ.get("WATCHED"))
"""
    )
    monkeypatch.delenv("WATCHED", raising=False)
    pytester.runpytest("-p", "no:asyncio", "--llm-budget=1").assert_outcomes(passed=1)
    monkeypatch.setenv("WATCHED", "1")
    pytester.runpytest("-p", "no:asyncio", "--llm-record=once").assert_outcomes(passed=1)
