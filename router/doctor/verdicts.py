"""What one doctor check found, how it prints, and what the command exits with."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["ok", "warn", "FAIL"]

EXIT_HEALTHY = 0
EXIT_FAILED = 1  # any check failed, the broker's included (docs/operations.md)


class Check(BaseModel):
    """One line of the report: what was checked, the verdict, and for anything not ok
    what was found and what to do. Never customer values or secrets: names only."""

    model_config = ConfigDict(frozen=True)

    status: Status
    what: str
    detail: str = ""
    fix: str = ""


def ok(what: str, detail: str = "") -> Check:
    return Check(status="ok", what=what, detail=detail)


def warn(what: str, detail: str, fix: str = "") -> Check:
    return Check(status="warn", what=what, detail=detail, fix=fix)


def fail(what: str, detail: str, fix: str = "") -> Check:
    return Check(status="FAIL", what=what, detail=detail, fix=fix)


def line(check: Check) -> str:
    """``STATUS what: detail; fix`` on one line (newlines in a driver's message folded);
    the status padded so that the checks line up."""
    text = check.what
    if check.detail:
        text += f": {check.detail}"
    if check.fix:
        text += f"; {check.fix}"
    return f"{check.status:<4} {' '.join(text.split())}"


def render(checks: Iterable[Check]) -> str:
    return "\n".join(line(c) for c in checks)


def summary(checks: Sequence[Check]) -> str:
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "FAIL")}
    verdict = "unhealthy" if counts["FAIL"] else "healthy"
    return f"{verdict}: {counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} failed"


def as_json(checks: Sequence[Check]) -> str:
    return json.dumps(
        {
            "healthy": exit_code(checks) == EXIT_HEALTHY,
            "checks": [c.model_dump() for c in checks],
        },
        indent=2,
    )


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check failed; warnings alone leave the system healthy."""
    return EXIT_FAILED if any(c.status == "FAIL" for c in checks) else EXIT_HEALTHY
