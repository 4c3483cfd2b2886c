"""Per-partition lag: is the newest day that must be in by now actually there?

A daily partition D is due at a deadline hour (UTC) on D+1. Dagster's freshness policies look at the latest
materialization of any partition, so a backfill of an old day makes a late asset look fresh; this looks at the
partitions themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ai_pipeline.lib.quality import Verdict


def due_day(now: datetime, deadline_hour: int) -> date:
    """The newest day that must be in at `now`: yesterday once today's deadline has passed, else the day before."""
    utc = now.astimezone(UTC)
    return utc.date() - timedelta(days=1 if utc.hour >= deadline_hour else 2)


@dataclass(frozen=True)
class PartitionLag:
    due: date
    newest: date | None
    days_behind: int  # due days missing at the newest end (0 when on time)
    hours_overdue: float  # since the deadline of the oldest missing due day (0 when on time)

    @property
    def verdict(self) -> Verdict:
        if self.days_behind == 0:
            return Verdict(True, "ERROR", f"partition {self.due} is in (due by its deadline)")
        newest = f"the newest is {self.newest}" if self.newest else "no partition is materialized"
        return Verdict(
            False,
            "ERROR",
            f"{self.days_behind} due day(s) missing up to {self.due}; {newest}; {self.hours_overdue:.1f} h overdue",
        )

    @property
    def metadata(self) -> dict[str, float | int | str]:
        return {
            "due_partition": self.due.isoformat(),
            "newest_partition": self.newest.isoformat() if self.newest else "",
            "days_behind": self.days_behind,
            "hours_overdue": round(self.hours_overdue, 2),
        }


def partition_lag(now: datetime, deadline_hour: int, newest: date | None, first: date) -> PartitionLag:
    """How far `newest` (the newest materialized day, None if none) is behind the day due at `now`.

    Days before `first` (the start of the partitions) are never due.
    """
    due = due_day(now, deadline_hour)
    if due < first or (newest is not None and newest >= due):
        return PartitionLag(due, newest, 0, 0.0)
    oldest_missing = first if newest is None else max(newest + timedelta(days=1), first)
    deadline = datetime.combine(oldest_missing + timedelta(days=1), datetime.min.time(), UTC) + timedelta(
        hours=deadline_hour
    )
    return PartitionLag(due, newest, (due - oldest_missing).days + 1, (now - deadline).total_seconds() / 3600)
