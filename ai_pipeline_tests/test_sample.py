"""The sample generator: deterministic by seed, and its dirt is all caught."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

from ai_pipeline.lib.ingest.contracts import Event
from ai_pipeline.lib.ingest.landing import read_landing_day
from ai_pipeline.lib.ingest.sample import FILE_DEFECTS, REJECTED_FILE_DEFECTS, generate
from ai_pipeline.lib.ingest.validation import validate


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate(tmp_path / "a", date(2024, 1, 1), date(2024, 1, 2), events_per_day=300, seed=7)
    generate(tmp_path / "b", date(2024, 1, 1), date(2024, 1, 2), events_per_day=300, seed=7)
    generate(tmp_path / "c", date(2024, 1, 1), date(2024, 1, 2), events_per_day=300, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_clean_sample_is_all_valid(tmp_path):
    days = generate(tmp_path, date(2024, 3, 1), date(2024, 3, 1), events_per_day=500, dirty_rate=0.0)
    read = read_landing_day(tmp_path, "events", days[0].day, Event, source="s", ingested_at=datetime.now(UTC))
    result = validate(read.raw, Event, partition_day=days[0].day, unique_key="event_id")
    assert result.valid.height == days[0].event_rows == 500
    assert result.quarantined.height == 0


def test_dirty_rows_are_quarantined_and_file_defects_cycle(tmp_path):
    start, end = date(2024, 3, 1), date(2024, 3, 14)
    days = generate(tmp_path, start, end, events_per_day=1000, dirty_rate=0.05)
    assert {d.file_defect for d in days} == set(FILE_DEFECTS)
    for day in days:
        # Each day folder is closed with the completion marker: nothing waits for files to settle.
        read = read_landing_day(tmp_path, "events", day.day, Event, source="s", ingested_at=datetime.now(UTC))
        result = validate(read.raw, Event, partition_day=day.day, unique_key="event_id")
        assert read.raw.height == day.event_rows
        assert not read.refused and all(f.unaccounted == 0 for f in read.files)
        # 50 corrupted rows of 1000, plus the rows a defect file loses: all 5 (schema), or its broken line.
        rejected_file = 5 if day.file_defect in REJECTED_FILE_DEFECTS else int(day.file_defect == "unterminated_quote")
        assert result.quarantined.height == 50 + rejected_file
