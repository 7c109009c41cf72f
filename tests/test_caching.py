from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pytest_costguard.core.caching import (
    DEFAULT_MINIMUMS,
    MAX_BREAKPOINTS,
    CacheMinimums,
    build_cached_messages,
    count_breakpoints,
    estimate_tokens,
    mark_system_prompt_cacheable,
    min_cacheable_tokens,
)

FIVE_MINUTES = {"type": "ephemeral"}
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}


def prompt(tokens: int) -> str:
    """Return ASCII text that `estimate_tokens` puts at exactly `tokens`."""
    return "x" * (4 * tokens)


def block(text: str = "t", control: dict[str, str] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "text", "text": text}
    if control is not None:
        result["cache_control"] = control
    return result


def request(system: Any = None, model: str = "claude-opus-5", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    if system is not None:
        body["system"] = system
    body.update(extra)
    return body


# --- minimums and estimates ---


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-opus-5", 512),
        ("claude-opus-5-5", 512),
        ("claude-sonnet-5-5", 512),
        ("claude-haiku-5-5", 512),
        ("claude-fable-5", 512),
        ("claude-fable-5-1", 512),
        ("claude-mythos-5-2", 512),
        ("claude-opus-4-8", 1024),
        ("claude-sonnet-5", 1024),
        ("claude-sonnet-4-5", 1024),
        ("claude-sonnet-4-6", 1024),
        ("claude-opus-4-7", 2048),
        ("claude-opus-4-5", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-haiku-4-5", 4096),
    ],
)
def test_each_model_has_its_published_minimum(model: str, minimum: int) -> None:
    assert min_cacheable_tokens(model) == minimum


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-haiku-4-5-20251001", 4096),
        ("claude-opus-4-7@20260101", 2048),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", 4096),
        ("claude-opus-4.7", 2048),
        ("claude-sonnet-5-5-20260301", 512),
        ("claude-sonnet-5-20260101", 1024),
    ],
)
def test_dated_and_provider_names_match_their_model(model: str, minimum: int) -> None:
    assert min_cacheable_tokens(model) == minimum


def test_the_longest_prefix_wins() -> None:
    minimums = CacheMinimums({"claude": 1, "claude-x": 2, "claude-x-y": 3}, default=0)
    assert [minimums.for_model(m) for m in ("claude-x-y-1", "claude-x-z", "claude-q", "gpt")] == [3, 2, 1, 0]


def test_a_prefix_matches_only_at_a_name_boundary() -> None:
    assert CacheMinimums({"claude-opus-4-7": 2048}, default=7).for_model("claude-opus-4-70") == 7


def test_an_unknown_model_gets_the_default() -> None:
    assert min_cacheable_tokens("some-other-model") == DEFAULT_MINIMUMS.default == 1024


def test_users_can_pass_their_own_minimums() -> None:
    # Some observers report 2048 for Sonnet 4.6.
    mine = CacheMinimums({**DEFAULT_MINIMUMS, "claude-sonnet-4-6": 2048})
    assert min_cacheable_tokens("claude-sonnet-4-6", mine) == 2048
    assert min_cacheable_tokens("claude-sonnet-4-6", {"claude-sonnet-4-6": 2048}) == 2048
    assert min_cacheable_tokens("claude-opus-5", {"claude-sonnet-4-6": 2048}) == 1024


def test_minimums_behave_as_a_read_only_mapping() -> None:
    assert DEFAULT_MINIMUMS["claude-opus-4-7"] == 2048
    assert "claude-haiku-4-5" in DEFAULT_MINIMUMS
    assert len(DEFAULT_MINIMUMS) == len(list(DEFAULT_MINIMUMS))
    with pytest.raises(TypeError):
        DEFAULT_MINIMUMS.by_prefix["claude-opus-4-7"] = 1  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_MINIMUMS.default = 1  # type: ignore[misc]


def test_equal_minimums_hash_equal_whatever_their_order() -> None:
    a = CacheMinimums({"claude-a": 1, "claude-b": 2})
    b = CacheMinimums({"claude-b": 2, "claude-a": 1})
    assert a == b
    assert hash(a) == hash(b)


