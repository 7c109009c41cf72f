"""Price the SDK test suite's made-up model names, for the metered run of `run_sdk_suite.py`.

Loaded with `-p suite_prices` (the script puts this folder on PYTHONPATH) in the metered run only. It
implements the plugin's documented price hook, `pytest_costguard_prices`, rather than `llm_prices` lines: the
suite uses names such as `we:ird/model?x=1#frag ment` that an ini line cannot hold. The names come from the
file named by COSTGUARD_COMPAT_MODELS (one per line, written by the script from the suite's sources); those
genai-prices already prices keep their real price.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard import PriceOverride
from pytest_costguard.core.pricing import default_price_book

# A flat, Sonnet-like price: the budget ($1000) is far above anything the mocked suite can reach.
_PRICE = PriceOverride(input=Decimal(3), output=Decimal(15))


def pytest_costguard_prices(config: pytest.Config) -> Mapping[str, PriceOverride]:
    """Return a price for each model name of the suite that genai-prices does not know."""
    del config
    listing = os.environ.get("COSTGUARD_COMPAT_MODELS")
    if not listing:
        return {}
    book = default_price_book()
    names = [line for line in Path(listing).read_text(encoding="utf-8").splitlines() if line]
    return {name: _PRICE for name in names if not book.knows(name)}
