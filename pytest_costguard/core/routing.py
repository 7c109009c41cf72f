"""Route each request to the cheapest model that fits its complexity.

Two users share this module. Application code calls `select_model` / `decide_model` with the size of a task
(the seed design's complexity routing). The pytest plugin holds a `RoutePolicy` and asks it, for each outgoing
Messages request body, which model to send instead of the requested one.

All model names live in `RoutingConfig`: nothing else in the package should spell a model name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ..domain import openai_request
from ..domain.models import family_tier, lookup_model, openai_size_tier, provider_of
from ..domain.request import request_size

__all__ = [
    "DEFAULT_ROUTING",
    "ROUTE_MODES",
    "RouteMode",
    "RoutePolicy",
    "RoutingConfig",
    "RoutingDecision",
    "decide_model",
    "parse_route_map",
    "parse_route_mode",
    "request_size",
    "select_model",
]

logger = logging.getLogger(__name__)

RouteMode = Literal["off", "cheap", "auto"]
ROUTE_MODES: tuple[RouteMode, ...] = ("off", "cheap", "auto")


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Which models complexity routing picks between, and where a task becomes complex."""

    cheap_model: str = "claude-haiku-4-5"
    """Model for simple tasks."""
    strong_model: str = "claude-sonnet-4-6"
    """Model for complex tasks (application routing; the plugin's auto mode keeps the requested model)."""
    text_threshold: int = 10_000
    """A task with at least this many characters of text is complex."""
    item_threshold: int = 30
    """A task with at least this many items (messages, for a request) is complex."""
    cheap_openai_model: str = "gpt-4.1-nano"
    """The cheap model for OpenAI calls (never crossing providers). A non-reasoning model: it takes either
    output limit (`max_tokens` or `max_completion_tokens`), and it spends no hidden reasoning tokens."""
    strong_openai_model: str = "gpt-4.1"
    """The strong model for OpenAI calls (application routing, `process()` with an OpenAI client)."""

    def __post_init__(self) -> None:
        for name in ("cheap_model", "strong_model", "cheap_openai_model", "strong_openai_model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"RoutingConfig.{name} must be a model name, got {value!r}")
        for name in ("text_threshold", "item_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"RoutingConfig.{name} must be an int >= 0, got {value!r}")


DEFAULT_ROUTING = RoutingConfig()


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The model a request goes to, and why."""

    model: str
    """The model to send the request to."""
    reason: str
    """A sentence a human can read in a log, naming the figures that decided."""
    rule: str
    """Tag of the deciding rule: forced, text_length, item_count, simple, pinned, route_map, cheap or off."""


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _complexity(text_length: int, item_count: int, config: RoutingConfig) -> tuple[str, str]:
    """Return the deciding rule (text_length, item_count or simple) and the comparison behind it."""
    _check_count("text_length", text_length)
    _check_count("item_count", item_count)
    if text_length >= config.text_threshold:
        return "text_length", f"text_length {text_length} >= text_threshold {config.text_threshold}"
    if item_count >= config.item_threshold:
        return "item_count", f"item_count {item_count} >= item_threshold {config.item_threshold}"
    return "simple", (
        f"text_length {text_length} < text_threshold {config.text_threshold} and "
        f"item_count {item_count} < item_threshold {config.item_threshold}"
    )


def decide_model(
    text_length: int,
    item_count: int,
    force_model: str | None = None,
    *,
    config: RoutingConfig = DEFAULT_ROUTING,
) -> RoutingDecision:
    """Decide which model a task of this size needs, and say why.

    A task is complex when its text reaches `config.text_threshold` characters or its items reach
    `config.item_threshold` (either threshold, inclusive); complex tasks get the strong model, the rest the
    cheap one. `force_model` overrides both. Negative sizes raise `ValueError`.
    """
    rule, why = _complexity(text_length, item_count, config)
    if force_model is not None:
        if not isinstance(force_model, str) or not force_model.strip():
            raise ValueError(f"force_model must be a model name or None, got {force_model!r}")
        return RoutingDecision(force_model, f"force_model {force_model!r} given by the caller", "forced")
    if rule == "simple":
        return RoutingDecision(config.cheap_model, f"{why}: cheap model", rule)
    return RoutingDecision(config.strong_model, f"{why}: strong model", rule)


def select_model(
    text_length: int,
    item_count: int,
    force_model: str | None = None,
    *,
    config: RoutingConfig = DEFAULT_ROUTING,
) -> str:
    """Return the model for a task of this size; log the decision at DEBUG."""
    decision = decide_model(text_length, item_count, force_model, config=config)
    # Logged so thresholds can be tuned from real data (the seed's advice).
    logger.debug("routed to %s [%s]: %s", decision.model, decision.rule, decision.reason)
    return decision.model


def _is_downgrade(requested: str, cheap: str, provider: str = "anthropic") -> bool:
    """Return whether `cheap` is certainly cheaper than `requested` (unknown families: not certain)."""
    tier = openai_size_tier if provider == "openai" else family_tier
    requested_tier = tier(requested)
    cheap_tier = tier(cheap)
    return requested_tier is not None and cheap_tier is not None and cheap_tier < requested_tier


def _frozen_route_map(route_map: Mapping[str, str]) -> Mapping[str, str]:
    for requested, sent in route_map.items():
        for value in (requested, sent):
            if not isinstance(value, str) or not value.strip() or value != value.strip():
                raise ValueError(f"route_map entries must be model names, got {requested!r} -> {sent!r}")
    return MappingProxyType(dict(route_map))


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How the plugin rewrites the `model` of outgoing Messages requests."""

    mode: RouteMode = "off"
    """off: send what was asked; cheap: send all to the cheap model; auto: downgrade simple requests."""
    route_map: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Explicit `requested -> sent` rewrites, applied in every mode; a key also matches its dated names."""
    config: RoutingConfig = DEFAULT_ROUTING
    """The cheap model and the complexity thresholds auto mode uses."""

    def __post_init__(self) -> None:
        if self.mode not in ROUTE_MODES:
            raise ValueError(f"RoutePolicy.mode: {self.mode!r} is not one of {', '.join(ROUTE_MODES)}")
        # Frozen all the way down: a policy is shared by every test of a session.
        object.__setattr__(self, "route_map", _frozen_route_map(self.route_map))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for the session's child processes (metering.children); a read-only view does not pickle.
        return (RoutePolicy, (self.mode, dict(self.route_map), self.config))

    @property
    def is_off(self) -> bool:
        """Whether every request is sent to the model it asks for (unless a test pins one)."""
        return self.mode == "off" and not self.route_map

    def route(
        self,
        requested_model: str,
        body: Mapping[str, Any],
        *,
        pinned: str | None = None,
        provider: str = "anthropic",
        endpoint: openai_request.Endpoint | None = None,
    ) -> RoutingDecision:
        """Decide which model a request for `requested_model` with this body is sent to.

        Precedence: a model pinned by the test, then `route_map`, then the mode. Auto mode sends simple
        requests to the cheap model and keeps the requested model for complex ones: it never sends a
        request to a more expensive model than asked (and keeps the request as is when it cannot tell,
        e.g. for a model outside the haiku < sonnet < opus families, or one already in the cheap tier).
        A request is never sent to another provider's model: an OpenAI call (`provider="openai"`, a body for
        `endpoint`) goes to `config.cheap_openai_model`, and a pin naming another provider's model leaves it
        alone. Embeddings are never routed (another embedding model gives vectors of another space).
        """
        if provider == "openai" and endpoint == "embeddings":
            return RoutingDecision(requested_model, "embeddings are never routed: requested model kept", "off")
        if pinned is not None:
            if provider_of(pinned) not in (None, provider):
                return RoutingDecision(
                    requested_model, f"the pin {pinned!r} is another provider's model: requested model kept", "off"
                )
            return RoutingDecision(pinned, f"pinned to {pinned!r} by the test", "pinned")
        sent = lookup_model(self.route_map, requested_model)
        if sent is not None:
            return RoutingDecision(sent, f"route_map sends {requested_model!r} to {sent!r}", "route_map")
        if self.mode == "off":
            return RoutingDecision(requested_model, "routing is off: requested model kept", "off")
        cheap = self.config.cheap_openai_model if provider == "openai" else self.config.cheap_model
        if self.mode == "cheap":
            return RoutingDecision(cheap, f"routing is cheap: every request goes to {cheap!r}", "cheap")
        size = request_size(body) if endpoint is None else openai_request.request_size(body, endpoint)
        rule, why = _complexity(*size, self.config)
        if rule != "simple":
            return RoutingDecision(requested_model, f"{why}: complex, requested model kept", rule)
        if not _is_downgrade(requested_model, cheap, provider):
            return RoutingDecision(
                requested_model,
                f"{why}: simple, but {cheap!r} is not certainly cheaper than {requested_model!r}: kept",
                rule,
            )
        return RoutingDecision(cheap, f"{why}: simple, sent to {cheap!r}", rule)


def parse_route_mode(value: str, *, source: str) -> RouteMode:
    """Parse a routing mode, naming `source` (e.g. "--llm-route") in the error."""
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in ROUTE_MODES:
        raise ValueError(f"{source}: {value!r} is not one of {', '.join(ROUTE_MODES)}")
    return mode


_MODEL_NAME = re.compile(r"\S+")


def parse_route_map(text: str, *, source: str) -> dict[str, str]:
    """Parse `requested = sent` lines into a route map, naming `source` and the line in errors.

    Blank lines and `#` comments (whole-line or trailing) are ignored; a model mapped twice is an error.
    """
    route_map: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requested, equals, sent = (part.strip() for part in line.partition("="))
        if not equals or not _MODEL_NAME.fullmatch(requested) or not _MODEL_NAME.fullmatch(sent):
            raise ValueError(f"{source} line {number}: {line!r} is not 'requested = sent'")
        if requested in route_map:
            raise ValueError(f"{source} line {number}: {requested!r} is already mapped on line {first_line[requested]}")
        route_map[requested] = sent
        first_line[requested] = number
    return route_map
