#!/usr/bin/env python
"""The fault-injection suite (issue 10): every scenario under steady user edits, judged
by the checker, and the table written into docs/reliability.md.

    .venv/bin/python bench/faults.py                       # all scenarios (~10 min on 2 cores)
    .venv/bin/python bench/faults.py --only broker-kill-9  # one (repeat --only for more)
    .venv/bin/python bench/faults.py --list

Each scenario starts a RabbitMQ node of its own (tests/rabbit_node.py: own node name,
ports, data directory), the router and three adapters as processes (tests/faults), and
users editing the three demo CRMs (SQLite) for ``--before`` seconds, then the fault, then
``--after`` seconds more. The machine's broker is never stopped, killed or alarmed.
Only a full run rewrites docs/reliability.md (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faults.harness import Outcome, run  # noqa: E402
from tests.faults.scenarios import SCENARIOS  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- faults table: bench/faults.py writes between these lines -->"
END = "<!-- end of faults table -->"
COMMAND = ".venv/bin/python bench/faults.py"
COLUMNS = (
    "scenario",
    "events",
    "lost",
    "duplicated",
    "stale",
    "DLQ ok",
    "recovery s",
    "result",
    "notes",
)


def row(o: Outcome) -> list[str]:
    dlq = "yes" if not o.dlq_problems else "NO: " + "; ".join(o.dlq_problems)
    dlq += f" ({o.dead_letters} entries)" if o.dead_letters else ""
    restarts = [f"{n} restarted by supervisor x{k}" for n, k in o.restarts.items()]
    return [
        o.scenario,
        str(o.events),
        str(o.verdict.lost),
        str(o.verdict.duplicated),
        str(o.verdict.stale),
        dlq,
        "-" if o.recovery is None else f"{o.recovery:.1f}",
        "pass" if o.ok else "FAIL: " + o.reason().replace("|", "/"),
        "; ".join([*restarts, *o.notes]).replace("|", "/") or "-",
    ]


def table(outcomes: list[Outcome]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(o)) + " |" for o in outcomes]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--before", type=float, default=5.0, help="load before the fault (s)")
    parser.add_argument("--after", type=float, default=5.0, help="load after recovery (s)")
    parser.add_argument("--rate", type=float, default=10.0, help="user edits per second")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (logs)")
    args = parser.parse_args()
    if args.list:
        for name, s in SCENARIOS.items():
            print(f"{name:28} {(s.fault.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = args.only or list(SCENARIOS)
    outcomes = []
    began = time.monotonic()
    for name in names:
        workdir = Path(tempfile.mkdtemp(prefix=f"crmsync-fault-{name}-"))
        t0 = time.monotonic()
        print(f"-- {name} ...", flush=True)
        outcome = run(SCENARIOS[name], workdir, None, args.before, args.after, args.rate)
        outcomes.append(outcome)
        print(
            f"   {'pass' if outcome.ok else 'FAIL'} in {time.monotonic() - t0:.0f}s: "
            f"{outcome.events} events, lost {outcome.verdict.lost}, duplicated "
            f"{outcome.verdict.duplicated}, stale {outcome.verdict.stale}"
            + ("" if outcome.ok else f" -- {outcome.reason()}")
            + (f" (logs in {workdir})" if args.keep else ""),
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = table(outcomes)
    print(f"\n{text}\n\n{len(outcomes)} scenarios in {time.monotonic() - began:.0f}s")
    if not args.no_write and not args.only:
        write_doc(text)
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
