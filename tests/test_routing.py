from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_costguard.core.routing import (
    DEFAULT_ROUTING,
    RoutePolicy,
    RoutingConfig,
    RoutingDecision,
    decide_model,
    parse_route_map,
    parse_route_mode,
    request_size,
    select_model,
)

CHEAP = DEFAULT_ROUTING.cheap_model
STRONG = DEFAULT_ROUTING.strong_model


def body(*texts: str, system: Any = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": "claude-opus-4-7",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": text} for text in texts],
    }
    if system is not None:
        request["system"] = system
    return request


# --- complexity routing (the seed's select_model) ---


def test_the_defaults_are_the_seed_thresholds_and_current_models() -> None:
    assert RoutingConfig("claude-haiku-4-5", "claude-sonnet-4-6", 10_000, 30) == DEFAULT_ROUTING


def test_a_small_task_goes_to_the_cheap_model() -> None:
    assert select_model(9_999, 29) == CHEAP


def test_text_at_the_threshold_goes_to_the_strong_model() -> None:
    decision = decide_model(10_000, 0)
    assert decision == RoutingDecision(
        STRONG, "text_length 10000 >= text_threshold 10000: strong model", "text_length"
    )


def test_text_one_below_the_threshold_stays_cheap() -> None:
    assert decide_model(9_999, 0).rule == "simple"


def test_items_at_the_threshold_go_to_the_strong_model() -> None:
    decision = decide_model(0, 30)
    assert (decision.model, decision.rule) == (STRONG, "item_count")
    assert "item_count 30 >= item_threshold 30" in decision.reason


def test_items_one_below_the_threshold_stay_cheap() -> None:
    assert decide_model(0, 29).model == CHEAP


def test_a_forced_model_wins_over_the_thresholds() -> None:
    decision = decide_model(1_000_000, 1_000, force_model="claude-opus-5")
    assert (decision.model, decision.rule) == ("claude-opus-5", "forced")
    assert select_model(0, 0, "claude-opus-5") == "claude-opus-5"


def test_a_custom_config_changes_models_and_thresholds() -> None:
    config = RoutingConfig(cheap_model="a", strong_model="b", text_threshold=5, item_threshold=2)
    assert select_model(4, 1, config=config) == "a"
    assert select_model(5, 1, config=config) == "b"
    assert select_model(4, 2, config=config) == "b"


@pytest.mark.parametrize(("text_length", "item_count"), [(-1, 0), (0, -1)])
def test_a_negative_size_is_a_value_error(text_length: int, item_count: int) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        decide_model(text_length, item_count)


def test_a_negative_size_is_rejected_even_with_a_forced_model() -> None:
    with pytest.raises(ValueError):
        select_model(-5, 0, "claude-opus-5")


def test_an_empty_forced_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="force_model"):
        decide_model(0, 0, force_model="")


def test_a_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="text_threshold"):
        RoutingConfig(text_threshold=-1)
    with pytest.raises(ValueError, match="cheap_model"):
        RoutingConfig(cheap_model=" ")


def test_configs_and_decisions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_ROUTING.cheap_model = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decide_model(0, 0).model = "x"  # type: ignore[misc]


def test_select_model_logs_the_decision_and_its_reason_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pytest_costguard.core.routing"):
        select_model(12_000, 3)
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.name == "pytest_costguard.core.routing"
    assert STRONG in record.getMessage()
    assert "text_length 12000 >= text_threshold 10000" in record.getMessage()


@given(st.integers(0, 50_000), st.integers(0, 100))
def test_select_model_is_strong_exactly_when_a_threshold_is_reached(
    text_length: int, item_count: int
) -> None:
    complex_task = text_length >= 10_000 or item_count >= 30
    assert select_model(text_length, item_count) == (STRONG if complex_task else CHEAP)


# --- the plugin's RoutePolicy ---


def test_routing_off_sends_the_requested_model() -> None:
    decision = RoutePolicy().route("claude-opus-4-7", body("hi"))
    assert (decision.model, decision.rule) == ("claude-opus-4-7", "off")


def test_routing_cheap_sends_everything_to_the_cheap_model() -> None:
    decision = RoutePolicy(mode="cheap").route("claude-opus-4-7", body("x" * 50_000))
    assert (decision.model, decision.rule) == (CHEAP, "cheap")


