"""Parse and validate the plugin's settings from their raw text (CLI or ini), naming where each came from.

No pytest import: the plugin hands in raw strings and turns `SettingsError` into a usage error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from ..domain.money import MoneyError, format_usd, parse_percent, parse_usd

if TYPE_CHECKING:
    # Imported when a setting needs them: a run that sets no routing and no prices (most runs, and every idle
    # one) never loads the pricing and routing modules at start-up.
    from ..core.pricing import PriceBook, PriceOverride
    from ..core.routing import RoutePolicy

__all__ = ["Settings", "SettingsError", "parse_prices", "resolve_settings"]

DEFAULT_MAX_RECORDS = 100_000
"""Records kept by default: a suite of fewer calls (nearly all) lists every one; more would keep tens of MB."""

CacheMode = Literal["off", "auto"]
PreflightMode = Literal["auto", "always", "off"]


class SettingsError(ValueError):
    """A setting's value is not valid; the message names the setting and the value."""


_PRICE_KEYS = {"input", "output", "cache_write", "cache_write_1h", "cache_read", "web_search_per_1k"}


def parse_prices(lines: Sequence[str], *, source: str) -> dict[str, PriceOverride]:
    """Parse `model = input=3 output=15 [cache_write=3.75] [cache_write_1h=6] [cache_read=0.3]` lines.

    Prices are USD per million tokens (web searches per thousand).
    """
    from ..core.pricing import PriceOverride

    overrides: dict[str, PriceOverride] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        model, equals, rest = (part.strip() for part in line.partition("="))
        if not equals or not model or " " in model:
            raise SettingsError(f"{source} line {number}: {line!r} is not 'model = input=N output=N ...'")
        values: dict[str, Decimal] = {}
        for item in rest.split():
            key, eq, amount = item.partition("=")
            if not eq or key not in _PRICE_KEYS:
                raise SettingsError(
                    f"{source} line {number}: {item!r} is not one of "
                    f"{', '.join(sorted(k + '=N' for k in _PRICE_KEYS))}"
                )
            values[key] = parse_usd(amount, source=f"{source} line {number} {key}")
        if "input" not in values or "output" not in values:
            raise SettingsError(f"{source} line {number}: {model!r} needs both input= and output= prices")
        overrides[model] = PriceOverride(**values)
    return overrides


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the plugin was configured with, validated."""

    budget: Decimal | None = None
    """Hard cap for the session, USD."""
    budget_per_test: Decimal | None = None
    """Default hard cap for each test, USD."""
    route: RoutePolicy | None = None
    """Which model each request is sent to; None when no routing setting was given (routing off)."""
    cache: CacheMode = "off"
    """Prompt caching of recurring long system prompts."""
    reports: tuple[str, ...] = ()
    """Report paths (.json, .md, .html)."""
    prices: PriceBook | None = None
    """Price source with the user's overrides; None when none were given (genai-prices as it is)."""
    baseline: str | None = None
    """A JSON report to compare this run with."""
    baseline_fail_pct: Decimal | None = None
    """Fail when cost rises more than this percentage above the baseline."""
    baseline_floor: Decimal = Decimal("0.01")
    """Increases smaller than this many dollars are ignored."""
    ledger: str | None = None
    """An SQLite ledger file, or a redis:// URL: the session's budget is kept there (else in memory)."""
    ledger_key: str = "pytest-costguard"
    """The shared budget's name on a Redis ledger."""
    budget_window: int | None = None
    """Seconds after which a Redis ledger's budget starts again (UTC-aligned windows), or None."""
    history: str | None = None
    """A cost history file: one JSON line is appended per run (the HTML report shows the trend)."""
    free_endpoints: tuple[str, ...] = ()
    """API endpoint path patterns declared free: a POST to one is passed through unmetered."""
    record: str = "off"
    """Record and replay (`--llm-record`): off, none, once, new or all."""
    cassettes: str | None = None
    """Where cassettes are kept (`--llm-cassettes`); None: beside each test module."""
    record_ignore: tuple[str, ...] | None = None
    """Request body fields replay matching leaves out; None: the default (`replay.DEFAULT_IGNORED`)."""
    preflight: PreflightMode = "auto"
    """When to count a call's input exactly (`count_tokens`) before admitting it under a budget."""
    openai_max_output: tuple[tuple[str, int], ...] = ()
    """The user's most output tokens of OpenAI models (`llm_openai_max_output`), before the built-in table."""
    max_records: int = DEFAULT_MAX_RECORDS
    """Keep the records of at most this many calls (`--llm-max-records`); the reports' totals count them all."""

    @property
    def redis_url(self) -> str | None:
        """The Redis server of a shared budget, when `ledger` names one."""
        ledger = self.ledger
        return ledger if ledger is not None and ledger.lower().startswith(("redis://", "rediss://")) else None


