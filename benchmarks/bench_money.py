"""Money: what `--llm-route=cheap --llm-cache=auto` saves on a suite, from the JSON reports of two runs.

The suite runs twice against the built-in emulator (deterministic usage, real prices): once plain, once with
cheap routing and automatic prompt caching. The baseline is the plain run's `total_cost_usd`; the figure is
the optimised run's cost as a ratio of it, and the saving as a percentage. The emulator is deterministic, so
the figure is exact and repeatable: it measures money, not time.

The suite is `examples/support_triage` by default (its conftest points the app at the `llm_emulator`
fixture). `--quick`, or a checkout without the example, uses a small generated suite instead: 12 tests that
send the same long system prompt to a mid-tier model through the emulator. Any other suite that runs
offline can be named on the command line.

Run: python benchmarks/bench_money.py [--quick] [SUITE]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from _bench import REPO, figure, make_parser, run_pytest, write_files

EXAMPLE = REPO / "examples" / "support_triage"
OPTIMISED = ["--llm-route=cheap", "--llm-cache=auto"]

# Long enough (about 5,000 tokens) to be cacheable on every model, the cheap one included.
POLICY = " ".join(
    f"Rule {i}: answer politely, cite the policy section, never promise refunds above the plan price."
    for i in range(200)
)
GENERATED = {
    "pytest.ini": "[pytest]\n",
    "conftest.py": """
        import pytest


        @pytest.fixture(scope="session", autouse=True)
        def offline(llm_emulator):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ANTHROPIC_BASE_URL", llm_emulator.base_url)
                mp.setenv("ANTHROPIC_API_KEY", "offline")
                yield
    """,
    "test_support.py": f"""
        import pytest

        POLICY = {POLICY!r}


        @pytest.mark.parametrize("ticket", range(12))
        def test_reply(llm_client, ticket):
            message = llm_client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=200,
                system=POLICY,
                messages=[{{"role": "user", "content": f"Ticket {{ticket}}: my invoice is wrong, please fix it."}}],
            )
            assert message.content[0].text
    """,
}


def run_suite(suite: Path, cwd: Path, report: Path, extra: list[str]) -> tuple[dict[str, Any], int]:
    """Run the suite once with a JSON report; return the report and pytest's exit code."""
    result = run_pytest(
        [str(suite), "-q", "-p", "no:cacheprovider", f"--llm-report={report}", *extra], cwd, check=False
    ).result
    if not report.exists():
        raise RuntimeError(
            f"pytest wrote no report (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
        )
    data: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return data, result.returncode


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("suite", nargs="?", type=Path, help="the suite to run (default: the support_triage example)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        root = Path(tmp)
        if args.suite is not None:
            suite, cwd, name = args.suite.resolve(), REPO, str(args.suite)
        elif not args.quick and EXAMPLE.is_dir():
            suite, cwd, name = EXAMPLE, REPO, "examples/support_triage"
        else:
            # Quick mode keeps CI's smoke run self-contained: the example has its own tests to keep it honest.
            generated = root / "suite"
            write_files(generated, GENERATED)
            suite, cwd, name = generated, generated, "a generated 12-test suite"
        plain, plain_exit = run_suite(suite, cwd, root / "plain.json", [])
        optimised, optimised_exit = run_suite(suite, cwd, root / "optimised.json", OPTIMISED)

    base, cost = plain["total_cost_usd"], optimised["total_cost_usd"]
    if not base:
        raise RuntimeError(f"the plain run of {name} spent nothing: no LLM call was metered")
    saving = (1 - cost / base) * 100
    exits = "" if plain_exit == optimised_exit == 0 else f"; pytest exit codes {plain_exit} / {optimised_exit}"
    figure(
        "money.saving",
        f"{name}: ${cost:.6f} with {' '.join(OPTIMISED)} vs ${base:.6f} with neither: ratio {cost / base:.3f}, "
        f"saving {saving:.1f}% ({len(plain['calls'])} / {len(optimised['calls'])} calls; "
        f"backend {plain.get('backend', 'as configured by the suite')}{exits})",
    )
    savings = optimised["savings"]
    models = ", ".join(f"{m} {t['calls']}" for m, t in optimised["by_model"].items())
    figure(
        "money.breakdown",
        f"optimised run's own report: saved ${savings['total_usd']:.6f} (routing ${savings['routing_usd']:.6f}, "
        f"caching ${savings['caching_usd']:.6f}), ratio {savings['total_usd'] / base:.3f} of the plain run's cost; "
        f"calls by model: {models} (info: the report prices each call's counterfactuals separately, so its "
        "savings need not equal the difference between the runs)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
