from __future__ import annotations

from pathlib import Path

import pytest

FAKEAPI_SOURCE = (Path(__file__).parent / "fakeapi.py").read_text(encoding="utf-8")


@pytest.fixture
def fake_pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose inner suite can `from fakeapi import FakeAPI`."""
    pytester.makepyfile(fakeapi=FAKEAPI_SOURCE)
    pytester.syspathinsert()
    return pytester
