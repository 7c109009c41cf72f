"""Price the SDK test suite's made-up model names, for the metered run of `run_sdk_suite.py`.

Loaded with `-p suite_prices` (the script puts this folder on PYTHONPATH) in the metered run only. It
implements the plugin's documented price hook, `pytest_costguard_prices`, rather than `llm_prices` lines: the
suite uses names such as `we:ird/model?x=1#frag ment` that an ini line cannot hold. The names come from the
file named by COSTGUARD_COMPAT_MODELS (one per line): the script writes there the names of the suite's sources
that genai-prices does not price, once per check (those it prices keep their real price), so that no pytest
process of the run pays for the look-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard import PriceOverride

# A flat, Sonnet-like price: the budget ($1000) is far above anything the mocked suite can reach.
_PRICE = PriceOverride(input=Decimal(3), output=Decimal(15))


def pytest_costguard_prices(config: pytest.Config) -> Mapping[str, PriceOverride]:
    """Return a price for each model name of the suite that genai-prices does not know."""
    del config
    listing = os.environ.get("COSTGUARD_COMPAT_MODELS")
    if not listing:
        return {}
    return {name: _PRICE for name in Path(listing).read_text(encoding="utf-8").splitlines() if name}
