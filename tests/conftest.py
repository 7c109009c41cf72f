from __future__ import annotations

from pathlib import Path

import pytest

FAKEAPI_SOURCE = (Path(__file__).parent / "fakeapi.py").read_text(encoding="utf-8")


@pytest.fixture
def fake_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose inner suite can `from fakeapi import FakeAPI`."""
    # Inner suites need no async plugin, and pytest-asyncio warns about its unset loop scope in them.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio")
    pytester.makepyfile(fakeapi=FAKEAPI_SOURCE)
    pytester.syspathinsert()
    return pytester