def test_auto_routing_sends_a_simple_request_to_the_cheap_model() -> None:
    decision = RoutePolicy(mode="auto").route("claude-opus-4-7", body("hello"))
    assert (decision.model, decision.rule) == (CHEAP, "simple")


def test_auto_routing_keeps_the_requested_model_for_a_long_request() -> None:
    decision = RoutePolicy(mode="auto").route("claude-opus-4-7", body("x" * 10_000))
    assert (decision.model, decision.rule) == ("claude-opus-4-7", "text_length")
    assert "requested model kept" in decision.reason


def test_auto_routing_keeps_the_requested_model_for_a_long_conversation() -> None:
    decision = RoutePolicy(mode="auto").route("claude-opus-4-7", body(*["hi"] * 30))
    assert (decision.model, decision.rule) == ("claude-opus-4-7", "item_count")


def test_auto_routing_never_upgrades_a_complex_request_to_the_strong_model() -> None:
    decision = RoutePolicy(mode="auto").route("claude-haiku-4-5", body("x" * 50_000))
    assert decision.model == "claude-haiku-4-5"


def test_auto_routing_keeps_a_model_already_in_the_cheap_tier() -> None:
    # Haiku 5.5 costs a tenth of Haiku 4.5: "downgrading" it to the cheap model would cost 10x.
    decision = RoutePolicy(mode="auto").route("claude-haiku-5-5", body("hi"))
    assert (decision.model, decision.rule) == ("claude-haiku-5-5", "simple")
    assert "not certainly cheaper" in decision.reason


def test_auto_routing_keeps_a_model_of_an_unknown_family() -> None:
    assert RoutePolicy(mode="auto").route("my-finetune", body("hi")).model == "my-finetune"


def test_auto_routing_counts_system_blocks_and_text_blocks() -> None:
    request = body(system=[{"type": "text", "text": "s" * 6_000}])
    request["messages"] = [{"role": "user", "content": [{"type": "text", "text": "u" * 4_000}]}]
    assert request_size(request) == (10_000, 1)
    assert RoutePolicy(mode="auto").route("claude-opus-4-7", request).rule == "text_length"


def test_request_size_counts_tool_results_and_ignores_images() -> None:
    request = body()
    request["messages"] = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "data": "A" * 99_999}},
                {"type": "tool_result", "tool_use_id": "t", "content": "r" * 7},
                {"type": "tool_result", "tool_use_id": "u", "content": [{"type": "text", "text": "abc"}]},
            ],
        }
    ]
    assert request_size(request) == (10, 1)


def test_request_size_tolerates_a_malformed_body() -> None:
    assert request_size({"messages": "nonsense", "system": 42}) == (0, 0)
    assert request_size({"messages": [None, {"content": None}]}) == (0, 2)


def test_a_pinned_model_wins_over_route_map_and_mode() -> None:
    policy = RoutePolicy(mode="cheap", route_map={"claude-opus-4-7": "claude-sonnet-4-6"})
    decision = policy.route("claude-opus-4-7", body("hi"), pinned="claude-opus-5")
    assert (decision.model, decision.rule) == ("claude-opus-5", "pinned")


@pytest.mark.parametrize("mode", ["off", "cheap", "auto"])
def test_route_map_applies_in_every_mode(mode: Any) -> None:
    policy = RoutePolicy(mode=mode, route_map={"claude-opus-4-7": "claude-sonnet-4-6"})
    decision = policy.route("claude-opus-4-7", body("hi"))
    assert (decision.model, decision.rule) == ("claude-sonnet-4-6", "route_map")


@pytest.mark.parametrize("requested", ["claude-opus-4-7-20260101", "claude-opus-4-7@20260101"])
def test_a_route_map_key_matches_its_dated_names(requested: str) -> None:
    policy = RoutePolicy(route_map={"claude-opus-4-7": "claude-sonnet-4-6"})
    assert policy.route(requested, body("hi")).model == "claude-sonnet-4-6"


@pytest.mark.parametrize("requested", ["claude-opus-4-70", "claude-opus-4-7-fast", "claude-opus-4"])
def test_a_route_map_key_does_not_match_other_models_sharing_its_prefix(requested: str) -> None:
    policy = RoutePolicy(route_map={"claude-opus-4-7": "claude-sonnet-4-6"})
    assert policy.route(requested, body("hi")).model == requested