Getter = Callable[[str], tuple[object, str]]
"""Return (raw value or None, source description) for a setting name such as "llm_budget"."""


def _raw(get: Getter, name: str) -> tuple[str | None, str]:
    value, source = get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, source
    if isinstance(value, list):
        return ("\n".join(str(v) for v in value) if value else None), source
    return str(value), source


def _given(get: Getter, name: str) -> tuple[str | None, str]:
    """The raw value of a money or percentage setting: None only when it was not given at all.

    An empty value given explicitly (`--llm-budget=`, what `--llm-budget=$UNSET` becomes; `llm_budget =` in the
    ini file) is kept, so parsing refuses it: read as "no budget", it would turn a cap off without a word.
    """
    value, source = get(name)
    if value is None:
        return None, source
    return str(value), source


def _usd(get: Getter, name: str) -> Decimal | None:
    raw, source = _given(get, name)
    return None if raw is None else parse_usd(raw, source=source)


def resolve_settings(get: Getter, *, extra_prices: Mapping[str, PriceOverride] | None = None) -> Settings:
    """Build `Settings` from raw values (CLI, else ini), validating each and naming its source on error.

    `extra_prices` (from `pytest_costguard_prices` hooks) are overrides that `llm_prices` lines win over.
    """
    try:
        return _resolve(get, extra_prices or {})
    except MoneyError as exc:
        raise SettingsError(str(exc)) from None


