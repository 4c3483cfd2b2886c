"""A realistic sample of landing files (events and user profiles), deterministic by seed.

Each day gets a web CSV, a mobile JSONL and a partner Parquet file of events, and a CSV of user profiles; each
day folder is closed with the completion marker `_SUCCESS`, as a finished writer does. With `dirty_rate > 0`,
that share of rows is corrupted, cycling through every row-level kind of bad input, and each day also gets one
file-level defect (cycling through `FILE_DEFECTS`). A day's events depend only on the seed and the day; user
profiles also on the range's start (earlier sign-ups arrive on its first day).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ai_pipeline.lib.ingest.contracts import CATEGORIES
from ai_pipeline.lib.ingest.landing import COMPLETION_MARKER

EVENT_COLUMNS = ["event_id", "user_id", "event_type", "event_time", "amount", "category", "country"]
USER_COLUMNS = ["user_id", "age", "email", "signup_time", "country"]
EVENT_TYPES = ["view", "click", "purchase", "logout", "signup"]
EVENT_WEIGHTS = [0.5, 0.3, 0.1, 0.07, 0.03]
COUNTRIES = ["United Kingdom", "Germany", "France", "Spain", "Netherlands", "Ireland", "Italy", "Poland"]

ROW_DEFECTS = (
    "wrong_type",
    "null_user_id",
    "empty_user_id",
    "bad_event_type",
    "too_late",
    "year_1900",
    "far_future",
    "negative_amount",
    "non_finite_amount",
    "huge_string",
    "sql_string",
    "duplicate_id",
    "malformed_line",
    "non_utf8",
)
FILE_DEFECTS = (
    "empty_file",
    "header_only",
    "bom_crlf",
    "alias_rename",
    "unknown_rename",
    "missing_column",
    "extra_columns",
    "changed_type",
    "gzip_named_csv",
    "utf16_bom",
    "spark_parts",
    "unterminated_quote",
    "multiline_field",
    "duplicate_column",
)
# Defects whose 5 rows are all quarantined (a schema error), and the one that costs one row (its broken line).
REJECTED_FILE_DEFECTS = ("unknown_rename", "missing_column", "changed_type", "duplicate_column")
_NON_UTF8 = "\x00NONUTF8\x00"
_MALFORMED = "\x00MALFORMED\x00"


@dataclass
class DaySummary:
    day: date
    files: list[str] = field(default_factory=list)
    event_rows: int = 0
    user_rows: int = 0
    dirty_rows: int = 0
    file_defect: str | None = None


def _rng(seed: int, day: date, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, day.toordinal(), stream])


def _users(seed: int, users: int) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 0])
    return pl.DataFrame(
        {
            "user_id": [f"u{i:06d}" for i in range(1, users + 1)],
            "age": rng.integers(16, 80, users),
            "country": rng.choice(COUNTRIES, users),
            # Heavy-tailed activity: a few users produce most events.
            "weight": rng.pareto(1.5, users) + 0.05,
        }
    )


def _day_typed(day: date, users: pl.DataFrame, events: int, seed: int) -> pl.DataFrame:
    """A day of clean events, typed as validation publishes them."""
    rng = _rng(seed, day, 1)
    weights = users["weight"].to_numpy()
    picks = rng.choice(users.height, events, p=weights / weights.sum())
    # Diurnal pattern: activity peaks in the evening (UTC).
    seconds = np.clip(rng.normal(19 * 3600, 4 * 3600, events), 0, 86399).astype(int)
    seconds.sort()
    types = rng.choice(EVENT_TYPES, events, p=EVENT_WEIGHTS)
    amounts = np.round(rng.lognormal(3.4, 0.8, events), 2)
    categories = rng.choice(CATEGORIES, events)
    return pl.DataFrame(
        {
            "event_id": pl.Series(range(events)).cast(pl.String).str.zfill(6),
            "user_id": users["user_id"].gather(picks),
            "event_type": types,
            "event_time": pl.Series(np.datetime64(day, "us") + (seconds * 1_000_000).astype("timedelta64[us]")),
            "amount": amounts,
            "category": categories,
            "country": users["country"].gather(picks),
        }
    ).with_columns(
        (f"evt-{day:%Y%m%d}-" + pl.col("event_id")).alias("event_id"),
        pl.col("event_time").dt.replace_time_zone("UTC"),
        pl.when(pl.col("event_type") == "purchase").then(pl.col("amount")).alias("amount"),
    )


def _day_events(day: date, users: pl.DataFrame, events: int, seed: int) -> pl.DataFrame:
    """A day of events as a source sends them: every value a string."""
    typed = _day_typed(day, users, events, seed)
    return typed.with_columns(
        pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        pl.Series("amount", [None if a is None else f"{a:.2f}" for a in typed["amount"]], dtype=pl.String),
    )


def clean_events(start: date, end: date, *, events_per_day: int, users: int, seed: int = 42) -> pl.DataFrame:
    """The generator's events for [start, end] as validated_events holds them (no dirt, no files)."""
    people = _users(seed, users)
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    return pl.concat([_day_typed(day, people, events_per_day, seed) for day in days])