def test_an_exact_route_map_key_wins_over_a_dated_prefix() -> None:
    policy = RoutePolicy(route_map={"claude-x": "a", "claude-x-20260101": "b"})
    assert policy.route("claude-x-20260101", body()).model == "b"


def test_a_policy_cannot_be_changed_through_its_route_map() -> None:
    source = {"claude-opus-4-7": "claude-sonnet-4-6"}
    policy = RoutePolicy(route_map=source)
    source["claude-opus-4-7"] = "claude-opus-5"
    assert policy.route("claude-opus-4-7", body()).model == "claude-sonnet-4-6"
    with pytest.raises(TypeError):
        policy.route_map["x"] = "y"  # type: ignore[index]
    assert hash(policy) == hash(RoutePolicy(route_map={"claude-opus-4-7": "claude-sonnet-4-6"}))


def test_a_policy_with_an_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="'fast' is not one of off, cheap, auto"):
        RoutePolicy(mode="fast")  # type: ignore[arg-type]


texts = st.text(max_size=60)
blocks = st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), max_size=3)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": texts | blocks}),
    max_size=40,
)
models = st.sampled_from(
    [
        "claude-haiku-4-5",
        "claude-haiku-5-5",
        "claude-sonnet-4-6",
        "claude-opus-4-7",
        "claude-fable-5",
        "other",
    ]
)
_TIER = {"haiku": 0, "sonnet": 1, "opus": 2, "fable": 3}


def tier(model: str) -> int:
    return next((rank for name, rank in _TIER.items() if name in model), 99)


@given(models, messages, texts | blocks, st.integers(0, 200), st.integers(0, 40))
def test_auto_routing_never_sends_a_request_to_a_dearer_family_than_asked(
    requested: str, msgs: list[Any], system: Any, text_threshold: int, item_threshold: int
) -> None:
    config = RoutingConfig(text_threshold=text_threshold, item_threshold=item_threshold)
    decision = RoutePolicy(mode="auto", config=config).route(requested, {"messages": msgs, "system": system})
    assert decision.model in (requested, config.cheap_model)
    if decision.model != requested:
        assert tier(decision.model) < tier(requested)


# --- parsing the options ---


@pytest.mark.parametrize(("value", "mode"), [("off", "off"), ("cheap", "cheap"), (" AUTO ", "auto")])
def test_a_route_mode_is_parsed(value: str, mode: str) -> None:
    assert parse_route_mode(value, source="--llm-route") == mode


def test_a_bad_route_mode_names_its_source_and_value() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_route_mode("fast", source="--llm-route")
    assert str(excinfo.value) == "--llm-route: 'fast' is not one of off, cheap, auto"


def test_a_route_map_is_parsed_ignoring_blanks_and_comments() -> None:
    text = """
    # send the big ones down
    claude-opus-4-7 = claude-sonnet-4-6   # cheaper

    claude-sonnet-4-6=claude-haiku-4-5
    """
    assert parse_route_map(text, source="llm_route_map") == {
        "claude-opus-4-7": "claude-sonnet-4-6",
        "claude-sonnet-4-6": "claude-haiku-4-5",
    }


def test_an_empty_route_map_is_empty() -> None:
    assert parse_route_map("", source="llm_route_map") == {}


@pytest.mark.parametrize("bad", ["foo", "a =", "= b", "a = b = c", "a b = c"])
def test_a_bad_route_map_line_names_the_source_the_line_and_its_text(bad: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_route_map(f"x = y\n{bad}\n", source="llm_route_map")
    assert str(excinfo.value) == f"llm_route_map line 2: {bad!r} is not 'requested = sent'"


def test_a_model_mapped_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="llm_route_map line 3: 'a' is already mapped on line 1"):
        parse_route_map("a = b\nc = d\na = e", source="llm_route_map")


@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9.@-]{1,20}", fullmatch=True),
        st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True),
    )
)
def test_a_route_map_survives_a_round_trip_through_its_text_form(route_map: dict[str, str]) -> None:
    text = "\n".join(f"{requested} = {sent}" for requested, sent in route_map.items())
    assert parse_route_map(text, source="s") == route_map
