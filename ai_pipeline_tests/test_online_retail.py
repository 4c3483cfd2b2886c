"""A real export in another shape (UCI Online Retail), mapped into the event contract by configuration."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, date, datetime

import polars as pl
import pytest

from ai_pipeline.lib.contracts import Event
from ai_pipeline.lib.landing import read_landing_day
from ai_pipeline.lib.validation import validate
from ai_pipeline.sources import LANDING_SOURCES

DAY = date(2010, 12, 1)
RETAIL = next(s for s in LANDING_SOURCES if s.name == "online_retail_events")


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