def _resolve(get: Getter, extra_prices: Mapping[str, PriceOverride]) -> Settings:
    budget = _usd(get, "llm_budget")
    per_test = _usd(get, "llm_budget_per_test")

    mode_raw, src = _raw(get, "llm_route")
    cheap_raw, cheap_src = _raw(get, "llm_cheap_model")
    cheap_openai_raw, cheap_openai_src = _raw(get, "llm_cheap_openai_model")
    map_raw, map_src = _raw(get, "llm_route_map")
    route = None
    if mode_raw is not None or cheap_raw is not None or map_raw is not None or cheap_openai_raw is not None:
        from ..core.routing import RoutePolicy, RoutingConfig, parse_route_map, parse_route_mode

        try:
            mode = parse_route_mode(mode_raw or "off", source=src)
            route_map = parse_route_map(map_raw or "", source=map_src)
            config = RoutingConfig()
            if cheap_raw:
                config = replace(config, cheap_model=cheap_raw.strip())
            if cheap_openai_raw:
                config = replace(config, cheap_openai_model=cheap_openai_raw.strip())
            route = RoutePolicy(mode=mode, route_map=route_map, config=config)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    cache_raw, src = _raw(get, "llm_cache")
    cache = (cache_raw or "off").strip().lower()
    if cache not in ("off", "auto"):
        raise SettingsError(f"{src}: {cache_raw!r} is not one of off, auto")

    prices_raw, prices_src = _raw(get, "llm_prices")
    prices = None
    if prices_raw is not None or route is not None or extra_prices:
        from ..core.pricing import PriceBook, UnknownModelPrice
        from ..domain.models import provider_of

        overrides = {**extra_prices, **parse_prices((prices_raw or "").splitlines(), source=prices_src)}
        prices = PriceBook(overrides=overrides)
        # Every model routing can send to must have a price, or the budget could not bound its calls.
        to_check: list[tuple[str, str, str]] = []
        if route is not None:
            if route.mode != "off":
                to_check.append((route.config.cheap_model, cheap_src, "anthropic"))
                to_check.append((route.config.cheap_openai_model, cheap_openai_src, "openai"))
            to_check += [(sent, map_src, provider_of(sent) or "anthropic") for sent in route.route_map.values()]
        for model, source, provider in to_check:
            try:
                prices.rates(model, provider=provider)
            except UnknownModelPrice as exc:
                raise SettingsError(f"{source}: {exc}") from None

    reports_raw, src = _raw(get, "llm_report")
    given, _ = get("llm_report")
    if isinstance(given, list) and any(not str(p).strip() for p in given):
        # `--llm-report=` (what `--llm-report=$UNSET` becomes): ignored, it would drop the report a gate reads.
        raise SettingsError(f"{src}: the path is empty; give a file ending in .json, .md or .html")
    reports = tuple(p.strip() for p in (reports_raw or "").splitlines() if p.strip())
    for path in reports:
        if not path.lower().endswith((".json", ".md", ".markdown", ".html", ".htm")):
            raise SettingsError(f"{src}: {path!r} must end in .json, .md or .html")

    baseline_raw, _ = _raw(get, "llm_baseline")
    fail_raw, src = _given(get, "llm_baseline_fail")
    fail_pct = None if fail_raw is None else parse_percent(fail_raw, source=src)
    floor = _usd(get, "llm_baseline_floor")
    ledger_raw, ledger_src = _raw(get, "llm_ledger")
    ledger = ledger_raw.strip() if ledger_raw else None
    key, window = _shared_budget(get, ledger, ledger_src)
    history_raw, _ = _raw(get, "llm_history")
    free_raw, free_src = _raw(get, "llm_free_endpoints")
    free_endpoints = _free_endpoints(free_raw, free_src)
    record, cassettes, record_ignore = _record_settings(get)
    preflight_raw, src = _raw(get, "llm_preflight")
    preflight = (preflight_raw or "auto").strip().lower()
    if preflight not in ("auto", "always", "off"):
        raise SettingsError(f"{src}: {preflight_raw!r} is not one of auto, always, off")
    max_output_raw, max_output_src = _raw(get, "llm_openai_max_output")
    max_output = parse_max_output((max_output_raw or "").splitlines(), source=max_output_src)
    max_records_raw, max_records_src = _given(get, "llm_max_records")
    max_records = DEFAULT_MAX_RECORDS
    if max_records_raw is not None:
        text = max_records_raw.strip().replace("_", "")
        if not text.isdigit() or not text.isascii():
            raise SettingsError(f"{max_records_src}: {max_records_raw!r} is not a whole number of calls (0 or more)")
        max_records = int(text)

    return Settings(
        budget=budget,
        budget_per_test=per_test,
        route=route,
        cache="auto" if cache == "auto" else "off",
        reports=reports,
        prices=prices,
        baseline=baseline_raw.strip() if baseline_raw else None,
        baseline_fail_pct=fail_pct,
        baseline_floor=Decimal("0.01") if floor is None else floor,
        ledger=ledger,
        ledger_key=key,
        budget_window=window,
        history=history_raw.strip() if history_raw else None,
        free_endpoints=free_endpoints,
        record=record,
        cassettes=cassettes,
        record_ignore=record_ignore,
        preflight="always" if preflight == "always" else "off" if preflight == "off" else "auto",
        openai_max_output=max_output,
        max_records=max_records,
    )


def _free_endpoints(raw: str | None, source: str) -> tuple[str, ...]:
    """Validate `llm_free_endpoints`: one endpoint path (or glob pattern) per line, such as /v1/sessions/*."""
    patterns = []
    for line in (raw or "").splitlines():
        pattern = line.split("#", 1)[0].strip()
        if not pattern:
            continue
        if not pattern.startswith("/") or any(c.isspace() for c in pattern) or "?" in pattern:
            raise SettingsError(f"{source}: {pattern!r} is not an endpoint path such as /v1/sessions/*/events")
        # Matched against the path as sent (`providers.anthropic.middleware.endpoint_path`): no trailing slash.
        patterns.append(pattern.rstrip("/") or "/")
    return tuple(patterns)


