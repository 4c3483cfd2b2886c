"""The training-data lane on the real samples (../shared/data/llm): its domain core day by day, counts adding up at
every step, and a bulk export of real trees through `import-history` and the lane's Dagster job."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from ai_pipeline.cli import import_history, run_days
from ai_pipeline.defs.keys import TRAINING_JOB
from ai_pipeline.lib.ingest.landing import COMPLETION_MARKER, read_landing_day
from ai_pipeline.lib.ingest.routing import Routing, route
from ai_pipeline.lib.ingest.validation import validate
from ai_pipeline.lib.llm.datasets import SftRecipe, sft_examples, sibling_pairs, transcript_pairs
from ai_pipeline.lib.llm.decontam import EvalIndex
from ai_pipeline.lib.llm.gates import PAIRS, SFT, GateConfig, Gates
from ai_pipeline.lib.llm.release import releases
from ai_pipeline.lib.llm.threads import threads_for_day
from ai_pipeline.settings import Settings
from ai_pipeline.sources import load_sources

# The slow tier (not in `make test-fast`): every day of the real trees.
pytestmark = pytest.mark.slow

ARRIVAL = date(2023, 1, 1)  # before every message: each one reaches its own day (an import of history)


@pytest.fixture(scope="module")
def lane(shared_data, tmp_path_factory):
    sources = {s.name: s for s in load_sources()}
    root = tmp_path_factory.mktemp("landing")
    read = {}
    for name, path in [
        ("chat_messages", shared_data / "llm" / "oasst2_trees.jsonl"),
        ("transcript_pairs", shared_data / "llm" / "hh_rlhf_harmless_test.jsonl.gz"),
    ]:
        source = sources[name]
        folder = root / source.folder / ARRIVAL.isoformat()
        folder.mkdir(parents=True)
        shutil.copy(path, folder / path.name)
        (folder / COMPLETION_MARKER).touch()
        landed = read_landing_day(
            root,
            source.folder,
            ARRIVAL,
            source.contract_model,
            source=name,
            ingested_at=datetime.now(UTC),
            mapping=source.mapping,
            options=source.read_options,
        )
        read[name] = (source, landed)
    return read


def _validated(source, raw: pl.DataFrame, key: str | None) -> tuple[pl.DataFrame, int]:
    routed = route(raw, source.contract_model, ingested_at=datetime.now(UTC), routing=Routing(10_000, ARRIVAL))
    valid, quarantined = [], 0
    for day in routed["_event_date"].unique().sort():
        today = routed.filter(pl.col("_event_date") == day)
        result = validate(today, source.contract_model, partition_day=day, unique_key=key)
        valid.append(result.valid)
        quarantined += result.quarantined.height
    return pl.concat(valid), quarantined


def test_every_message_of_the_real_trees_is_read_counted_and_placed(lane):
    source, landed = lane["chat_messages"]
    [report] = landed.files
    # 551 trees; 1,552 messages by their id keys in the text, 1,552 rows.
    assert (report.lines, report.records_counted, report.rows, report.uncounted) == (551, 1552, 1552, 0)
    valid, quarantined = _validated(source, landed.raw, "message_id")
    assert valid.height + quarantined == 1552
    assert valid.height == 1448  # 52 deleted, 52 duplicates of trees exported twice
    messages = valid
    threads, rejected, written = [], 0, 0
    for day in messages["created_at"].dt.date().unique().sort():
        built = threads_for_day(messages, day)
        todays = set(messages.filter(pl.col("created_at").dt.date() == day)["message_id"])
        in_threads = set(built.threads["message_ids"].explode().to_list()) & todays
        assert todays == in_threads | set(built.rejected["message_id"]), day
        threads.append(built.threads)
        rejected += built.rejected.height
        written += built.messages
    assert written == 1448
    threads = pl.concat(threads)
    sft = sft_examples(threads, SftRecipe())
    assert sft.kept.height + sft.rejected.height == threads.height
    gated = Gates(SFT, EvalIndex(), GateConfig(), sft.kept.clear()).apply(sft.kept)
    assert gated.kept.height + gated.rejected.height == sft.kept.height
    assert gated.kept.height > 50 and all(len(m) >= 2 for m in gated.kept["messages"])
    prompts = messages.filter(pl.col("role") == "prompter")["message_id"]
    pairs = sibling_pairs(messages, prompts)
    assert pairs.kept.height + pairs.rejected.height == prompts.len()
    assert pairs.kept.height > 100
    print(
        f"threads {threads.height} ({rejected} rejected), sft {sft.kept.height} -> {gated.kept.height} "
        f"{dict(Counter(sft.rejected['rule']))} {dict(Counter(gated.rejected['rule']))}, pairs {pairs.kept.height}"
    )


def test_every_real_transcript_pair_is_read_and_becomes_a_pair_or_a_reason(lane):
    source, landed = lane["transcript_pairs"]
    [report] = landed.files
    assert report.rows == 2312 and report.unaccounted == 0
    valid, quarantined = _validated(source, landed.raw, None)
    assert valid.height + quarantined == 2312
    frame = valid.select("chosen", "rejected", (pl.col("_source_offset").cast(pl.String)).alias("item_id"))
    built = transcript_pairs(frame)
    assert built.kept.height + built.rejected.height == valid.height
    gated = Gates(PAIRS, EvalIndex(), GateConfig(), built.kept.clear()).apply(built.kept)
    assert gated.kept.height + gated.rejected.height == built.kept.height
    assert gated.pii_found["email"] >= 5  # red-teaming asks for addresses: they are scrubbed
    for pair in gated.kept.iter_rows(named=True):
        assert pair["prompt"][-1]["role"] == "user" and pair["chosen"] != pair["rejected"]
    print(
        f"transcripts {valid.height}: pairs {gated.kept.height}, {dict(Counter(built.rejected['rule']))}, "
        f"{dict(Counter(gated.rejected['rule']))}, pii {dict(gated.pii_found)}"
    )


def _messages(tree: dict) -> list[dict]:
    stack, found = [tree["prompt"]], []
    while stack:
        message = stack.pop()
        found.append(message)
        stack.extend(message.get("replies") or [])
    return found


def test_real_trees_and_transcript_pairs_flow_through_the_training_data_job_to_a_release(
    shared_data, tmp_path, monkeypatch
):
    """A bulk export of real trees (those written 2023-02-10..14) through `import-history`: the contract picks the
    training-data lane's job, and every message is valid or quarantined on its own day. Then the real transcript
    pairs, through the same job, to preference pairs and a release."""
    first, last = date(2023, 2, 10), date(2023, 2, 14)
    trees = []
    for line in (shared_data / "llm" / "oasst2_trees.jsonl").read_text().splitlines():
        days = {m["created_date"][:10] for m in _messages(json.loads(line))}
        if first.isoformat() <= min(days) and max(days) <= last.isoformat():
            trees.append(line)
    export = tmp_path / "oasst_2023-02.jsonl"
    export.write_text("\n".join(trees) + "\n")
    per_day = Counter(m["created_date"][:10] for tree in trees for m in _messages(json.loads(tree)))
    assert (len(trees), sum(per_day.values())) == (165, 196)

    settings = Settings(home=tmp_path / "home", start_date=first)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # import_history points it at the data root's
    assert import_history(settings, "chat_messages", [export]) == 0
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        placed = Counter()
        for table in ("validated_chat_messages", "quarantined_chat_messages"):
            for day, n in conn.execute(f"select partition_date, count(*) from {table} group by 1").fetchall():
                placed[day.isoformat()] += n
        assert conn.execute("select count(*) from conversations").fetchone()[0] > 0
    assert placed == per_day
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == [TRAINING_JOB] and runs[0].status == dg.DagsterRunStatus.SUCCESS
        tags = runs[0].tags
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
            first.isoformat(),
            last.isoformat(),
        )

    # The real transcript pairs land on the last day (they hold no time): the same job makes them preference pairs
    # and releases the preference set.
    hh = shared_data / "llm" / "hh_rlhf_harmless_test.jsonl.gz"
    with gzip.open(hh, "rt", encoding="utf-8") as f:
        lines = sum(1 for line in f if line.strip())
    folder = settings.landing / "transcript_pairs" / last.isoformat()
    folder.mkdir(parents=True)
    shutil.copy(hh, folder / hh.name)
    (folder / COMPLETION_MARKER).touch()
    [outcome] = run_days(settings, last, last, TRAINING_JOB)
    assert outcome.success and outcome.rows["transcript_pairs"]["in"] == lines == 2312, outcome
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        origins = dict(conn.execute("select origin, count(*) from preference_pairs group by 1").fetchall())
        pairs = conn.execute("select count(*) from preference_pairs").fetchone()[0]
    assert origins["transcript_pair"] > 1500
    # A release per content: the trees' sibling pairs day by day, then with the transcripts' pairs.
    found = releases(settings.releases, "preference_pairs")
    [release] = [r for r in found if r["rows"] == pairs]
    assert len(found) > 1 and all(r["rows"] < pairs for r in found if r is not release)
    assert (Path(release["path"]) / "data.parquet").is_file()
