"""Inert until asked: installed, the plugin changes nothing in a run that does not ask for it."""

from __future__ import annotations

import pytest

# A probe an inner test calls: is the SDK as anthropic ships it, and does a client built now carry middleware?
PROBE = """
import sys
import anthropic
import anthropic._base_client as base
import openai
import openai._base_client as openai_base

def probe():
    hooks = [f for f in sys.meta_path if type(f).__module__.startswith("pytest_costguard.providers")]
    openai_sends = (openai_base.SyncAPIClient._send_request, openai_base.AsyncAPIClient._send_request)
    sync_init, async_init = base.SyncAPIClient.__init__, base.AsyncAPIClient.__init__
    untouched = (
        sync_init.__qualname__ == "SyncAPIClient.__init__"
        and async_init.__qualname__ == "AsyncAPIClient.__init__"
        and not hasattr(sync_init, "__wrapped__")
    )
    client = anthropic.Anthropic(api_key="sk-ant-test")
    return {
        "hooks": len(hooks),
        "untouched": untouched,
        "middleware": [type(m).__name__ for m in client._middleware],
        "openai metered": [hasattr(send, "__wrapped__") for send in openai_sends],
    }

# One import hook per provider when on: Anthropic's constructors, OpenAI's per-attempt send.
IDLE = {"hooks": 0, "untouched": True, "middleware": [], "openai metered": [False, False]}
ON = {"hooks": 2, "untouched": False, "middleware": ["CostGuardMiddleware"], "openai metered": [True, True]}
"""
# In-process inner runs are enough to see a trigger work: each run restores the SDK when it ends (tested below),
# and this outer run asks for nothing. The idle run is a subprocess, so nothing this process did can hide a patch.


def test_an_idle_run_leaves_the_sdk_untouched_and_prints_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(probe=PROBE)
    pytester.makepyfile(
        test_idle="""
from probe import IDLE, probe

def test_at_collection_and_in_a_test():
    assert probe() == IDLE

def test_loaded():
    import sys
    with open("loaded.txt", "w") as fh:
        fh.write("\\n".join(sys.modules))
"""
    )
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-p", "no:asyncio")
    result.assert_outcomes(passed=2)
    loaded = (pytester.path / "loaded.txt").read_text()
    assert "pytest_costguard.providers.anthropic.middleware" not in loaded
    assert "pytest_costguard.providers.openai.meter" not in loaded
    assert "costguard:" not in result.stdout.str()  # no report header
    assert "LLM cost" not in result.stdout.str()


TRIGGERS = {
    "--llm-meter": (["--llm-meter"], "", ""),
    "--llm-budget": (["--llm-budget=5"], "", ""),
    "--llm-report": (["--llm-report=r.json"], "", ""),
    "ini llm_meter": ([], "llm_meter = true", ""),
    "ini llm_budget_per_test": ([], "llm_budget_per_test = 1", ""),
    "ini llm_prices": ([], "llm_prices =\n    claude-x-1 = input=1 output=2", ""),
    "llm_budget marker": ([], "", "@pytest.mark.llm_budget(1)"),
    "llm_model marker on the module": ([], "", "pytestmark = pytest.mark.llm_model('claude-haiku-4-5')"),
}


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_each_option_ini_setting_or_marker_turns_metering_on(pytester: pytest.Pytester, trigger: str) -> None:
    args, ini, marker = TRIGGERS[trigger]
    pytester.makepyfile(probe=PROBE)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(
        test_on=f"""
import pytest
from probe import ON, probe

{marker}
def test_on():
    assert probe() == ON
"""
    )
    pytester.syspathinsert()
    pytester.runpytest("-p", "no:asyncio", *args).assert_outcomes(passed=1)


