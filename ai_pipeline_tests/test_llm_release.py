"""Dataset releases: named by content, written once, the old ones kept; the release rules on planted datasets."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pyarrow.parquet as pq

from ai_pipeline.lib.llm.release import qa, releases, write_release


def _rows(texts: list[str], day: date = date(2024, 5, 1)) -> pl.DataFrame:
    return pl.DataFrame(
        {"example_id": [f"e{i}" for i in range(len(texts))], "text": texts, "partition_date": [day] * len(texts)}
    )


def test_the_same_rows_give_the_same_release_and_new_rows_a_new_one_beside_it(tmp_path):
    rows = _rows(["one two three four five", "six seven eight nine ten"])
    first = write_release(tmp_path, "sft", rows, id_column="example_id", description="d", extra={"code_version": "t"})
    shuffled = write_release(
        tmp_path, "sft", rows.reverse(), id_column="example_id", description="d", extra={"code_version": "t"}
    )
    assert first.created and not shuffled.created and shuffled.release_id == first.release_id
    grown = pl.concat([rows, _rows(["eleven twelve thirteen fourteen fifteen"], date(2024, 5, 2))[:, :]])
    grown = grown.with_columns(pl.Series("example_id", ["e0", "e1", "e2"]))
    second = write_release(tmp_path, "sft", grown, id_column="example_id", description="d", extra={"code_version": "t"})
    assert second.created and second.release_id != first.release_id
    listed = releases(tmp_path, "sft")
    assert [m["release_id"] for m in listed] == [first.release_id, second.release_id]
    assert [m["rows"] for m in listed] == [2, 3]
    assert listed[1]["partitions"]["rows_by_day"] == {"2024-05-01": 2, "2024-05-02": 1}
    assert pq.read_table(first.path / "data.parquet").num_rows == 2  # the old release still reads
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == sorted([first.release_id, second.release_id])
    lines = (second.path / "data.jsonl").read_text().splitlines()
    assert [json.loads(line)["example_id"] for line in lines] == ["e0", "e1", "e2"]


def test_the_release_rules_catch_an_empty_set_stub_replies_and_one_sided_labels():
    nothing_yet = qa(pl.DataFrame(), [], inputs=0)
    assert [(rule, v.passed, v.severity) for rule, v, _ in nothing_yet] == [
        ("rows", False, "WARN"),  # a lane that has not started is not an alarm
        ("reply_length", True, "ERROR"),
        ("empty_replies", True, "ERROR"),
    ]
    all_dropped = {rule: v for rule, v, _ in qa(pl.DataFrame(), [], inputs=12)}
    assert not all_dropped["rows"].passed and all_dropped["rows"].severity == "ERROR"
    assert all_dropped["rows"].description == "0 rows from 12 inputs: every one was dropped"
    frame = pl.DataFrame({"x": list(range(20))})
    one_stub = ["ok"] + ["a reply of more than five words"] * 39
    assert {rule: v for rule, v, _ in qa(frame, one_stub)}["reply_length"].passed  # 1 in 40: under 5%
    stubs = ["ok"] * 2 + ["a reply of more than five words"] * 18
    verdicts = {rule: v for rule, v, _ in qa(frame, stubs, [True] * 19 + [False])}
    assert not verdicts["reply_length"].passed  # 2 in 20: the 5th percentile is a stub
    assert not verdicts["label_balance"].passed and verdicts["label_balance"].description.startswith(
        "labels {True: 19, False: 1}: 19.0x"
    )
    blank = {rule: v for rule, v, _ in qa(frame, [" "] + ["fine reply of six words here"] * 19)}
    assert not blank["empty_replies"].passed
    one_sided = {rule: v for rule, v, _ in qa(frame, ["a reply of six words here"] * 20, [True] * 20)}
    assert not one_sided["label_balance"].passed


def test_the_cli_lists_releases_and_exports_one(tmp_path, monkeypatch, capsys):
    from ai_pipeline.cli import main
    from ai_pipeline.settings import Settings

    monkeypatch.setenv("AI_PIPELINE_HOME", str(tmp_path))
    made = write_release(
        Settings.from_env().releases,
        "sft_dataset",
        _rows(["one two three four five"]),
        id_column="example_id",
        description="d",
        extra={"code_version": "t"},
    )
    assert main(["releases"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:4] == ["sft_dataset", made.release_id, "1", "2024-05-01..2024-05-01"]
    assert main(["export-release", "sft_dataset", made.release_id, str(tmp_path / "out"), "--format", "jsonl"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "data.jsonl", "manifest.json"]
    assert main(["export-release", "sft_dataset", "0000000000000000", str(tmp_path / "none")]) == 2
    assert "No release 0000000000000000 of sft_dataset" in capsys.readouterr().out
