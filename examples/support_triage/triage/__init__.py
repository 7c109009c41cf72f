"""Support triage for Tallybook's help desk: summaries, classification and drafts via Claude; translations and
tags via OpenAI."""

from __future__ import annotations

from .app import (
    CATEGORIES,
    DEFAULT_MODEL,
    PRIORITIES,
    REPLY_MODEL,
    TAG_MODEL,
    TRANSLATION_MODEL,
    BacklogNotDoneError,
    Classification,
    IncompleteReplyError,
    SupportTriage,
    Ticket,
    TriageError,
    parse_classifications,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_MODEL",
    "PRIORITIES",
    "REPLY_MODEL",
    "TAG_MODEL",
    "TRANSLATION_MODEL",
    "BacklogNotDoneError",
    "Classification",
    "IncompleteReplyError",
    "SupportTriage",
    "Ticket",
    "TriageError",
    "parse_classifications",
]