def _corrupt(rows: list[dict], day: date, rate: float, rng: np.random.Generator) -> int:
    """Corrupts round(rate * len(rows)) rows in place, cycling through ROW_DEFECTS."""
    count = round(rate * len(rows))
    targets = rng.choice(len(rows), size=min(count, len(rows)), replace=False) if count else []
    for n, index in enumerate(sorted(int(i) for i in targets)):
        row, kind = rows[index], ROW_DEFECTS[n % len(ROW_DEFECTS)]
        if kind == "wrong_type":
            row["amount"] = "twelve"
        elif kind == "null_user_id":
            row["user_id"] = None
        elif kind == "empty_user_id":
            row["user_id"] = "   "
        elif kind == "bad_event_type":
            row["event_type"] = "Purchase!"
        elif kind == "too_late":
            # A month late: beyond any source's lateness, so it is quarantined in the day it arrived on.
            row["event_time"] = f"{day - timedelta(days=30)}T12:00:00Z"
        elif kind == "year_1900":
            row["event_time"] = "1900-01-01T00:00:00Z"
        elif kind == "far_future":
            row["event_time"] = "2999-12-31T23:59:59Z"
        elif kind == "negative_amount":
            row["amount"] = "-19.99"
        elif kind == "non_finite_amount":
            row["amount"] = "NaN" if n % 2 else "inf"
        elif kind == "huge_string":
            row["category"] = "x" * 100_000
        elif kind == "sql_string":
            row["user_id"] = "1'; DROP TABLE users; --"
        elif kind == "duplicate_id":
            # An exact re-send of the neighbouring row: quarantined whatever that row holds.
            row.update(rows[index - 1] if index else rows[1])
        elif kind == "malformed_line":
            row["country"] = _MALFORMED
        elif kind == "non_utf8":
            row["category"] = _NON_UTF8
    return len(targets)


