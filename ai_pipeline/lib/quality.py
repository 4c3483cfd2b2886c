"""Verdicts of the ingest quality checks, as plain functions of the numbers."""

from __future__ import annotations

from dataclasses import dataclass

# Above WARN a source is degrading; above ERROR the day is more likely broken than dirty, and is blocked.
QUARANTINE_WARN_RATE = 0.05
QUARANTINE_ERROR_RATE = 0.20
# Below this many rows a day's rate is noise (1 of 2 is 50%): it warns, it does not block the day.
QUARANTINE_MIN_ROWS = 20
SHOWN = 3  # problems named in a verdict's description; the metadata lists them all


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


@dataclass(frozen=True)
class Reason:
    """How often one quarantine reason (`field:rule`) occurred, with its first occurrence and value."""

    reason: str
    rows: int
    first: str  # "<file or URL> line <n>"
    value: str | None

    def describe(self) -> str:
        value = "" if self.value is None else f", value {self.value[:40]!r}"
        return f"{self.reason} x{self.rows} (first: {self.first}{value})"


def quarantine_rate(
    rows_in: int,
    quarantined: int,
    warn: float = QUARANTINE_WARN_RATE,
    error: float = QUARANTINE_ERROR_RATE,
    reasons: list[Reason] = (),
) -> Verdict:
    """The share of quarantined rows; a failure names its most frequent reasons, where they first occurred."""
    rate = quarantined / rows_in if rows_in else 0.0
    text = f"{quarantined}/{rows_in} rows quarantined ({rate:.2%})"
    why = f": {'; '.join(r.describe() for r in reasons[:SHOWN])}" if reasons else ""
    if rate > error and rows_in < QUARANTINE_MIN_ROWS:
        return Verdict(False, "WARN", f"{text}, above {error:.0%} but too few rows to block the day on{why}")
    if rate > error:
        return Verdict(False, "ERROR", f"{text}, above {error:.0%}{why}")
    if rate > warn:
        return Verdict(False, "WARN", f"{text}, above {warn:.0%}{why}")
    return Verdict(True, "WARN", text)


def duplicates(identical: int, conflicting: int, example: str | None = None) -> Verdict:
    """`example`: one quarantined duplicate, "<file> line <n>: <which row it duplicates>"."""
    if identical + conflicting == 0:
        return Verdict(True, "WARN", "no duplicate keys")
    return Verdict(
        False,
        "WARN",
        f"{identical} identical and {conflicting} conflicting duplicates resolved (first by lineage kept)"
        + (f", e.g. {example}" if example else ""),
    )


def unique_across_days(key: str, repeated: int, example: str | None = None) -> Verdict:
    """`repeated`: keys of the day that another day holds too (one event told twice with different times, or an id
    a source reused); `example`: one of them and the other day."""
    if repeated == 0:
        return Verdict(True, "WARN", f"every {key} of the day is on no other day")
    return Verdict(
        False, "WARN", f"{repeated} {key} values also on another day" + (f", e.g. {example}" if example else "")
    )


def _named(problems: list[str]) -> str:
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return "; ".join(problems[:SHOWN]) + more


def files_accounted(files: list, rows_by_uri: dict[str, int]) -> Verdict:
    """Every landing file of a day was read, and each one's rows add up to its independent record count.

    `files` are `lib.landing.FileReport`s; `rows_by_uri` the raw rows written per file.
    """
    problems = []
    for f in files:
        if f.status == "refused":
            counted = "" if f.lines is None else f" ({f.data_lines} records)"
            problems.append(f"{f.uri}{counted} not read: {f.reason}")
        elif f.unaccounted:
            problems.append(f"{f.uri}: {f.lines} lines counted, {f.unaccounted:+d} not accounted for by its records")
        elif f.uncounted:
            problems.append(f"{f.uri}: {f.records_counted} records counted in its text, {f.rows} read")
        elif rows_by_uri.get(f.uri, 0) != f.rows:
            problems.append(f"{f.uri}: {f.rows} records read but {rows_by_uri.get(f.uri, 0)} raw rows written")
    read = [f for f in files if f.status == "read"]
    if problems:
        return Verdict(False, "ERROR", f"{len(problems)} of {len(files)} files not fully read: {_named(problems)}")
    multiline = sum(len(f.multiline) for f in read)
    resynced = sum(len(f.resynced) for f in read)
    return Verdict(
        True,
        "ERROR",
        f"{len(read)} files read, {sum(f.rows for f in read)} records"
        + (f" ({multiline} spanning several lines)" if multiline else "")
        + (f"; {resynced} line(s) with an unterminated quote quarantined" if resynced else ""),
    )
