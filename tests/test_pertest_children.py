"""Naming the running test to child processes once per test, and the session again after the last test."""

from __future__ import annotations

import json

import pytest

pytest_plugins = "pytester"


def test_each_test_names_itself_to_its_children_and_the_session_follows_the_last(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import json, os

from pytest_costguard.metering.children import ENV

SEEN = []


def pytest_sessionfinish(session):
    SEEN.append(("sessionfinish", json.loads(os.environ[ENV])["test"]))
    with open("seen.json", "w") as out:
        json.dump(SEEN, out)
"""
    )
    pytester.makepyfile(
        test_a="""
import json, os

from conftest import SEEN
from pytest_costguard.metering.children import ENV


def test_one():
    SEEN.append(("test_one", json.loads(os.environ[ENV])["test"]))


def test_two():
    SEEN.append(("test_two", json.loads(os.environ[ENV])["test"]))
"""
    )
    result = pytester.runpytest_subprocess("--llm-budget=1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    seen = json.loads((pytester.path / "seen.json").read_text())
    assert seen == [
        ["test_one", "test_a.py::test_one"],
        ["test_two", "test_a.py::test_two"],
        ["sessionfinish", None],  # after the tests, what children spend is the session's
    ]
