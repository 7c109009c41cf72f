"""Model names: one normal form and one lookup rule for every table keyed by model (prices, routes, cache minimums).

A provider names one model in many ways: `claude-sonnet-4-5`, `claude-sonnet-4-5-20250929`, Vertex's
`claude-sonnet-4-5@20250929`, Bedrock's `anthropic.claude-sonnet-4-5-20250929-v1:0`, a cross-region
`us.anthropic.claude-sonnet-4-5-20250929-v1:0`, an ARN ending in one of those, or `claude-sonnet-4.5`.
`canonical_model` reduces each to the model id (`claude-sonnet-4-5`), so a table keyed by model ids finds them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = [
    "FAMILY_TIERS",
    "canonical_model",
    "family_tier",
    "lookup_model",
    "lookup_model_family",
    "openai_size_tier",
    "provider_of",
]

V = TypeVar("V")

_BEDROCK_PREFIX = re.compile(r"^(?:(?:us|eu|apac|global|us-gov)\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_DATE = re.compile(r"[-@]\d{8}$")
_VERSION_DOT = re.compile(r"(?<=\d)\.(?=\d)")

FAMILY_TIERS: Mapping[str, int] = {"haiku": 0, "sonnet": 1, "opus": 2, "fable": 3, "mythos": 3}
"""Price tiers of Claude families: within and across generations a haiku is cheaper than a sonnet, a sonnet than
an opus, an opus than fable/mythos (the dearest haiku, 4.5 at $1/$5, is under the cheapest sonnet, 5 at $2/$10)."""


def canonical_model(name: str) -> str:
    """Return the model id a provider-specific name stands for (`us.anthropic.claude-x-20250101-v1:0` -> `claude-x`)."""
    model = name.strip().lower()
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    model = _BEDROCK_PREFIX.sub("", model)
    model = _BEDROCK_VERSION.sub("", model)
    model = _DATE.sub("", model)
    return _VERSION_DOT.sub("-", model)


def lookup_model(table: Mapping[str, V], model: str) -> V | None:
    """Return the entry of `table` for `model`: its own name first, else the same model id under any other name.

    Exact on the model id: `claude-opus-4-7` finds `claude-opus-4-7-20260101` and `claude-opus-4-7@20260101`, never
    `claude-opus-4-70` nor the `claude-opus-4-7-fast` variant, which may be priced and routed differently.
    """
    found = table.get(model)
    if found is not None:
        return found
    wanted = canonical_model(model)
    for key, value in table.items():
        if canonical_model(key) == wanted:
            return value
    return None


def lookup_model_family(table: Iterable[tuple[str, V]], model: str) -> V | None:
    """Return the value of the longest key that is `model`'s id or a family prefix of it (`claude-fable` for
    `claude-fable-5-1`), for tables of defaults by family; None when no key matches."""
    wanted = canonical_model(model)
    best: tuple[int, V] | None = None
    for key, value in table:
        prefix = canonical_model(key)
        matches = wanted == prefix or wanted.startswith(prefix + "-")
        if matches and (best is None or len(prefix) > best[0]):
            best = (len(prefix), value)
    return None if best is None else best[1]


def family_tier(model: str) -> int | None:
    """Return the price tier of `model`'s family (haiku 0 ... fable/mythos 3), or None outside Claude's families."""
    for part in re.split(r"[-.@:/_]", model.lower()):
        tier = FAMILY_TIERS.get(part)
        if tier is not None:
            return tier
    return None


_OPENAI_NAME = re.compile(r"^(?:gpt-|chatgpt-|o\d|text-embedding-|davinci|babbage|computer-use-|codex-)")
_CLAUDE_NAME = re.compile(r"^(?:claude-|anthropic\.|(?:us|eu|apac|global|us-gov)\.anthropic\.|arn:)")


def provider_of(model: str) -> str | None:
    """Return whose model a name is ("anthropic", "openai"), or None for a name neither provider uses."""
    name = model.strip().lower()
    if _CLAUDE_NAME.match(name):
        return "anthropic"
    if _OPENAI_NAME.match(name):
        return "openai"
    return None


_OPENAI_SIZES = {"nano": 0, "mini": 1}


def openai_size_tier(model: str) -> int | None:
    """Return the price tier of an OpenAI model by its size: nano 0 < mini 1 < the full model 2; None when the
    name is not an OpenAI model's. Within a generation a nano is cheaper than a mini, a mini than the full
    model; across generations the dearest mini (o4-mini, $1.10/$4.40) is under the cheapest full model
    (gpt-4.1, $2/$8), and the dearest nano (gpt-4.1-nano, $0.10/$0.40) under the cheapest mini (gpt-4o-mini,
    $0.15/$0.60): genai-prices 0.2.3."""
    if provider_of(model) != "openai" or model.lower().startswith("text-embedding-"):
        return None
    for part in re.split(r"[-.@:/_]", model.lower()):
        tier = _OPENAI_SIZES.get(part)
        if tier is not None:
            return tier
    return 2
