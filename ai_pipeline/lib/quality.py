"""Verdicts of the ingest quality checks, as plain functions of the numbers."""

from __future__ import annotations

from dataclasses import dataclass

# Above WARN a source is degrading; above ERROR the day is more likely broken than dirty, and is blocked.
QUARANTINE_WARN_RATE = 0.05
QUARANTINE_ERROR_RATE = 0.20


@dataclass(frozen=True)
class Verdict:
    passed: bool
    severity: str  # "WARN" or "ERROR": how a failure is reported
    description: str


def conservation(rows_in: int, valid: int, quarantined: int) -> Verdict:
    lost = rows_in - valid - quarantined
    if lost == 0:
        return Verdict(True, "ERROR", f"{rows_in} rows in = {valid} valid + {quarantined} quarantined")
    return Verdict(
        False,
        "ERROR",
        f"{rows_in} rows in but {valid} valid + {quarantined} quarantined: {lost:+d} rows unaccounted for",
    )


def quarantine_rate(
    rows_in: int, quarantined: int, warn: float = QUARANTINE_WARN_RATE, error: float = QUARANTINE_ERROR_RATE
) -> Verdict:
    rate = quarantined / rows_in if rows_in else 0.0
    text = f"{quarantined}/{rows_in} rows quarantined ({rate:.2%})"
    if rate > error:
        return Verdict(False, "ERROR", f"{text}, above {error:.0%}")
    if rate > warn:
        return Verdict(False, "WARN", f"{text}, above {warn:.0%}")
    return Verdict(True, "WARN", text)


def duplicates(identical: int, conflicting: int) -> Verdict:
    if identical + conflicting == 0:
        return Verdict(True, "WARN", "no duplicate keys")
    return Verdict(
        False,
        "WARN",
        f"{identical} identical and {conflicting} conflicting duplicates resolved (first by lineage kept)",
    )