@pytest.mark.parametrize("table", [{"claude-a": -1}, {"": 5}, {"claude-a": 1.5}])
def test_bad_minimums_are_rejected(table: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="CacheMinimums"):
        CacheMinimums(table)


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("abcd", 1), ("abcde", 2), ("é", 1), ("日本語", 3)])
def test_the_estimate_is_utf8_bytes_over_four_rounded_up(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


@given(st.text())
def test_the_estimate_never_exceeds_the_utf8_byte_count(text: str) -> None:
    # A byte count is an upper bound on a byte-level BPE's tokens: the estimate stays well under it.
    size = len(text.encode("utf-8"))
    assert size / 4 <= estimate_tokens(text) <= max(size, 0) / 4 + 1


# --- build_cached_messages ---


def test_a_prompt_below_the_minimum_is_sent_as_a_plain_string() -> None:
    kwargs = build_cached_messages(prompt(4095), "question", model="claude-haiku-4-5")
    assert kwargs == {"system": prompt(4095), "messages": [{"role": "user", "content": "question"}]}


def test_a_prompt_at_the_minimum_is_marked_cacheable() -> None:
    kwargs = build_cached_messages(prompt(4096), "question", model="claude-haiku-4-5")
    assert kwargs["system"] == [block(prompt(4096), FIVE_MINUTES)]
    assert kwargs["messages"] == [{"role": "user", "content": "question"}]


def test_the_same_prompt_is_cached_for_one_model_and_not_another() -> None:
    text = prompt(1000)
    assert isinstance(build_cached_messages(text, "q", model="claude-opus-5")["system"], list)
    assert isinstance(build_cached_messages(text, "q", model="claude-sonnet-4-6")["system"], str)


def test_a_one_hour_ttl_is_written_into_cache_control() -> None:
    kwargs = build_cached_messages(prompt(600), "q", model="claude-opus-5", ttl="1h")
    assert kwargs["system"][0]["cache_control"] == ONE_HOUR


def test_a_five_minute_ttl_is_the_plain_ephemeral_form() -> None:
    kwargs = build_cached_messages(prompt(600), "q", model="claude-opus-5", ttl="5m")
    assert kwargs["system"][0]["cache_control"] == FIVE_MINUTES


def test_an_unknown_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="ttl must be None, '5m' or '1h', got '10m'"):
        build_cached_messages("s", "q", model="claude-opus-5", ttl="10m")  # type: ignore[arg-type]


def test_custom_minimums_decide_what_is_cached() -> None:
    kwargs = build_cached_messages(prompt(10), "q", model="claude-opus-5", minimums={"claude-opus-5": 10})
    assert isinstance(kwargs["system"], list)


def test_an_empty_system_prompt_is_left_out() -> None:
    assert build_cached_messages("", "q", model="claude-opus-5") == {
        "messages": [{"role": "user", "content": "q"}]
    }


# --- count_breakpoints ---


def test_breakpoints_are_counted_everywhere_the_api_allows_them() -> None:
    body = request(
        system=[block("a", FIVE_MINUTES), block("b")],
        tools=[
            {"name": "t", "input_schema": {}, "cache_control": ONE_HOUR},
            {"name": "u", "input_schema": {}},
        ],
        messages=[
            {"role": "user", "content": [block("q", FIVE_MINUTES)]},
            {"role": "assistant", "content": "plain"},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "x", "content": [block("r", FIVE_MINUTES)]}
                ],
            },
        ],
        cache_control=FIVE_MINUTES,
    )
    assert count_breakpoints(body) == 5


def test_a_body_without_cache_control_has_no_breakpoints() -> None:
    assert count_breakpoints(request(system="plain", tools=[{"name": "t"}])) == 0
    assert count_breakpoints({}) == 0


# --- mark_system_prompt_cacheable ---


def test_a_long_string_system_prompt_becomes_one_cached_block() -> None:
    body = request(system=prompt(512))
    marked = mark_system_prompt_cacheable(body)
    assert marked == {**body, "system": [block(prompt(512), FIVE_MINUTES)]}
    assert body["system"] == prompt(512)


