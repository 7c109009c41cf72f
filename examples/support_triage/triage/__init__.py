"""Support triage for Tallybook's help desk: summaries, batch classification, reply drafts, all via Claude."""

from __future__ import annotations

from .app import (
    CATEGORIES,
    DEFAULT_MODEL,
    PRIORITIES,
    REPLY_MODEL,
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
    "Classification",
    "IncompleteReplyError",
    "SupportTriage",
    "Ticket",
    "TriageError",
    "parse_classifications",
]