RECORD_MODES = ("off", "none", "once", "new", "all")
"""The `--llm-record` modes (`replay.MODES`, kept here so start-up does not import the replay package)."""


def parse_record_mode(raw: str, *, source: str) -> str:
    """Validate a record mode, naming where it came from."""
    mode = raw.strip().lower()
    if mode not in RECORD_MODES:
        raise SettingsError(f"{source}: {raw!r} is not one of {', '.join(RECORD_MODES)}")
    return mode


def _record_settings(get: Getter) -> tuple[str, str | None, tuple[str, ...] | None]:
    record_raw, record_src = _raw(get, "llm_record")
    record = "off" if record_raw is None else parse_record_mode(record_raw, source=record_src)
    cassettes_raw, _ = _raw(get, "llm_cassettes")
    ignore_raw, ignore_src = _raw(get, "llm_record_ignore")
    ignored = None
    if ignore_raw is not None:
        from ..replay.matching import parse_ignored

        try:
            ignored = parse_ignored(ignore_raw.splitlines(), source=ignore_src)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return record, cassettes_raw.strip() if cassettes_raw else None, ignored


def parse_max_output(lines: Sequence[str], *, source: str) -> tuple[tuple[str, int], ...]:
    """Parse `model = tokens` lines (`llm_openai_max_output`), naming `source` and the line in errors."""
    table: list[tuple[str, int]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        model, equals, tokens = (part.strip() for part in line.partition("="))
        if not equals or not model or " " in model or not tokens.isdigit() or int(tokens) <= 0:
            raise SettingsError(f"{source} line {number}: {line!r} is not 'model = tokens' (a whole number > 0)")
        table.append((model, int(tokens)))
    return tuple(table)


def _shared_budget(get: Getter, ledger: str | None, ledger_src: str) -> tuple[str, int | None]:
    """Validate a Redis ledger's URL, key and window; return the key and the window in seconds."""
    redis = ledger is not None and ledger.lower().startswith(("redis://", "rediss://"))
    if redis:
        from ..metering.redis_ledger import check_redis_url, redact_url

        assert ledger is not None
        problem = check_redis_url(ledger)
        if problem is not None:
            raise SettingsError(f"{ledger_src}: {redact_url(ledger)!r} {problem}")
    key_raw, key_src = _raw(get, "llm_ledger_key")
    window_raw, window_src = _raw(get, "llm_budget_window")
    for raw, src in ((key_raw, key_src), (window_raw, window_src)):
        if raw is not None and not redis:
            raise SettingsError(f"{src}: needs a shared ledger (--llm-ledger=redis://host:port/db)")
    key = (key_raw or "pytest-costguard").strip()
    if not key or any(c.isspace() or c in "{}" for c in key):
        raise SettingsError(f"{key_src}: {key_raw!r} is not a budget name (no spaces, no braces)")
    window = None
    if window_raw is not None:
        from ..metering.redis_ledger import parse_window

        try:
            window = parse_window(window_raw)
        except ValueError as exc:
            raise SettingsError(f"{window_src}: {exc}") from None
    return key, window


def describe(settings: Settings) -> str:
    """Return the one-line summary shown in pytest's report header."""
    parts = [f"budget {format_usd(settings.budget)}" if settings.budget is not None else "no budget"]
    if settings.budget_per_test is not None:
        parts.append(f"per test {format_usd(settings.budget_per_test)}")
    route = settings.route
    if route is None:
        parts.append("route off")
    elif route.mode == "cheap":
        parts.append(f"route cheap -> {route.config.cheap_model}")
    else:
        parts.append(f"route {route.mode}")
    if route is not None and route.route_map:
        parts.append("route map " + ", ".join(f"{k} -> {v}" for k, v in route.route_map.items()))
    parts.append(f"cache {settings.cache}")
    if settings.record != "off":
        parts.append(f"record {settings.record}")
    if settings.redis_url is not None:
        from ..metering.redis_ledger import redact_url, window_label

        window = f", window {window_label(settings.budget_window)}" if settings.budget_window else ""
        parts.append(f"shared ledger {redact_url(settings.redis_url)} key {settings.ledger_key}{window}")
    return "costguard: " + ", ".join(parts)


