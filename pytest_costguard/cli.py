"""The `costguard` command line (serve, report, merge, history, cassettes).

Each subcommand is one `_add_<name>` function that registers its parser and sets `run` to the function doing
the work; `main` turns every failure into a message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["main"]

Run = Callable[[argparse.Namespace, list[str]], int]


class CommandError(Exception):
    """A failure to report to the user as one line, without a traceback."""


def _serve(args: argparse.Namespace, rest: list[str]) -> int:
    """Serve the local Messages API emulator."""
    # Imported here so that `costguard --help` and the other subcommands stay fast.
    from .emulator import main as serve_main

    return serve_main(rest, prog="costguard serve")


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `costguard serve`."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a local stand-in for Anthropic's Messages API (costguard serve --help)",
        description="Serve a local stand-in for Anthropic's Messages API.",
        # Options (--host, --port, -h) belong to the emulator's own parser, which receives them untouched.
        add_help=False,
    )
    parser.set_defaults(run=_serve, passthrough=True)


def _write_outputs(
    report: dict[str, Any],
    outputs: list[tuple[str, str | None, tuple[str, ...]]],
    *,
    history: list[dict[str, Any]] | None = None,
) -> None:
    """Write a report to each (flag, path, allowed suffixes) given, naming the flag when it fails."""
    from .reports.model import ReportError, write_report

    for flag, path, suffixes in outputs:
        if path is None:
            continue
        if not path.lower().endswith(suffixes):
            raise CommandError(f"{flag}: {path!r} must end in {' or '.join(suffixes)}")
        try:
            write_report(report, path, history=history)
        except (ReportError, OSError) as exc:
            raise CommandError(f"{flag}: cannot write {path}: {exc}") from None


def _html_output(args: argparse.Namespace) -> tuple[str, str | None, tuple[str, ...]]:
    return ("--html", args.html, (".html", ".htm"))


def _report(args: argparse.Namespace, rest: list[str]) -> int:
    """Print (and write) the cost report of a ledger, e.g. one a killed run left, or of a JSON report."""
    from .domain.money import format_usd
    from .metering.sqlite_ledger import LedgerError, read_ledger
    from .reports.model import ReportError, build_report, load_report, terminal_lines, verdict_lines

    source: str = args.source
    if source.lower().startswith(("redis://", "rediss://")):
        return _report_redis(args)
    if args.key is not None or args.window is not None or args.at is not None:
        raise CommandError("--key, --window and --at read a shared budget: give a redis:// URL as LEDGER")
    try:
        with open(source, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError as exc:
        raise CommandError(f"{source}: cannot read ({exc.strerror or exc})") from None
    notes: list[str] = []
    try:
        if head.startswith(b"{"):
            report = load_report(source)
        else:
            ledger = read_ledger(source)
            report = build_report(
                ledger.records,
                {},
                budget=ledger.limit,
                refusals=list(ledger.refusals),
                labels={
                    "ledger": {
                        "path": source,
                        "created": ledger.created,
                        "in_flight_calls": ledger.in_flight,
                        "in_flight_worst_case_usd": float(ledger.in_flight_usd),
                    }
                },
            )
            if ledger.in_flight:
                notes.append(
                    f"{ledger.in_flight} call(s) had not ended when the ledger was last written "
                    f"(up to {format_usd(ledger.in_flight_usd)}, not included above)"
                )
    except (LedgerError, ReportError) as exc:
        raise CommandError(str(exc)) from None
    _write_outputs(
        report,
        [("--json", args.json, (".json",)), ("--md", args.md, (".md", ".markdown")), _html_output(args)],
    )
    print(f"costguard report: {source}")
    for line in [*terminal_lines(report), *notes]:
        print(line)
    for line in verdict_lines(report):
        print(line)
    return 0


def _report_redis(args: argparse.Namespace) -> int:
    """Print (and write) the report of a budget shared on Redis: per run and per test."""
    from datetime import datetime, timezone

    from .domain.money import format_usd
    from .metering.redis_ledger import DEFAULT_KEY, check_redis_url, parse_window, read_redis_ledger, redact_url
    from .metering.sqlite_ledger import LedgerError
    from .reports.model import build_report, terminal_lines

    url: str = args.source
    problem = check_redis_url(url)
    if problem is not None:
        raise CommandError(f"{redact_url(url)!r} {problem}")
    try:
        window = None if args.window is None else parse_window(args.window)
    except ValueError as exc:
        raise CommandError(f"--window: {exc}") from None
    at = None
    if args.at is not None:
        if window is None:
            raise CommandError("--at picks a window: give --window too")
        try:
            moment = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"--at: {args.at!r} is not an ISO 8601 date or time (2026-12-01T09:00Z)") from None
        at = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    key = args.key or DEFAULT_KEY
    try:
        ledger = read_redis_ledger(url, key=key, window=window, at=at)
    except LedgerError as exc:
        raise CommandError(str(exc)) from None
    runs = ledger.runs()
    report = build_report(
        ledger.records,
        {},
        budget=ledger.limit,
        refusals=list(ledger.refusals),
        labels={
            "ledger": {
                "url": ledger.where,
                "key": key,
                "window": ledger.window,
                "created": ledger.created,
                "in_flight_calls": ledger.in_flight,
                "in_flight_worst_case_usd": float(ledger.in_flight_usd),
            },
            "runs": [{**run, "cost_usd": float(run["cost_usd"])} for run in runs],
        },
    )
    _write_outputs(report, [("--json", args.json, (".json",)), ("--md", args.md, (".md", ".markdown"))])
    window_text = f", window {ledger.window}" if ledger.window else ""
    print(f"costguard report: {ledger.where} key {key}{window_text}")
    if runs:
        width = min(max(len(run["run"]) for run in runs), 50)
        print(f"{'run':<{width}}  {'machines':<20}  {'calls':>5}  {'refused':>7}  {'cost':>10}")
        for run in runs:
            machines = ",".join(run["machines"]) or "-"
            print(
                f"{run['run']:<{width}}  {machines:<20}  {run['calls']:>5}  {run['refused_calls']:>7}  "
                f"{format_usd(run['cost_usd']):>10}"
            )
    for line in terminal_lines(report):
        print(line)
    if ledger.in_flight:
        print(
            f"{ledger.in_flight} call(s) in flight now (up to {format_usd(ledger.in_flight_usd)}, not included above)"
        )
    if report["budget_exceeded"]:
        print("LLM BUDGET EXCEEDED: calls were refused by the shared budget")
    return 0


def _add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `costguard report`."""
    parser = subparsers.add_parser(
        "report",
        help="print the cost report of a ledger (--llm-ledger), even one a killed run left behind",
        description="Print the per-test cost report of a pytest-costguard ledger file (or JSON report).",
    )
    parser.add_argument(
        "source", metavar="LEDGER", help="a --llm-ledger file or redis:// URL (or a JSON report)"
    )
    parser.add_argument("--key", metavar="NAME", help="with a redis:// LEDGER: the budget's name (--llm-ledger-key)")
    parser.add_argument(
        "--window", metavar="DURATION", help="with a redis:// LEDGER: the budget's window (--llm-budget-window)"
    )
    parser.add_argument(
        "--at", metavar="TIME", help="with --window: a UTC date or time in the window to read (default: now)"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    parser.add_argument("--md", metavar="OUT", help="also write the report as Markdown to OUT")
    parser.add_argument("--html", metavar="OUT", help="also write the report as a self-contained HTML page to OUT")
    parser.set_defaults(run=_report)


def _merge(args: argparse.Namespace, rest: list[str]) -> int:
    """Merge per-shard JSON reports; exit 1 when the merged run broke its budget."""
    from .domain.money import MoneyError, format_usd, parse_usd
    from .reports.merge import merge_reports, merged_over_budget
    from .reports.model import ReportError, load_report, terminal_lines

    try:
        budget = None if args.budget is None else parse_usd(args.budget, source="--budget")
    except MoneyError as exc:
        raise CommandError(str(exc)) from None
    try:
        reports = [load_report(path) for path in args.reports]
        merged = merge_reports(reports, sources=args.reports, budget=budget)
    except ReportError as exc:
        raise CommandError(str(exc)) from None
    for flag, path, suffixes in (("-o", args.output, (".json", ".md", ".markdown")), _html_output(args)):
        # Checked before the history is appended to, so a typo in a path does not record the run.
        if path is not None and not path.lower().endswith(suffixes):
            raise CommandError(f"{flag}: {path!r} must end in {' or '.join(suffixes)}")
    history = _append_history(merged, args.history) if args.history is not None else None
    _write_outputs(
        merged,
        [
            ("-o", args.output, (".json", ".md", ".markdown")),
            ("--md", args.md, (".md", ".markdown")),
            _html_output(args),
        ],
        history=history,
    )
    print(
        f"costguard merge: {len(reports)} reports, {len(merged['tests'])} tests, "
        f"{len(merged['calls'])} calls, total {format_usd(merged['total_cost_usd'])}"
    )
    for line in terminal_lines(merged):
        print(line)
    reasons = merged_over_budget(merged)
    for reason in reasons:
        print(f"LLM BUDGET EXCEEDED: {reason}")
    return 1 if reasons else 0


def _add_merge(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `costguard merge`."""
    parser = subparsers.add_parser(
        "merge",
        help="merge the JSON reports of CI shards into one; exit 1 when over budget",
        description="Merge per-shard JSON reports (--llm-report) into one report of the same schema. "
        "Exit 1 when the merged total is over --budget or any shard exceeded its budget.",
    )
    parser.add_argument("reports", nargs="+", metavar="REPORT", help="JSON reports, one per shard")
    parser.add_argument("--budget", metavar="USD", help="the whole run's budget, e.g. 5.00")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the merged report to OUT (.json or .md)")
    parser.add_argument("--md", metavar="OUT", help="also write the merged report as Markdown to OUT")
    parser.add_argument("--html", metavar="OUT", help="also write the merged report as an HTML page to OUT")
    parser.add_argument(
        "--history", metavar="PATH", help="append the merged run to this history file (the HTML page shows the trend)"
    )
    parser.set_defaults(run=_merge)


def _append_history(report: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """Append a merged run to a history file and return the history (warnings on stderr)."""
    from .reports.history import HistoryError, append_history, git_revision, history_entry, read_history

    try:
        append_history(path, history_entry(report, revision=git_revision()))
        entries, warnings = read_history(path)
    except (OSError, HistoryError) as exc:
        raise CommandError(f"--history: cannot append to {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for warning in warnings:
        print(f"costguard: warning: {warning}", file=sys.stderr)
    return entries


def _history(args: argparse.Namespace, rest: list[str]) -> int:
    """Print the cost trend of a history file (--llm-history), and render it as HTML with --html."""
    from .reports.history import HistoryError, read_history, trend_lines

    if args.html is not None and not args.html.lower().endswith((".html", ".htm")):
        raise CommandError(f"--html: {args.html!r} must end in .html")
    try:
        entries, warnings = read_history(args.path)
    except HistoryError as exc:
        raise CommandError(str(exc)) from None
    for warning in warnings:
        print(f"costguard: warning: {warning}", file=sys.stderr)
    if args.html is not None:
        from pathlib import Path

        from .reports.html import render_history_html

        try:
            Path(args.html).write_text(render_history_html(entries, source=args.path), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"--html: cannot write {args.html}: {exc.strerror or exc}") from None
    print(f"costguard history: {args.path}")
    for line in trend_lines(entries, last=args.last):
        print(line)
    return 0


def _add_history(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `costguard history`."""
    parser = subparsers.add_parser(
        "history",
        help="print the cost trend of a history file (--llm-history); --html renders it as a page",
        description="Print the total and the most expensive tests over the last runs of a cost history.",
    )
    parser.add_argument("path", metavar="PATH", help="a --llm-history file (one JSON line per run)")
    parser.add_argument("--html", metavar="OUT", help="also render the trend as a self-contained HTML page")
    parser.add_argument("--last", metavar="N", type=int, default=10, help="runs to print (default 10)")
    parser.set_defaults(run=_history)


def _cassettes(args: argparse.Namespace, rest: list[str]) -> int:
    """List the cassettes under a folder with what they recorded; find stale ones and stored secrets."""
    from pathlib import Path

    from .domain.money import format_usd
    from .replay.cassette import Cassette, CassetteError, cassette_files
    from .replay.redaction import find_secrets
    from .replay.stale import stale_reason

    folder = Path(args.folder)
    if not folder.is_dir():
        raise CommandError(f"{folder}: no such folder")
    files = cassette_files(folder)
    status = 0
    total = Decimal(0)
    priced = _cassette_pricer()
    print(f"costguard cassettes: {folder} ({len(files)} file(s))")
    for path in files:
        shown = path.relative_to(folder)
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            cassette = Cassette.loads(text, where=str(shown))
        except CassetteError as exc:
            print(f"{shown}: CORRUPT: {exc}")
            status = max(status, 2)
            cassette = None
        if args.check_secrets:
            interactions = cassette.interactions if cassette else ()
            headers = [h for i in interactions for h in (i.headers, i.request_headers)]
            for secret in find_secrets(text, headers=headers):
                print(f"{shown}: SECRET: {secret}")
                status = max(status, 1)
        if cassette is None:
            continue
        cost, unpriced = priced(cassette)
        total += cost
        note = f", {unpriced} unpriced" if unpriced else ""
        print(
            f"{shown}: {len(cassette.interactions)} interaction(s), recorded {cassette.recorded_at or '?'}, "
            f"{format_usd(cost)} at today's prices{note}"
        )
        if args.stale:
            reason = stale_reason(path, cassette)
            if reason is not None:
                print(f"{shown}: STALE: {reason}")
                status = max(status, 1)
    print(f"total: {format_usd(total)} at today's prices (what replaying every cassette saves per run)")
    return status


def _cassette_pricer() -> Callable[[Any], tuple[Decimal, int]]:
    """Price a cassette's recorded replies at today's rates: (cost, replies that could not be priced)."""
    from .core.pricing import UnknownModelPrice, default_price_book
    from .providers.anthropic import replay as anthropic_replay
    from .providers.openai import replay as openai_replay

    book = default_price_book()
    readers = {"anthropic": anthropic_replay.recorded_usage, "openai": openai_replay.recorded_usage}

    def price(cassette: Any) -> tuple[Decimal, int]:
        cost, unpriced = Decimal(0), 0
        for interaction in cassette.interactions:
            reader = readers.get(interaction.provider)
            found = reader(interaction) if reader is not None else None
            if found is None:
                continue
            try:
                cost += book.cost(found[0], found[1])
            except UnknownModelPrice:
                unpriced += 1
        return cost, unpriced

    return price


def _add_cassettes(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `costguard cassettes`."""
    parser = subparsers.add_parser(
        "cassettes",
        help="list recorded cassettes (--llm-record) with their cost; --stale, --check-secrets",
        description="List the cassettes under DIR with what their recordings cost at today's prices. "
        "Exit 1 when --stale finds a cassette whose test is gone or --check-secrets finds a stored secret, "
        "2 when a cassette cannot be read.",
    )
    parser.add_argument("folder", metavar="DIR", help="a folder of cassettes (searched recursively)")
    parser.add_argument("--stale", action="store_true", help="find cassettes whose test no longer exists")
    parser.add_argument("--check-secrets", action="store_true", help="verify that no API key or auth header is stored")
    parser.set_defaults(run=_cassettes)


_COMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _add_serve,
    _add_report,
    _add_merge,
    _add_history,
    _add_cassettes,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costguard", description="Keep what a test suite spends on LLM APIs under a hard budget."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `costguard` command; return its exit status."""
    parser = _parser()
    try:
        args, rest = parser.parse_known_args(argv)
        run: Run | None = getattr(args, "run", None)
        if run is None:
            parser.print_usage(sys.stderr)
            raise CommandError("a command is required: " + ", ".join(_command_names(parser)))
        if rest and not getattr(args, "passthrough", False):
            raise CommandError(f"unrecognized arguments: {' '.join(rest)}")
        return run(args, rest)
    except SystemExit as exc:
        # argparse exits on --help (0) and on usage errors (2): report, don't raise, so main() stays callable.
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`costguard report L | head -1`): stop quietly, as a writer killed by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        message = str(exc) if isinstance(exc, CommandError) else f"{type(exc).__name__}: {exc}"
        print(f"costguard: error: {message}", file=sys.stderr)
        return 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-costguard")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


if __name__ == "__main__":
    sys.exit(main())