def test_the_last_system_block_gets_the_breakpoint() -> None:
    first, last = block(prompt(300)), block(prompt(300))
    marked = mark_system_prompt_cacheable(request(system=[first, last]))
    assert marked is not None
    assert marked["system"] == [first, {**last, "cache_control": FIVE_MINUTES}]
    assert "cache_control" not in last


def test_a_system_prompt_below_the_model_minimum_is_left_alone() -> None:
    assert mark_system_prompt_cacheable(request(system=prompt(511))) is None
    assert mark_system_prompt_cacheable(request(system=prompt(4095), model="claude-haiku-4-5")) is None


def test_a_system_prompt_at_the_model_minimum_is_marked() -> None:
    assert mark_system_prompt_cacheable(request(system=prompt(4096), model="claude-haiku-4-5")) is not None


def test_custom_minimums_are_honoured() -> None:
    body = request(system=prompt(600))
    assert mark_system_prompt_cacheable(body, minimums={"claude-opus-5": 1000}) is None


@pytest.mark.parametrize("system", [None, "", [], [{"type": "image"}], 42])
def test_a_body_without_a_text_system_prompt_is_left_alone(system: Any) -> None:
    assert mark_system_prompt_cacheable(request(system=system)) is None


def test_a_body_without_a_model_is_left_alone() -> None:
    body = request(system=prompt(5000))
    del body["model"]
    assert mark_system_prompt_cacheable(body) is None


def test_a_system_prompt_that_already_has_a_breakpoint_is_left_alone() -> None:
    body = request(system=[block(prompt(600), FIVE_MINUTES), block("tail")])
    assert mark_system_prompt_cacheable(body) is None


def test_a_body_using_automatic_caching_is_left_alone() -> None:
    assert mark_system_prompt_cacheable(request(system=prompt(600), cache_control=FIVE_MINUTES)) is None


def messages_with_breakpoints(n: int, control: dict[str, str] = FIVE_MINUTES) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [block(str(i), control) for i in range(n)]}]


def test_a_body_with_four_breakpoints_is_left_alone() -> None:
    body = request(system=prompt(600), messages=messages_with_breakpoints(MAX_BREAKPOINTS))
    assert mark_system_prompt_cacheable(body) is None


def test_a_body_with_three_breakpoints_gets_its_fourth() -> None:
    body = request(system=prompt(600), messages=messages_with_breakpoints(3))
    marked = mark_system_prompt_cacheable(body)
    assert marked is not None
    assert count_breakpoints(marked) == MAX_BREAKPOINTS


def test_the_requested_one_hour_ttl_is_used() -> None:
    marked = mark_system_prompt_cacheable(request(system=prompt(600)), ttl="1h")
    assert marked is not None
    assert marked["system"][0]["cache_control"] == ONE_HOUR


def test_a_later_one_hour_breakpoint_makes_the_system_breakpoint_one_hour() -> None:
    body = request(system=prompt(600), messages=messages_with_breakpoints(1, ONE_HOUR))
    marked = mark_system_prompt_cacheable(body)
    assert marked is not None
    assert marked["system"][0]["cache_control"] == ONE_HOUR


def test_an_earlier_five_minute_tool_breakpoint_makes_a_wanted_one_hour_five_minutes() -> None:
    body = request(system=prompt(600), tools=[{"name": "t", "cache_control": FIVE_MINUTES}])
    marked = mark_system_prompt_cacheable(body, ttl="1h")
    assert marked is not None
    assert marked["system"][0]["cache_control"] == FIVE_MINUTES


def test_no_ttl_fits_between_a_five_minute_tool_and_a_one_hour_message() -> None:
    body = request(
        system=prompt(600),
        tools=[{"name": "t", "cache_control": FIVE_MINUTES}],
        messages=messages_with_breakpoints(1, ONE_HOUR),
    )
    assert mark_system_prompt_cacheable(body) is None
    assert mark_system_prompt_cacheable(body, ttl="1h") is None


