"""A real export in another shape (UCI Online Retail), mapped into the event contract by configuration."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import CONSERVATION_CHECK, DAILY_JOB, QUARANTINE_RATE_CHECK
from ai_pipeline.lib.ingest.contracts import Event
from ai_pipeline.lib.ingest.landing import read_landing_day
from ai_pipeline.lib.ingest.validation import validate
from ai_pipeline.settings import Settings
from ai_pipeline.sources import load_sources
from ai_pipeline_tests.conftest import execute_days, landing_zone

# The slow tier (not in `make test-fast`): range runs over a real export.
pytestmark = pytest.mark.slow

DAY = date(2010, 12, 1)
RETAIL = next(s for s in load_sources() if s.name == "online_retail_events")


@pytest.fixture(scope="module")
def retail(shared_data, tmp_path_factory):
    source_file = shared_data / "online_retail" / "OnlineRetail.csv"
    root = tmp_path_factory.mktemp("landing")
    (root / RETAIL.folder / DAY.isoformat()).mkdir(parents=True)
    shutil.copy(source_file, root / RETAIL.folder / DAY.isoformat())
    with source_file.open(newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    read = read_landing_day(
        root,
        RETAIL.folder,
        DAY,
        Event,
        source=RETAIL.name,
        ingested_at=datetime.now(UTC),
        mapping=RETAIL.mapping,
        settle_seconds=0,
    )
    return lines, read, validate(read.raw, Event, partition_day=DAY, unique_key="event_id")


def test_every_line_is_published_or_quarantined(retail):
    lines, read, result = retail
    assert read.raw.height == len(lines) == 999
    assert result.valid.height + result.quarantined.height == len(lines)
    assert [r.error for r in read.reports] == [None]
    assert read.reports[0].aliased == {"CustomerID": "user_id", "Country": "country"}
    assert read.reports[0].unknown == ["Description"]


def test_empty_customer_id_is_quarantined(retail):
    lines, _, result = retail
    empty = [line for line in lines if not line["CustomerID"]]
    assert len(empty) == result.quarantined.height == 1
    reasons = result.quarantined["reasons"].to_list()[0]
    assert [(r["field"], r["rule"]) for r in reasons] == [("user_id", "missing")]
    assert result.quarantined["_source_offset"].to_list() == [lines.index(empty[0]) + 2]


def test_cancellations_are_their_own_event_type_with_refunded_amount(retail):
    lines, _, result = retail
    cancelled = [line for line in lines if line["InvoiceNo"].startswith("C") and line["CustomerID"]]
    got = result.valid.filter(pl.col("event_type") == "cancellation")
    assert got.height == len(cancelled) == 10
    expected = sum(abs(int(line["Quantity"]) * float(line["UnitPrice"])) for line in cancelled)
    assert got["amount"].sum() == pytest.approx(expected)
    assert (got["amount"] > 0).all()


def test_amount_is_quantity_times_unit_price(retail):
    lines, _, result = retail
    first = lines[0]
    row = result.valid.filter(pl.col("event_id") == f"{first['InvoiceNo']}-1").row(0, named=True)
    assert row["amount"] == pytest.approx(int(first["Quantity"]) * float(first["UnitPrice"]))
    assert row["user_id"] == first["CustomerID"] and row["country"] == first["Country"]
    assert row["event_time"] == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
    purchases = [line for line in lines if not line["InvoiceNo"].startswith("C") and line["CustomerID"]]
    total = sum(int(line["Quantity"]) * float(line["UnitPrice"]) for line in purchases)
    assert result.valid.filter(pl.col("event_type") == "purchase")["amount"].sum() == pytest.approx(total)


# --- through Dagster: rows land on their invoice day, whatever folder the export was dropped in -------------------

INGEST = [dg.AssetKey(k) for k in ("raw_online_retail_events", "validated_events", "quarantined_events")]
COLUMNS = ["event_id", "user_id", "event_type", "event_time", "amount", "country"]


def _spread_over_days(lines: list[dict], days: int) -> list[dict]:
    """The real invoice lines as a `days`-day export: each invoice moved to day (its rank mod `days`), same time."""
    invoices = list(dict.fromkeys(line["InvoiceNo"] for line in lines))
    offset = {invoice: rank % days for rank, invoice in enumerate(invoices)}
    out = []
    for line in lines:
        when = datetime.strptime(line["InvoiceDate"], "%m/%d/%y %H:%M") + timedelta(days=offset[line["InvoiceNo"]])
        out.append({**line, "InvoiceDate": f"{when.month}/{when.day}/{when:%y} {when.hour}:{when:%M}"})
    return out


def _write_csv(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)


def _invoice_day(line: dict) -> date:
    return datetime.strptime(line["InvoiceDate"], "%m/%d/%y %H:%M").date()


Checks = dict[tuple[str, str], dg.AssetCheckEvaluation]


def _ingest(home: Path, first: date, last: date) -> tuple[dict[str, pl.DataFrame], Checks]:
    """The retail source's raw and validated days `first`..`last` as one range run: the tables, and the checks'
    results by (check, day)."""
    settings = Settings(home=home, start_date=first)
    job = build_defs(settings, landing_zone(settings)).resolve_job_def(DAILY_JOB)
    result = execute_days(job, dg.DagsterInstance.ephemeral(), first, last, asset_selection=INGEST)
    checks = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations() if e.partition}
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        tables = {t: conn.execute(f"select * from {t}").pl() for t in ("validated_events", "quarantined_events")}
    return tables, checks


@pytest.mark.parametrize("days", [1, 10])
def test_a_whole_export_in_one_folder_equals_the_same_export_split_by_day(retail, tmp_path, days):
    lines = _spread_over_days(retail[0], days)
    by_day: dict[date, list[dict]] = {}
    for line in lines:
        by_day.setdefault(_invoice_day(line), []).append(line)
    first, last = min(by_day), max(by_day)
    # The whole export in the folder of its first day (the documented way to load history) ...
    _write_csv(tmp_path / "whole" / "landing" / RETAIL.folder / first.isoformat() / "export.csv", lines)
    whole, whole_checks = _ingest(tmp_path / "whole", first, last)
    # ... and the same lines split into one file per invoice day.
    for day, day_lines in by_day.items():
        _write_csv(tmp_path / "split" / "landing" / RETAIL.folder / day.isoformat() / "export.csv", day_lines)
    split, _ = _ingest(tmp_path / "split", first, last)

    valid = whole["validated_events"]
    assert valid.height + whole["quarantined_events"].height == len(lines)
    # Every published row is on its invoice day, every quarantined one says why.
    assert (valid["event_time"].dt.date() == valid["partition_date"]).all()
    assert whole["quarantined_events"]["reasons"].list.len().min() >= 1
    for day, day_lines in by_day.items():
        check = whole_checks[(CONSERVATION_CHECK, day.isoformat())]
        assert check.passed and check.metadata["rows_in"].value == len(day_lines), day
    assert all(e.passed for e in whole_checks.values() if e.severity == dg.AssetCheckSeverity.ERROR)

    def published(tables):
        return tables["validated_events"].select("partition_date", *COLUMNS).sort("event_id")

    assert published(whole).equals(published(split))
    assert (valid["_arrival_date"] == first).all()


def test_an_export_older_than_the_lateness_is_quarantined_as_too_late(retail, tmp_path):
    lines = _spread_over_days(retail[0], 10)
    first, last = min(map(_invoice_day, lines)), max(map(_invoice_day, lines))
    # Dropped in the folder of its last day: lines more than 7 days older than that are too late for their day.
    _write_csv(tmp_path / "landing" / RETAIL.folder / last.isoformat() / "export.csv", lines)
    tables, checks = _ingest(tmp_path, first, last)
    late = [line for line in lines if (last - _invoice_day(line)).days > RETAIL.lateness_days]
    assert late and len(late) < len(lines)
    quarantined = tables["quarantined_events"]
    too_late = quarantined.filter(
        pl.col("reasons").list.eval(pl.element().struct.field("rule") == "too_late").list.any()
    )
    assert too_late.height == len(late)
    assert (too_late["partition_date"] == last).all()
    message = too_late["reasons"][0][0]["message"]
    assert message == f"too late: arrived on {last}, more than the source's lateness after its own day"
    assert tables["validated_events"].height + quarantined.height == len(lines)
    assert all(e.passed for (name, _), e in checks.items() if name == CONSERVATION_CHECK)
    # A fifth of the export arrived too late for its day: the last day's quarantine rate says so, and why.
    rate = checks[(QUARANTINE_RATE_CHECK, last.isoformat())]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.ERROR
    assert f"event_time:too_late x{len(late)} (first: online_retail/{last}/export.csv line " in rate.description
