"""The cassette layer on its own: file format, SSE events, safe names, the matcher and redaction."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_costguard.replay import (
    Cassette,
    CassetteError,
    Interaction,
    Recorder,
    Tape,
    cassette_path,
    find_secrets,
    redact_body,
    redact_headers,
    request_key,
    safe_name,
)
from pytest_costguard.replay.cassette import body_bytes, stored_body
from pytest_costguard.replay.matching import first_difference, parse_ignored

SSE = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-sonnet-4-6",'
    b'"usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b": a comment line\n\n"
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def _events_of(content: bytes) -> list[tuple[str | None, Any]]:
    """The (event, data) pairs an SSE client parses from `content`."""
    out = []
    for raw in content.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in raw.decode().splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            out.append((name, json.loads("\n".join(data))))
    return out


def test_a_stream_is_stored_event_by_event_and_re_emitted_as_the_same_events() -> None:
    stored = stored_body(SSE)

    assert [e.get("event") for e in stored["events"]] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message_delta",
        "message_stop",
    ]
    assert stored["events"][0]["data"]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 1}
    assert _events_of(body_bytes(stored)) == _events_of(SSE)


def test_a_stream_cut_mid_event_keeps_the_broken_tail_as_it_came() -> None:
    cut = SSE[: SSE.index(b"message_delta") + 30]

    stored = stored_body(cut)

    assert "partial" in stored["events"][-1]
    assert body_bytes(stored).endswith(cut[cut.rindex(b"\n\n") + 2 :])


def test_json_bodies_are_stored_as_data_and_other_bodies_as_text() -> None:
    assert stored_body(b'{"usage": {"input_tokens": 3}}') == {"json": {"usage": {"input_tokens": 3}}}
    assert stored_body(b"upstream connect error") == {"text": "upstream connect error"}
    assert json.loads(body_bytes({"json": {"a": [1, 2]}})) == {"a": [1, 2]}


def _interaction(body: Any = None, **kw: Any) -> Interaction:
    defaults: dict[str, Any] = {
        "method": "POST",
        "path": "/v1/messages",
        "body": body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "status": 200,
        "response": {"json": {"usage": {"input_tokens": 3, "output_tokens": 4}}},
        "headers": {"content-type": "application/json"},
        "recorded_at": "2026-12-02T00:00:00Z",
    }
    return Interaction(**{**defaults, **kw})


def test_a_cassette_round_trips_through_its_file_with_version_and_time(tmp_path: Path) -> None:
    cassette = Cassette(
        "tests/test_a.py::test_b",
        (
            _interaction(),
            _interaction(status=None, response={}, headers={}, error={"kind": "connect", "message": "refused"}),
        ),
        "2026-12-02T00:00:01Z",
    )
    path = tmp_path / "c" / "t.json"

    cassette.save(path)

    data = json.loads(path.read_text())
    assert data["format"] == "pytest-costguard-cassette/1" and data["recorded_at"] == "2026-12-02T00:00:01Z"
    assert data["interactions"][0]["response"]["json"]["usage"]["output_tokens"] == 4
    assert Cassette.load(path) == cassette


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "not JSON"),
        ('{"interactions": []}', "no 'format'"),
        ('{"format": "pytest-costguard-cassette/0", "interactions": []}', "record it again"),
        ('{"format": "pytest-costguard-cassette/1", "interactions": [{"request": {}}]}', "'method'"),
    ],
)
def test_a_corrupt_cassette_is_refused_naming_the_file(text: str, complaint: str) -> None:
    with pytest.raises(CassetteError, match=complaint) as info:
        Cassette.loads(text, where="cassettes/m/t.json")
    assert "cassettes/m/t.json" in str(info.value)


def test_cassettes_live_beside_their_module_unless_a_directory_is_given(tmp_path: Path) -> None:
    nodeid = "tests/unit/test_app.py::TestApp::test_call[a/b c]"

    beside = cassette_path(nodeid, rootdir=tmp_path)
    moved = cassette_path(nodeid, rootdir=tmp_path, directory=tmp_path / "tapes")

    assert beside.parent == tmp_path / "tests" / "unit" / "cassettes" / "test_app"
    assert moved.parent == tmp_path / "tapes" / "tests" / "unit" / "test_app"
    assert beside.name == moved.name and beside.name.startswith("TestApp.test_call[a_b_c]-")


@given(st.text(min_size=1, max_size=300))
def test_any_test_id_maps_to_a_safe_file_name(name: str) -> None:
    safe = safe_name(name)

    assert safe and len(safe) <= 130 and not safe.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "_.-[]") for c in safe)


def test_ids_differing_only_in_unsafe_characters_get_different_files() -> None:
    assert safe_name("test_x[a/b]") != safe_name("test_x[a_b]")
    assert safe_name("test_plain") == "test_plain"


# -- matching ----------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers())
def test_a_body_and_its_reordered_copy_match(body: dict[str, Any], seed: int) -> None:
    copy = _shuffled(body, random.Random(seed))

    assert request_key("POST", "/v1/messages", body) == request_key("POST", "/v1/messages", copy)


@settings(max_examples=100)
@given(st.text(max_size=200), st.text(max_size=200))
def test_a_changed_prompt_does_not_match(prompt: str, other: str) -> None:
    def body(text: str) -> dict[str, Any]:
        return {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": text}]}

    same = request_key("POST", "/v1/messages", body(prompt)) == request_key("POST", "/v1/messages", body(other))

    assert same == (redact_body(prompt) == redact_body(other))


def test_volatile_fields_are_left_out_of_matching_and_that_is_configurable() -> None:
    a = {"model": "m", "metadata": {"user_id": "run-1"}, "messages": []}
    b = {"model": "m", "metadata": {"user_id": "run-2"}, "messages": []}

    assert request_key("POST", "/v1/messages", a) == request_key("POST", "/v1/messages", b)
    assert request_key("POST", "/v1/messages", a, ()) != request_key("POST", "/v1/messages", b, ())
    ignored = parse_ignored(["messages.cache_control  # per element"], source="llm_record_ignore")
    c = {"messages": [{"content": "x", "cache_control": {"type": "ephemeral"}}]}
    assert request_key("POST", "/p", c, ignored) == request_key("POST", "/p", {"messages": [{"content": "x"}]}, ignored)
    with pytest.raises(ValueError, match="llm_record_ignore line 1"):
        parse_ignored(["metadata..user_id"], source="llm_record_ignore")


def test_identical_requests_replay_in_recorded_order(tmp_path: Path) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "same"}]}
    first = _interaction(body, status=529, response={"json": {"type": "error"}})
    second = _interaction(body)
    path = tmp_path / "t.json"
    Cassette("t", (first, second)).save(path)
    tape = Tape("t", path, "none")

    assert tape.take("POST", "/v1/messages", body) == first
    assert tape.take("POST", "/v1/messages", dict(reversed(list(body.items())))) == second
    assert tape.take("POST", "/v1/messages", body) is None


@pytest.mark.parametrize(
    ("mode", "cassette", "replays", "records"),
    [
        ("none", True, True, False),
        ("none", False, True, False),
        ("once", True, True, False),
        ("once", False, False, True),
        ("new", True, True, True),
        ("all", True, False, True),
    ],
)
def test_each_mode_replays_and_records_as_documented(
    tmp_path: Path, mode: str, cassette: bool, replays: bool, records: bool
) -> None:
    path = tmp_path / "t.json"
    if cassette:
        Cassette("t", (_interaction(),)).save(path)

    tape = Tape("t", path, mode)

    assert (tape.replays, tape.records) == (replays, records)
    assert (tape.take("POST", "/v1/messages", _interaction().body) is not None) == (replays and cassette)


def test_new_keeps_old_recordings_and_all_replaces_them(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    Cassette("t", (_interaction(),)).save(path)
    fresh = _interaction({"model": "m", "messages": [{"role": "user", "content": "new"}]})

    tape = Tape("t", path, "new")
    tape.add(fresh)
    tape.save()
    assert len(Cassette.load(path).interactions) == 2

    tape = Tape("t", path, "all")
    tape.add(fresh)
    tape.save()
    assert Cassette.load(path).interactions == (fresh,)


def test_a_refusal_names_the_test_the_call_and_the_cassette(tmp_path: Path) -> None:
    tape = Tape("tests/test_a.py::test_b", tmp_path / "t.json", "none")

    error = tape.refuse("a claude-sonnet-4-6 call (prompt: 'Summarise this')")

    assert "tests/test_a.py::test_b" in str(error) and "Summarise this" in str(error)
    assert "not recorded" in str(error) and str(tmp_path / "t.json") in str(error)
    assert tape.misses == [str(error)]


def test_unused_recordings_and_cassettes_of_no_test_are_stale(tmp_path: Path) -> None:
    recorder = Recorder("none", rootdir=tmp_path)
    used = "tests/test_a.py::test_used"
    Cassette(used, (_interaction(), _interaction({"model": "other"}))).save(recorder.path_of(used))
    Cassette("gone", (_interaction(),)).save(recorder.path_of("tests/test_a.py::test_gone"))

    tape = recorder.open(used)
    assert tape is not None and tape.take("POST", "/v1/messages", _interaction().body) is not None
    recorder.close(used)

    assert [(s.path.name, s.unused) for s in recorder.stale] == [("test_used.json", 1)]
    assert [(s.path.name, s.unused) for s in recorder.orphans([used])] == [("test_gone.json", 1)]


# -- redaction ---------------------------------------------------------------------------------------------
ANTHROPIC_KEY = "sk-ant-api03-" + "Zq8x" * 20
OPENAI_KEY = "sk-proj-" + "a1B2" * 12


def test_every_auth_header_is_redacted_and_harmless_ones_are_kept() -> None:
    headers = redact_headers(
        [
            ("X-Api-Key", ANTHROPIC_KEY),
            ("Authorization", "Bearer whatever-it-is"),
            ("anthropic-organization-id", "org-123"),
            ("OpenAI-Project", "proj_1"),
            ("Cookie", "session=1"),
            ("set-cookie", "a=b"),
            ("x-custom-api-key", "k"),
            ("anthropic-ratelimit-tokens-remaining", "4000"),
            ("x-stainless-retry-count", "0"),
            ("date", "today"),
        ],
        drop=["date"],
    )

    assert {k for k, v in headers.items() if v == "[REDACTED]"} == {
        "x-api-key",
        "authorization",
        "anthropic-organization-id",
        "openai-project",
        "cookie",
        "set-cookie",
        "x-custom-api-key",
    }
    assert headers["anthropic-ratelimit-tokens-remaining"] == "4000"  # "token" in a name is no secret
    assert "x-stainless-retry-count" not in headers and "date" not in headers


def test_keys_in_bodies_are_redacted_and_usage_and_token_fields_are_untouched() -> None:
    body = {
        "max_tokens": 300,
        "messages": [{"role": "user", "content": f"my key is {ANTHROPIC_KEY}, and {OPENAI_KEY}"}],
        "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 0},
        "token": "short",
    }

    redacted = redact_body(body)

    assert redacted["messages"][0]["content"] == "my key is [REDACTED], and [REDACTED]"
    assert redacted["usage"] == body["usage"] and redacted["max_tokens"] == 300 and redacted["token"] == "short"


def test_find_secrets_sees_a_key_or_an_unredacted_auth_header() -> None:
    assert find_secrets('{"content": "a clean file"}') == []
    assert find_secrets(f'{{"content": "{ANTHROPIC_KEY}"}}')[0].startswith("Anthropic API key")
    assert find_secrets("{}", headers=[{"x-api-key": "abc"}]) == ["header 'x-api-key' stored unredacted"]
    assert find_secrets("{}", headers=[{"x-api-key": "[REDACTED]"}]) == []


def test_a_refusal_says_where_the_closest_recording_differs(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    recorded = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
    Cassette("t", (_interaction(recorded),)).save(path)
    tape = Tape("t", path, "none")

    changed = {**recorded, "messages": [{"role": "user", "content": "hello!"}]}
    message = str(tape.refuse("a call", ("POST", "/v1/messages", changed)))

    assert "the closest recording differs at messages[0].content;" in message
    assert first_difference(recorded, {**recorded, "max_tokens": 6}) == "max_tokens"
    assert first_difference(recorded, dict(reversed(list(recorded.items())))) is None


def test_the_cassette_layer_imports_neither_pytest_nor_any_provider_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_costguard.replay, pytest_costguard.replay.stale; "
        "print(sorted(m for m in ('pytest', 'anthropic', 'openai', 'httpx2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "[]"