def test_marking_rejects_an_unknown_ttl() -> None:
    with pytest.raises(ValueError, match="ttl"):
        mark_system_prompt_cacheable(request(system=prompt(600)), ttl="2h")  # type: ignore[arg-type]


def test_only_the_system_prompt_is_copied() -> None:
    body = request(system=prompt(600))
    marked = mark_system_prompt_cacheable(body)
    assert marked is not None
    assert marked is not body
    assert marked["messages"] is body["messages"]


# --- properties over arbitrary bodies ---

controls = st.sampled_from([None, FIVE_MINUTES, ONE_HOUR, {"type": "ephemeral", "ttl": "5m"}])
rare_controls = st.sampled_from([None, None, None, FIVE_MINUTES, ONE_HOUR])


def blocks_with(text: st.SearchStrategy[str], control: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(lambda t, c: block(t, None if c is None else dict(c)), text, control)


systems = st.one_of(
    st.none(),
    st.sampled_from(["", "short", prompt(600)]),
    st.lists(blocks_with(st.sampled_from(["", "s", prompt(300)]), rare_controls), min_size=1, max_size=3),
)
tool_lists = st.lists(
    st.builds(
        lambda c: {"name": "t"} if c is None else {"name": "t", "cache_control": dict(c)}, rare_controls
    ),
    max_size=3,
)
message_lists = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.text(max_size=5)
            | st.lists(blocks_with(st.text(max_size=5), rare_controls), max_size=3),
        }
    ),
    max_size=3,
)
bodies = st.builds(
    lambda model, system, tools, messages, top: {
        k: v
        for k, v in {
            "model": model,
            "system": system,
            "tools": tools,
            "messages": messages,
            "cache_control": top,
        }.items()
        if v is not None
    },
    st.sampled_from(["claude-opus-5", "claude-haiku-4-5", "claude-sonnet-4-6"]),
    systems,
    tool_lists,
    message_lists,
    st.sampled_from([None, None, None, FIVE_MINUTES]),
)
# A table where every prompt is long enough lets the properties reach the TTL and breakpoint logic often.
minimum_tables = st.sampled_from([DEFAULT_MINIMUMS, CacheMinimums({}, default=1)])
ttls = st.sampled_from([None, "5m", "1h"])

RANK = {"5m": 0, "1h": 1}


def ttls_in_prefix_order(body: dict[str, Any]) -> list[int]:
    found: list[dict[str, Any]] = [*body.get("tools", [])]
    system = body.get("system")
    if isinstance(system, list):
        found += system
    for message in body.get("messages", []):
        if isinstance(message["content"], list):
            found += message["content"]
    return [RANK[b["cache_control"].get("ttl", "5m")] for b in found if "cache_control" in b]


@settings(max_examples=300)
@given(bodies, ttls, minimum_tables)
def test_marking_never_mutates_its_input(body: dict[str, Any], ttl: Any, minimums: CacheMinimums) -> None:
    before = copy.deepcopy(body)
    mark_system_prompt_cacheable(body, ttl=ttl, minimums=minimums)
    assert body == before


@settings(max_examples=300)
@given(bodies, ttls, minimum_tables)
def test_a_marked_body_adds_one_valid_breakpoint_and_changes_nothing_else(
    body: dict[str, Any], ttl: Any, minimums: CacheMinimums
) -> None:
    marked = mark_system_prompt_cacheable(body, ttl=ttl, minimums=minimums)
    event("marked" if marked is not None else "left alone")
    if marked is None:
        return
    assert count_breakpoints(marked) == count_breakpoints(body) + 1 <= MAX_BREAKPOINTS
    before, after = ttls_in_prefix_order(body), ttls_in_prefix_order(marked)
    if before == sorted(before, reverse=True):
        assert after == sorted(after, reverse=True), "a longer TTL follows a shorter one"
    assert {k: v for k, v in marked.items() if k != "system"} == {
        k: v for k, v in body.items() if k != "system"
    }
    texts = [b["text"] for b in marked["system"]]
    assert texts == (
        [body["system"]] if isinstance(body["system"], str) else [b["text"] for b in body["system"]]
    )
