"""Hooks other plugins and conftests implement to change what pytest-costguard reports and charges.

Register nothing: pytest finds `pytest_costguard_*` functions in any conftest.py or plugin. Example:

    # conftest.py
    def pytest_costguard_report_labels(config):
        return {"pipeline": "nightly"}

    def pytest_costguard_prices(config):
        from pytest_costguard import PriceOverride
        return {"my-gateway-model": PriceOverride(input=3, output=15)}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..core.pricing import PriceOverride

hookspec = pytest.hookspec


@hookspec
def pytest_costguard_report_labels(config: pytest.Config) -> Mapping[str, Any] | None:
    """Return top-level fields for the cost report (e.g. `{"backend": "emulator"}`); called once, at the end.

    The fields of every implementation are merged; `backend == "emulator"` labels the report "simulated costs".
    """


@hookspec
def pytest_costguard_report(config: pytest.Config, report: dict[str, Any]) -> None:
    """Change or extend the finished report (a JSON-ready dict) before it is written and shown."""


@hookspec
def pytest_costguard_prices(config: pytest.Config) -> Mapping[str, PriceOverride] | None:
    """Return price overrides (model -> `PriceOverride`), merged under the `llm_prices` ini setting, which wins."""