def _csv_rows(columns: list[str], rows: list[list], *, bom: bool = False, crlf: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return (("\ufeff" if bom else "") + buffer.getvalue()).encode("utf-8")


def _csv_bytes(rows: list[dict], columns: list[str], *, bom: bool = False, crlf: bool = False) -> bytes:
    data = _csv_rows(columns, [[row.get(c) for c in columns] for row in rows], bom=bom, crlf=crlf).decode()
    # Defects a csv writer cannot produce: bytes that are not UTF-8 and ragged lines.
    return (
        data.encode("utf-8").replace(_NON_UTF8.encode(), b"caf\xe9").replace(_MALFORMED.encode(), b'UK,extra,"field"')
    )


def _jsonl_bytes(rows: list[dict]) -> bytes:
    lines = []
    for row in rows:
        line = json.dumps(row, ensure_ascii=False)
        # A broken JSON line stands in for the CSV-only defects.
        lines.append(line[:-5] if _MALFORMED in line or _NON_UTF8 in line else line)
    return ("\n".join(lines) + "\n").encode("utf-8")


def _file_defect(kind: str, rows: list[dict]) -> tuple[str, bytes | pl.DataFrame | dict[str, bytes]]:
    good = [{**row, "event_id": f"{row['event_id']}-{kind}"} for row in rows[:5]]
    if kind == "empty_file":
        return "empty.csv", b""
    if kind == "header_only":
        return "header_only.csv", _csv_bytes([], EVENT_COLUMNS)
    if kind == "bom_crlf":
        return "legacy_export.csv", _csv_bytes(good, EVENT_COLUMNS, bom=True, crlf=True)
    if kind == "alias_rename":
        renamed = [{("userId" if k == "user_id" else k): v for k, v in r.items()} for r in good]
        return "renamed.csv", _csv_bytes(renamed, ["event_id", "userId", *EVENT_COLUMNS[2:]])
    if kind == "unknown_rename":
        renamed = [{("uid" if k == "user_id" else k): v for k, v in r.items()} for r in good]
        return "unknown_rename.csv", _csv_bytes(renamed, ["event_id", "uid", *EVENT_COLUMNS[2:]])
    if kind == "missing_column":
        return "missing_column.csv", _csv_bytes(good, [c for c in EVENT_COLUMNS if c != "event_time"])
    if kind == "extra_columns":
        extra = [{**r, "session_id": f"s{i}", "referrer": "newsletter"} for i, r in enumerate(good)]
        return "extra_columns.csv", _csv_bytes(extra, [*EVENT_COLUMNS, "session_id", "referrer"])
    if kind == "gzip_named_csv":
        return "export.csv", gzip.compress(_csv_bytes(good, EVENT_COLUMNS), mtime=0)
    if kind == "utf16_bom":
        return "windows_export.csv", _csv_bytes(good, EVENT_COLUMNS).decode().encode("utf-16")
    if kind == "spark_parts":
        return "spark_export.csv", {
            "part-00000.csv": _csv_bytes(good[:3], EVENT_COLUMNS),
            "part-00001.csv": _csv_bytes(good[3:], EVENT_COLUMNS),
            "_SUCCESS": b"",
        }
    if kind == "unterminated_quote":
        lines = _csv_bytes(good, EVENT_COLUMNS).split(b"\n")
        lines[2] = lines[2].replace(b",", b',"', 1)  # the second row opens a quote it never closes
        return "hand_edited.csv", b"\n".join(lines)
    if kind == "multiline_field":
        noted = [{**r, "note": "gift wrap\nleave at the door" if i == 1 else ""} for i, r in enumerate(good)]
        return "with_notes.csv", _csv_bytes(noted, [*EVENT_COLUMNS, "note"])
    if kind == "duplicate_column":
        doubled = [[*(r[c] for c in EVENT_COLUMNS), r["user_id"]] for r in good]
        return "doubled_column.csv", _csv_rows([*EVENT_COLUMNS, "user_id"], doubled)
    # changed_type: the partner starts sending epoch seconds instead of timestamps.
    frame = pl.DataFrame(good, schema=dict.fromkeys(EVENT_COLUMNS, pl.String)).with_columns(
        pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%SZ").dt.epoch("s")
    )
    return "partner_v2.parquet", frame


def _write(path: Path, content: bytes | pl.DataFrame | dict[str, bytes]) -> None:
    """A file, or a directory of part files (a dict of names and contents)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        for name, part in content.items():
            _write(path / name, part)
    elif isinstance(content, pl.DataFrame):
        content.write_parquet(path)
    else:
        path.write_bytes(content)


def _user_rows(day: date, users: pl.DataFrame, first_day: date, seed: int) -> list[dict]:
    rng = _rng(seed, day, 2)
    # Users sign up spread over the range; those from before it arrive on its first day.
    offsets = np.random.default_rng([seed, 1]).integers(-30, 60, users.height)
    signup_day = np.array([first_day + timedelta(days=int(d)) for d in offsets])
    due = np.flatnonzero((signup_day == day) | ((signup_day < first_day) & (day == first_day)))
    updates = rng.choice(users.height, size=max(1, users.height // 50), replace=False)
    rows = []
    for i in sorted(set(due.tolist()) | ({int(u) for u in updates} if day != first_day else set())):
        user = users.row(i, named=True)
        signup = datetime.combine(min(signup_day[i], day), datetime.min.time(), UTC) + timedelta(
            seconds=int(rng.integers(0, 86400))
        )
        rows.append(
            {
                "user_id": user["user_id"],
                "age": str(user["age"] + (1 if i in updates and day != first_day else 0)),
                "email": f"{user['user_id']}@example.com",
                "signup_time": signup.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "country": user["country"],
            }
        )
    return rows


def _corrupt_users(rows: list[dict], rate: float, rng: np.random.Generator) -> int:
    count = min(round(rate * len(rows)), len(rows))
    for n, index in enumerate(sorted(int(i) for i in rng.choice(len(rows), size=count, replace=False))):
        kind = n % 4
        if kind == 0:
            rows[index]["age"] = "twenty"
        elif kind == 1:
            rows[index]["age"] = "200"
        elif kind == 2:
            rows[index]["email"] = "not-an-email"
        else:
            rows[index]["user_id"] = ""
    return count


def generate(
    landing: Path,
    start: date,
    end: date,
    *,
    events_per_day: int = 2000,
    users: int = 500,
    seed: int = 42,
    dirty_rate: float = 0.02,
) -> list[DaySummary]:
    """Writes landing/events/<day>/ and landing/users/<day>/ for every day in [start, end]."""
    people = _users(seed, users)
    summaries = []
    day = start
    while day <= end:
        summary = DaySummary(day)
        rows = _day_events(day, people, events_per_day, seed).to_dicts()
        split_a, split_b = int(len(rows) * 0.8), int(len(rows) * 0.95)
        # Row dirt goes to the text files: the partner's typed Parquet could not carry most of it.
        summary.dirty_rows = _corrupt(rows[:split_b], day, dirty_rate * len(rows) / split_b, _rng(seed, day, 3))
        outputs: dict[str, bytes | pl.DataFrame] = {
            "web.csv": _csv_bytes(rows[:split_a], EVENT_COLUMNS),
            "mobile.jsonl": _jsonl_bytes(rows[split_a:split_b]),
            "partner.parquet": pl.DataFrame(
                rows[split_b:], schema=dict.fromkeys(EVENT_COLUMNS, pl.String)
            ).with_columns(pl.col("amount").cast(pl.Float64, strict=False)),
        }
        summary.event_rows = len(rows)
        if dirty_rate > 0:
            summary.file_defect = FILE_DEFECTS[(day.toordinal() + seed) % len(FILE_DEFECTS)]
            name, content = _file_defect(summary.file_defect, _day_events(day, people, 5, seed + 1).to_dicts())
            outputs[name] = content
            summary.event_rows += 0 if summary.file_defect in ("empty_file", "header_only") else 5
        for name, content in outputs.items():
            path = landing / "events" / day.isoformat() / name
            _write(path, content)
            summary.files.append(str(path.relative_to(landing)))
        user_rows = _user_rows(day, people, start, seed)
        summary.dirty_rows += _corrupt_users(user_rows, dirty_rate, _rng(seed, day, 4))
        users_path = landing / "users" / day.isoformat() / "profiles.csv"
        _write(users_path, _csv_bytes(user_rows, USER_COLUMNS))
        summary.files.append(str(users_path.relative_to(landing)))
        for folder in ("events", "users"):
            _write(landing / folder / day.isoformat() / COMPLETION_MARKER, b"")
        summary.user_rows = len(user_rows)
        summaries.append(summary)
        day += timedelta(days=1)
    return summaries
