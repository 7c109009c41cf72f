"""Run the triage suite offline against the costguard emulator, unless the real API is asked for.

Offline (the default): the plugin's session-scoped `llm_emulator` serves the Messages API on loopback and
every client the app builds is pointed at it through the environment, as the SDK reads it. Costs are
simulated at real prices, so budgets and reports behave as they will against the API.

Live: `COSTGUARD_LIVE=1` with a real `ANTHROPIC_API_KEY` (and `OPENAI_API_KEY` for the OpenAI part).
Outage rehearsals are skipped (they need the emulator's fault injection); everything else runs against the
API and is billed.

Replay only (`--llm-record=none`, the CI recipe of docs/replay.md): no emulator is served and the clients
point at a loopback port nothing listens on, so every call is answered from the cassettes or fails loudly;
the outage rehearsals replay the failures they recorded. Anthropic and OpenAI calls are taped alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from triage import SupportTriage, Ticket

LIVE = os.environ.get("COSTGUARD_LIVE") == "1" and bool(os.environ.get("ANTHROPIC_API_KEY"))
NOWHERE = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a call that reached the network would fail to connect."""


def _replay_only(config: pytest.Config) -> bool:
    return (config.getoption("llm_record", None) or config.getini("llm_record") or "off") == "none"


def pytest_report_header() -> str:
    if LIVE:
        return "support_triage: live Anthropic API (COSTGUARD_LIVE=1): calls are billed"
    return "support_triage: offline, costguard emulator (set COSTGUARD_LIVE=1 for the real API)"


@pytest.fixture(scope="session", autouse=True)
def anthropic_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Point every Anthropic client the app builds at the emulator, unless running live."""
    if LIVE:
        yield "live"
        return
    replay_only = _replay_only(request.config)
    base_url = NOWHERE if replay_only else request.getfixturevalue("llm_emulator").base_url
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_BASE_URL", base_url)
        mp.setenv("ANTHROPIC_API_KEY", "offline-dummy-key")
        mp.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        # The emulator speaks OpenAI's Chat Completions and Responses too, under /v1.
        mp.setenv("OPENAI_BASE_URL", f"{base_url}/v1")
        mp.setenv("OPENAI_API_KEY", "offline-dummy-key")
        yield "replay" if replay_only else "emulator"


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The emulator itself (fault injection, deterministic replies): skipped live; leftover faults dropped."""
    if LIVE:
        pytest.skip("needs the costguard emulator, not the live API (unset COSTGUARD_LIVE)")
    if _replay_only(request.config):
        from pytest_costguard.emulator import Emulator

        yield Emulator()  # never started: the faults it is asked for are in the recordings already
        return
    llm_emulator = request.getfixturevalue("llm_emulator")
    yield llm_emulator
    llm_emulator.clear_faults()


@pytest.fixture
def triage() -> Iterator[SupportTriage]:
    """The app as production builds it: its own clients, configured from the environment."""
    with SupportTriage() as app:
        yield app


@pytest.fixture
def refund_ticket() -> Ticket:
    return Ticket(
        id="T-1042",
        subject="Charged twice for March",
        body=(
            "Hi, I cancelled my Team plan on 28 February but I was charged 19.00 USD on 1 March and again on "
            "3 March (invoice TB-88213 and TB-88390). Can you refund both? I only noticed because my card "
            "statement showed two Tallybook lines. Thanks, Maria"
        ),
        customer="Maria Okafor",
        plan="Team",
    )


@pytest.fixture
def inbox() -> list[Ticket]:
    """A morning's worth of tickets, one per kind of problem."""
    return [
        Ticket("T-2001", "Can't log in", "Lost my phone with the authenticator app. How do I get back in? "
               "I have payroll to run tomorrow.", "Dev Patel", "Business"),
        Ticket("T-2002", "Where is my payout?", "Payout of 1,240.50 GBP from last Tuesday still not in my "
               "Barclays account. Schedule says 3 days.", "Hannah Reid", "Team"),
        Ticket("T-2003", "Invoice PDF blank", "Every invoice PDF I download since this morning is a blank "
               "page. Chrome 131 on Windows. Error in console: 'font load failed'.", "Luis Ortega", "Starter"),
        Ticket("T-2004", "Please add Xero export", "Love the product. Would be great to export straight to "
               "Xero instead of CSV.", "Aroha Ngata", "Team"),
        Ticket("T-2005", "Delete my data", "I'm closing my business. Please delete my account and all my "
               "data. Do I need to keep anything for tax?", "Sam Whitfield", "Starter"),
        Ticket("T-2006", "Is Tallybook down?", "App won't load for me or my bookkeeper, both get 502 since "
               "9:10. Status page says nothing.", "Priya Nair", "Enterprise"),
    ]