@pytest.mark.parametrize("fixture", ["llm_cost", "llm_budget", "llm_client", "llm_async_client", "llm_pipeline"])
def test_using_a_costguard_fixture_turns_metering_on(pytester: pytest.Pytester, fixture: str) -> None:
    pytester.makepyfile(probe=PROBE)
    pytester.makepyfile(
        test_on=f"""
from probe import ON, probe

def test_on({fixture}):
    assert probe() == ON
"""
    )
    pytester.syspathinsert()
    pytester.runpytest("-p", "no:asyncio").assert_outcomes(passed=1)


def test_a_fixture_requested_dynamically_turns_metering_on_from_then(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(probe=PROBE)
    pytester.makepyfile(
        test_on="""
from probe import IDLE, ON, probe

def test_on(request):
    assert probe() == IDLE
    request.getfixturevalue("llm_cost")
    assert probe() == ON
"""
    )
    pytester.syspathinsert()
    pytester.runpytest("-p", "no:asyncio").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "carried"),
    [
        # Built before the SDK was patched: metered through a copy, the client itself left as it was built.
        pytest.param([], [], id="marker only: the client built at import is metered once the marker is seen"),
        # Built with the middleware, which `client.middleware` leaves out (docs/compat.md): the list is the user's.
        pytest.param(["--llm-meter"], [], id="--llm-meter: built with the middleware"),
    ],
)
def test_clients_built_before_a_marker_is_collected_are_metered_too(
    fake_pytester: pytest.Pytester, args: list[str], carried: list[str]
) -> None:
    fake_pytester.makepyfile(
        app="""
from fakeapi import FakeAPI
API = FakeAPI()
CLIENT = API.client()  # built when the test module is imported, before its markers are seen

def ask(client):
    client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
""",
        test_suite=f"""
import pytest
from app import API, CLIENT, ask

@pytest.mark.llm_budget(1)
def test_marked(llm_cost):
    ask(CLIENT)
    ask(API.client())
    assert len(API.billed) == 2
    assert llm_cost.calls == 2
    assert [type(m).__name__ for m in CLIENT.middleware] == {carried}
""",
    )
    fake_pytester.runpytest(*args).assert_outcomes(passed=1)


def test_an_in_process_run_that_metered_restores_the_sdk_after_it(pytester: pytest.Pytester) -> None:
    import anthropic._base_client as base

    from pytest_costguard.providers.anthropic import patch

    original = base.SyncAPIClient.__dict__["__init__"], base.AsyncAPIClient.__dict__["__init__"]
    assert not patch.is_patched()  # this outer run asks for nothing
    pytester.makepyfile(
        """
import anthropic._base_client as base

def test_patched():
    assert getattr(base.SyncAPIClient.__init__, "_costguard_patched", False)
"""
    )
    pytester.runpytest("--llm-meter", "-p", "no:asyncio").assert_outcomes(passed=1)
    assert not patch.is_patched()
    assert (base.SyncAPIClient.__dict__["__init__"], base.AsyncAPIClient.__dict__["__init__"]) == original


def test_restore_puts_the_constructors_back_and_removes_the_hook() -> None:
    import sys

    import anthropic._base_client as base

    from pytest_costguard.providers.anthropic import patch

    original = base.SyncAPIClient.__dict__["__init__"]
    patch.prepare()
    try:
        assert base.SyncAPIClient.__init__ is not original
        assert any(type(f).__name__ == "_AnthropicImportHook" for f in sys.meta_path)
    finally:
        patch.restore()
    assert base.SyncAPIClient.__dict__["__init__"] is original
    assert not any(type(f).__name__ == "_AnthropicImportHook" for f in sys.meta_path)
    assert not patch.is_patched()


def test_nested_installs_restore_only_when_the_last_one_leaves() -> None:
    from pytest_costguard.metering.guard import CostGuard
    from pytest_costguard.providers.anthropic import patch

    outer, inner = CostGuard(), CostGuard()
    patch.install(outer)
    try:
        patch.install(inner)
        patch.uninstall(inner)
        assert patch.is_patched() and patch.is_installed()
    finally:
        patch.uninstall(outer)
    assert not patch.is_patched()
