"""The plugin's command-line options and their ini twins, and where each value came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["OPTIONS", "add_options", "asked_for", "option_getter", "user_path"]

# (name, CLI flag or None, metavar, help, ini type, default)
OPTIONS: tuple[tuple[str, str | None, str, str, str, Any], ...] = (
    ("llm_budget", "--llm-budget", "USD", "hard cap in USD on what LLM calls may spend in this session", "string",
     None),
    ("llm_budget_per_test", "--llm-budget-per-test", "USD", "default hard cap in USD for each test", "string", None),
    ("llm_route", "--llm-route", "POLICY", "model routing: off (default), cheap (all to llm_cheap_model), auto",
     "string", None),
    ("llm_cheap_model", "--llm-cheap-model", "MODEL",
     "model that cheap/auto routing sends to (default claude-haiku-4-5)", "string", None),
    ("llm_route_map", None, "", "explicit routing, one 'requested = sent' per line", "linelist", []),
    ("llm_cache", "--llm-cache", "MODE", "prompt caching of recurring long system prompts: off (default), auto",
     "string", None),
    ("llm_report", "--llm-report", "PATH", "write the cost report to PATH (.json, .md or .html); repeatable",
     "linelist", []),
    ("llm_prices", None, "", "price overrides, 'model = input=N output=N [cache_write=N cache_read=N]' per line, "
     "USD per million tokens", "linelist", []),
    ("llm_baseline", "--llm-baseline", "PATH", "compare this run's costs with an earlier JSON report", "string",
     None),
    ("llm_baseline_fail", "--llm-baseline-fail", "PCT",
     "fail when cost rises more than PCT percent above the baseline", "string", None),
    ("llm_baseline_floor", "--llm-baseline-floor", "USD",
     "ignore baseline increases below this many USD (default 0.01)", "string", None),
    ("llm_ledger", "--llm-ledger", "PATH|URL", "keep the session budget in this SQLite file, every settled call on "
     "disk at once (read it with `costguard report PATH`), or share it with every run giving the same "
     "redis://[user:password@]host:port/db (or rediss://) and --llm-ledger-key", "string", None),
    ("llm_ledger_key", "--llm-ledger-key", "NAME", "the name of the budget shared on a redis:// --llm-ledger "
     "(default pytest-costguard)", "string", None),
    ("llm_budget_window", "--llm-budget-window", "DURATION", "with a redis:// --llm-ledger, start the shared "
     "budget again at each UTC-aligned window: 1h, 1d, 7d (weeks from Monday)", "string", None),
    ("llm_history", "--llm-history", "PATH", "append this run's costs to a history file (one JSON line per run); "
     "the HTML report shows the trend", "string", None),
    ("llm_meter", "--llm-meter", "", "meter and report LLM calls even when no other costguard setting, marker or "
     "fixture asks for it", "bool", False),
    ("llm_free_endpoints", "--llm-free-endpoint", "PATH", "an API endpoint that never bills, passed unmetered "
     "(a POST to an endpoint not known to be free is refused under a budget); glob patterns such as "
     "/v1/sessions/*; repeatable, one per line in the ini", "linelist", []),
    ("llm_record", "--llm-record", "MODE", "record and replay LLM calls in cassettes: off (default), none (replay "
     "only: a call not recorded fails its test, nothing is sent; for CI), once, new, all", "string", None),
    ("llm_cassettes", "--llm-cassettes", "DIR", "keep cassettes under DIR (default: cassettes/<module>/ beside each "
     "test module)", "string", None),
    ("llm_record_ignore", None, "", "request body fields replay matching leaves out, one dotted path a line "
     "(default metadata.user_id)", "linelist", []),
    ("llm_preflight", "--llm-preflight", "MODE", "count a call's input exactly before admitting it under a budget "
     "(count_tokens: free, rate-limited): auto (default: a bound that does not fit, or one with media, documents "
     "or tools that does not fit 10 times over), "
     "always, off", "string", None),
    ("llm_cheap_openai_model", "--llm-cheap-openai-model", "MODEL",
     "model that cheap/auto routing sends OpenAI calls to (default gpt-4.1-nano; never another provider's)",
     "string", None),
    ("llm_openai_max_output", None, "", "most output tokens of OpenAI models, 'model = tokens' per line: bounds "
     "a request that sets no output limit (adds to the built-in table)", "linelist", []),
    ("llm_max_records", "--llm-max-records", "N", "keep the records of at most N calls in memory and list them in "
     "the reports (default 100000; 0 lists none); every total still counts all calls", "string", None),
)


def add_options(parser: pytest.Parser) -> None:
    """Register every option in one group, each CLI flag with its ini twin and one help text for both."""
    group = parser.getgroup("costguard", "LLM cost budget and reports (pytest-costguard)")
    for name, flag, metavar, help_text, ini_type, default in OPTIONS:
        if flag is not None and ini_type == "bool":
            group.addoption(flag, dest=name, action="store_true", default=None, help=f"{help_text} (ini: {name})")
        elif flag is not None:
            group.addoption(
                flag,
                dest=name,
                action="append" if ini_type == "linelist" else "store",
                default=None,
                metavar=metavar,
                help=f"{help_text} (ini: {name})",
            )
        parser.addini(name, help_text, type=ini_type, default=default)  # type: ignore[arg-type]


def option_getter(config: pytest.Config) -> Any:
    """Return `get(name) -> (raw value, source)`: the command line wins, then the ini file."""
    flags = {name: flag for name, flag, *_ in OPTIONS}

    def get(name: str) -> tuple[object, str]:
        flag = flags[name]
        if flag is not None:
            value = config.getoption(name, None)
            if value not in (None, []):
                return value, flag
        inifile = config.inipath.name if config.inipath else "the ini file"
        return config.getini(name), f"{name} in {inifile}"

    return get


def asked_for(config: pytest.Config) -> str | None:
    """Name the first option or ini setting given a value other than its default, or None when none was.

    Works from `pytest_load_initial_conftests` on (the command line is parsed and the ini file read by then).
    """
    namespace = getattr(config, "known_args_namespace", None) or config.option
    for name, flag, _metavar, _help, ini_type, default in OPTIONS:
        if flag is not None and getattr(namespace, name, None) not in (None, []):
            return flag
        value = config.getini(name)
        if value != default and value not in ("", [], None) and not (ini_type == "bool" and not value):
            inifile = config.inipath.name if config.inipath else "the ini file"
            return f"{name} in {inifile}"
    return None


def user_path(config: pytest.Config, name: str, path: str) -> Path:
    """Resolve a path setting as pytest does: from the command line, relative to where pytest was started;
    from the ini file, relative to that file's folder."""
    if config.getoption(name, None) not in (None, []):
        return config.invocation_params.dir / path
    return (config.inipath.parent if config.inipath else config.rootpath) / path
