"""The triage service: summaries, classification and drafts through Anthropic's Messages API; translations
and tags through OpenAI's Chat Completions and Responses APIs.

The service builds its own SDK clients, as production code does: `anthropic.Anthropic()` reads
ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment, `openai.OpenAI()` OPENAI_API_KEY and
OPENAI_BASE_URL. Nothing here knows about tests or budgets.

Every request starts with the same long support policy as its first system block, marked for prompt
caching: the first call writes it to the cache (1.25x the input price), later calls read it (0.1x).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import TracebackType
from typing import Any

import anthropic
import openai

DEFAULT_MODEL = "claude-sonnet-4-6"
"""Summaries and classification: a mid-tier model is plenty."""
REPLY_MODEL = "claude-opus-4-7"
"""Customer-facing drafts: the strongest model, since a person reads every word."""

TRANSLATION_MODEL = "gpt-4o-mini"
"""Translating a finished draft: a small OpenAI model does it well."""
TAG_MODEL = "gpt-5-mini"
"""Tagging a ticket for the help desk's search (OpenAI's Responses API)."""

CATEGORIES = ("outage", "account_access", "data_privacy", "billing", "bug", "feature_request", "other")
PRIORITIES = ("P1", "P2", "P3", "P4")

_TASKS = {
    "summarize": "Task: summarise the ticket below for a colleague, following section 11.",
    "classify": "Task: classify every ticket below, following sections 3, 4 and 12. Answer with the JSON "
    "array only.",
    "draft": "Task: draft the reply to the customer who wrote the ticket below, following section 13.",
}
# Output caps: a summary is 2-4 sentences, a draft under 180 words, a classification ~25 tokens a ticket.
_SUMMARY_TOKENS = 300
_DRAFT_TOKENS = 800
_CLASSIFY_TOKENS_PER_TICKET = 40
_TRANSLATION_TOKENS = 1_000
_TAG_TOKENS = 200


class TriageError(Exception):
    """The API could not give a usable answer (after the SDK's own retries)."""


class IncompleteReplyError(TriageError):
    """A streamed draft ended before the model finished it: never send half a reply."""


class BacklogNotDoneError(TriageError):
    """The overnight batch was still running when the caller stopped waiting (it keeps running at the API)."""


@dataclass(frozen=True)
class Ticket:
    """A support ticket as it arrives from the help desk."""

    id: str
    """The help desk's ticket id, e.g. "T-1042"."""
    subject: str
    """The email subject or chat title."""
    body: str
    """What the customer wrote."""
    customer: str = ""
    """The customer's name, if known."""
    plan: str = "Starter"
    """The customer's Tallybook plan."""

    def as_prompt(self) -> str:
        """Render the ticket the way the model sees it: as data, between tags."""
        who = f"{self.customer} ({self.plan} plan)" if self.customer else f"unknown ({self.plan} plan)"
        return (
            f'<ticket id="{self.id}">\nFrom: {who}\nSubject: {self.subject}\n\n{self.body.strip()}\n</ticket>'
        )


@dataclass(frozen=True)
class Classification:
    """Where a ticket goes in the queue."""

    ticket_id: str
    category: str
    priority: str
    needs_review: bool = False
    """The model's answer for this ticket was missing or unusable: a person must triage it."""


@cache
def support_policy() -> str:
    """Return the support policy every request carries as its (cached) system prompt."""
    return resources.files(__package__).joinpath("policy.md").read_text(encoding="utf-8")


def system_prompt(task: str, *, cache_policy: bool = True) -> list[dict[str, Any]]:
    """Return the system blocks for a task: the shared policy (the cache breakpoint) and the task line."""
    policy: dict[str, Any] = {"type": "text", "text": support_policy()}
    if cache_policy:
        policy["cache_control"] = {"type": "ephemeral"}
    return [policy, {"type": "text", "text": _TASKS[task]}]


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text").strip()


def parse_classifications(text: str, tickets: Sequence[Ticket]) -> list[Classification]:
    """Read the model's JSON array; any ticket it misses or garbles is flagged for a person to triage."""
    found: dict[str, Classification] = {}
    start, end = text.find("["), text.rfind("]")
    items: Any = None
    if start != -1 and end > start:
        try:
            items = json.loads(text[start : end + 1])
        except ValueError:
            items = None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        ticket_id, category, priority = item.get("id"), item.get("category"), item.get("priority")
        if isinstance(ticket_id, str) and category in CATEGORIES and priority in PRIORITIES:
            found.setdefault(ticket_id, Classification(ticket_id, category, priority))
    return [found.get(t.id) or Classification(t.id, "other", "P3", needs_review=True) for t in tickets]


class SupportTriage:
    """Summarise, classify and draft replies to support tickets."""

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        reply_model: str = REPLY_MODEL,
        timeout: float = 60.0,
        max_retries: int = 2,
        cache_policy: bool = True,
    ) -> None:
        self.model = model
        self.reply_model = reply_model
        self.timeout = timeout
        self.max_retries = max_retries
        self.cache_policy = cache_policy
        # The SDK retries 429, 5xx, overloads and dropped connections itself (max_retries times).
        self._client = anthropic.Anthropic(timeout=timeout, max_retries=max_retries)
        self._openai: openai.OpenAI | None = None

    @property
    def openai_client(self) -> openai.OpenAI:
        """The OpenAI client, built on first use (a deployment without OpenAI features needs no key)."""
        if self._openai is None:
            self._openai = openai.OpenAI(timeout=self.timeout, max_retries=self.max_retries)
        return self._openai

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        if self._openai is not None:
            self._openai.close()

    def translate(self, text: str, language: str) -> str:
        """Translate a finished reply into the customer's language (OpenAI Chat Completions, streamed)."""
        try:
            stream = self.openai_client.chat.completions.create(
                model=TRANSLATION_MODEL,
                max_completion_tokens=_TRANSLATION_TOKENS,
                stream=True,
                stream_options={"include_usage": True},
                messages=[
                    {
                        "role": "system",
                        "content": f"Translate the support reply into {language}. Keep names, "
                        "amounts and invoice numbers exactly as written. Answer with the translation only.",
                    },
                    {"role": "user", "content": text},
                ],
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
        except openai.APIError as exc:
            raise TriageError(f"could not translate the reply: {exc}") from exc

    def tags(self, ticket: Ticket) -> list[str]:
        """Suggest search tags for a ticket (OpenAI Responses): a few lowercase words."""
        try:
            response = self.openai_client.responses.create(
                model=TAG_MODEL,
                max_output_tokens=_TAG_TOKENS,
                instructions="Suggest up to five lowercase search tags for this support ticket, comma-separated.",
                input=ticket.as_prompt(),
            )
        except openai.APIError as exc:
            raise TriageError(f"could not tag {ticket.id}: {exc}") from exc
        return [tag.strip(" .").lower() for tag in response.output_text.split(",") if tag.strip(" .")][:5]

    def __enter__(self) -> SupportTriage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, task: str, content: str, *, model: str, max_tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "max_tokens": max_tokens,
            "system": system_prompt(task, cache_policy=self.cache_policy),
            "messages": [{"role": "user", "content": content}],
        }

    # -- features --------------------------------------------------------------------------------------------
    def summarize(self, ticket: Ticket) -> str:
        """Summarise one ticket for the next agent."""
        request = self._request("summarize", ticket.as_prompt(), model=self.model, max_tokens=_SUMMARY_TOKENS)
        try:
            message = self._client.messages.create(**request)
        except (anthropic.APIError, ValueError) as exc:  # ValueError: a reply body that is not JSON
            raise TriageError(f"could not summarise {ticket.id}: {exc}") from exc
        summary = _text(message)
        if not summary:
            raise TriageError(f"could not summarise {ticket.id}: the model returned no text")
        return summary

    def classify(self, tickets: Sequence[Ticket]) -> list[Classification]:
        """Classify a batch of tickets in one call; the result follows the order of `tickets`."""
        if not tickets:
            return []
        listing = "\n\n".join(t.as_prompt() for t in tickets)
        max_tokens = 100 + _CLASSIFY_TOKENS_PER_TICKET * len(tickets)
        request = self._request("classify", listing, model=self.model, max_tokens=max_tokens)
        try:
            message = self._client.messages.create(**request)
        except (anthropic.APIError, ValueError) as exc:
            raise TriageError(f"could not classify {len(tickets)} tickets: {exc}") from exc
        return parse_classifications(_text(message), tickets)

    def draft_reply(self, ticket: Ticket) -> Iterator[str]:
        """Stream a draft reply to the customer, piece by piece, as the model writes it.

        Raises `IncompleteReplyError` at the end when the stream was cut before the model finished.
        """
        request = self._request("draft", ticket.as_prompt(), model=self.reply_model, max_tokens=_DRAFT_TOKENS)
        try:
            with self._client.messages.stream(**request) as stream:
                yield from stream.text_stream
                final = stream.get_final_message()
        except (anthropic.APIError, ValueError) as exc:
            raise TriageError(f"could not draft a reply to {ticket.id}: {exc}") from exc
        if final.stop_reason is None:
            raise IncompleteReplyError(f"the draft reply to {ticket.id} was cut off; do not send it")

    async def summarize_all(self, tickets: Sequence[Ticket], *, concurrency: int = 4) -> list[str]:
        """Summarise many tickets concurrently (at most `concurrency` requests in flight), in order."""
        limit = asyncio.Semaphore(concurrency)
        async with anthropic.AsyncAnthropic(timeout=self.timeout, max_retries=self.max_retries) as client:

            async def one(ticket: Ticket) -> str:
                request = self._request(
                    "summarize", ticket.as_prompt(), model=self.model, max_tokens=_SUMMARY_TOKENS
                )
                async with limit:
                    try:
                        message = await client.messages.create(**request)
                    except (anthropic.APIError, ValueError) as exc:
                        raise TriageError(f"could not summarise {ticket.id}: {exc}") from exc
                return _text(message)

            return list(await asyncio.gather(*(one(t) for t in tickets)))

    def summarize_backlog(
        self, tickets: Sequence[Ticket], *, poll_interval: float = 60.0, timeout: float = 24 * 3600.0
    ) -> dict[str, str | None]:
        """Summarise a backlog overnight through the Message Batches API (half the price, answered within 24 h).

        One request per ticket is submitted with `messages.batches.create`; the batch is polled with
        `retrieve` every `poll_interval` seconds until it ends, then its `results` are read. Returns each
        ticket's summary by id, None for a ticket whose request did not succeed (errored, expired or cancelled:
        submit it again tomorrow). Raises `BacklogNotDoneError` if the batch has not ended after `timeout`.
        """
        if not tickets:
            return {}
        requests = [
            {
                "custom_id": ticket.id,
                "params": self._request(
                    "summarize", ticket.as_prompt(), model=self.model, max_tokens=_SUMMARY_TOKENS
                ),
            }
            for ticket in tickets
        ]
        batches = self._client.messages.batches
        try:
            batch = batches.create(requests=requests)  # type: ignore[arg-type]
            deadline = time.monotonic() + timeout
            while batch.processing_status != "ended":
                if time.monotonic() >= deadline:
                    raise BacklogNotDoneError(f"batch {batch.id} of {len(tickets)} tickets has not ended yet")
                time.sleep(poll_interval)
                batch = batches.retrieve(batch.id)
            summaries: dict[str, str | None] = dict.fromkeys((t.id for t in tickets), None)
            for line in batches.results(batch.id):
                if line.result.type == "succeeded" and line.custom_id in summaries:
                    summaries[line.custom_id] = _text(line.result.message) or None
        except (anthropic.APIError, ValueError) as exc:
            raise TriageError(f"could not summarise a backlog of {len(tickets)} tickets: {exc}") from exc
        return summaries
