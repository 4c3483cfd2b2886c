"""The training-data lane through Dagster: landing trees and transcript pairs -> validated -> threads -> datasets.

Planted: a deleted reply, a blank one, an unknown language, an unreadable line, an orphan, a conversation started
by the assistant, ranked siblings, a transcript pair whose replies say the same, a golden question copied into a
prompt, a question asked twice, an e-mail address in a reply. Every count is written out.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import (
    CONSERVATION_CHECK,
    DECONTAMINATION_CHECK,
    DUPLICATE_RATE_CHECK,
    EMPTY_MESSAGES_CHECK,
    FILES_CHECK,
    LLM_RELEASES,
    PAIRS_ACCOUNTED_CHECK,
    PAIRS_VALID_CHECK,
    PII_CHECK,
    SFT_ACCOUNTED_CHECK,
    THREADED_CHECK,
)
from ai_pipeline.settings import Settings
from ai_pipeline_tests.conftest import landing_zone

# The slow tier (not in `make test-fast`): the lane's Dagster runs.
pytestmark = pytest.mark.slow

DAY = date(2024, 5, 2)
AT = "2024-05-02T{:02d}:00:00.000001+00:00"
LANE = [
    "raw_chat_messages",
    "raw_transcript_pairs",
    "validated_chat_messages",
    "quarantined_chat_messages",
    "validated_transcript_pairs",
    "quarantined_transcript_pairs",
    "conversations",
    "conversation_rejects",
    "sft_dataset",
    "sft_rejects",
    "preference_pairs",
    "preference_kto",
    "preference_rejects",
]


def _m(mid: str, role: str, text: str, hour: int, replies=(), lang: str = "en", **extra) -> dict:
    return {
        "message_id": mid,
        "parent_id": None,  # the tree says it; the reader keeps what the export holds
        "role": role,
        "text": text,
        "lang": lang,
        "created_date": AT.format(hour),
        "deleted": False,
        "replies": list(replies),
        **extra,
    }


def _tree(tree_id: str, root: dict) -> str:
    def parents(message: dict, parent: str | None) -> None:
        message["parent_id"] = parent
        for reply in message["replies"]:
            parents(reply, message["message_id"])

    parents(root, None)
    return json.dumps({"message_tree_id": tree_id, "tree_state": "ready_for_export", "prompt": root})


TREES = [
    _tree(
        "t1",
        _m(
            "p1",
            "prompter",
            "How do plants drink water from the soil?",
            8,
            [
                _m(
                    "a1",
                    "assistant",
                    "Through their roots, by osmosis and capillary action.",
                    9,
                    [
                        _m(
                            "f1",
                            "prompter",
                            "And how does it reach the leaves?",
                            10,
                            [_m("a3", "assistant", "Through the xylem, pulled up by evaporation from the leaves.", 11)],
                        )
                    ],
                    rank=0,
                    labels={"quality": {"value": 0.8, "count": 3}},
                ),
                _m("a2", "assistant", "They just do it somehow, like magic does.", 9, rank=1),
                _m("d1", "assistant", "A reply its author deleted.", 9, deleted=True),
                _m("e1", "assistant", "   ", 9),
            ],
        ),
    ),
    _tree("t2", _m("p2", "prompter", "Une question ?", 12, [_m("a4", "assistant", "Une réponse.", 13)], lang="xx")),
    _tree("t3", _m("r3", "assistant", "I start the conversation myself, which I should not.", 14)),
    "not json {",
    # A golden question of the project's documents (docs/golden_questions.json) copied into a prompt.
    _tree(
        "t4",
        _m(
            "q4",
            "prompter",
            "How do I add my own folder of documents as a new collection?",
            15,
            [_m("r4", "assistant", "Declare it in AI_PIPELINE_DOC_SOURCES and the sensor picks it up.", 16, rank=0)],
        ),
    ),
    # The same question twice; the first answer holds an e-mail address.
    _tree(
        "t5",
        _m(
            "q5",
            "prompter",
            "What is the best way to learn to cook at home?",
            15,
            [
                _m(
                    "r5",
                    "assistant",
                    "Start with simple recipes, and write to chef.anna@example.org for more.",
                    16,
                    rank=0,
                )
            ],
        ),
    ),
    _tree(
        "t6",
        _m(
            "q6",
            "prompter",
            "What is the best way to learn to cook at home ?",
            15,
            [_m("r6", "assistant", "Cook every day and taste everything as you go along.", 16, rank=0)],
        ),
    ),
]
SHARED = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke"
PAIRS = [
    {
        # A stub chosen over a refusal: a pair, but a reply no release may teach.
        "chosen": SHARED + "\n\nAssistant: Sure!",
        "rejected": SHARED + "\n\nAssistant: No.",
    },
    {"chosen": SHARED + "\n\nAssistant: No.", "rejected": SHARED + "\n\nAssistant: no"},
]


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("home"), start_date=date(2024, 5, 1))
    for folder, name, lines in [("chat_trees", "trees.jsonl", TREES), ("transcript_pairs", "pairs.jsonl", PAIRS)]:
        day = settings.landing / folder / DAY.isoformat()
        day.mkdir(parents=True)
        (day / name).write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
        (day / "_SUCCESS").touch()
    defs = build_defs(settings, landing_zone(settings))
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(
        partition_key=DAY.isoformat(),
        instance=instance,
        asset_selection=[dg.AssetKey(name) for name in [*LANE, LLM_RELEASES]],
        raise_on_error=False,
    )
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        tables = {name: conn.execute(f"select * from main.{name}").pl() for name in LANE}
    again = job.execute_in_process(
        partition_key=DAY.isoformat(),
        instance=instance,
        asset_selection=[dg.AssetKey(LLM_RELEASES)],
        raise_on_error=False,
    )
    return result, tables, settings, again


def test_every_step_succeeds_and_every_check_passes(lane):
    result, *_ = lane
    # The preference sets are not released (test_releases_are_named_by_content_... says why); the run succeeds.
    assert result.success
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    for key in [
        ("raw_chat_messages", FILES_CHECK),
        ("validated_chat_messages", CONSERVATION_CHECK),
        ("validated_transcript_pairs", CONSERVATION_CHECK),
        ("conversations", THREADED_CHECK),
        ("sft_dataset", SFT_ACCOUNTED_CHECK),
        ("preference_pairs", PAIRS_ACCOUNTED_CHECK),
        ("preference_pairs", PAIRS_VALID_CHECK),
    ]:
        assert evaluations[key].passed, (key, evaluations[key].description)
    assert evaluations[("raw_chat_messages", FILES_CHECK)].description == "1 files read, 17 records"
    assert evaluations[("conversations", THREADED_CHECK)].description == (
        "13 messages of the day: 11 in 5 threads, 2 rejected"
    )
    for asset in ("sft_dataset", "preference_pairs"):
        for check in (PII_CHECK, DECONTAMINATION_CHECK, EMPTY_MESSAGES_CHECK, DUPLICATE_RATE_CHECK):
            assert (asset, check) in evaluations, (asset, check)
    sft_pii = evaluations[("sft_dataset", PII_CHECK)]
    assert sft_pii.passed and sft_pii.metadata["found_email"].value == 1 and sft_pii.metadata["left"].value == 0
    # One of the three examples that reached deduplication repeated another's prompt: 33%, above the 5% limit.
    duplicates = evaluations[("sft_dataset", DUPLICATE_RATE_CHECK)]
    assert not duplicates.passed and duplicates.severity == dg.AssetCheckSeverity.WARN
    assert duplicates.description == "1 of 3 rows were duplicates (33.3%; limit 5%)"


def test_messages_are_quarantined_with_their_reasons(lane):
    _, tables, *_ = lane
    assert sorted(tables["validated_chat_messages"]["message_id"]) == [
        *["a1", "a2", "a3", "a4", "f1", "p1", "q4", "q5", "q6", "r3", "r4", "r5", "r6"]
    ]
    reasons = {
        row["message_id"]: {(r["field"], r["rule"]) for r in row["reasons"]}
        for row in tables["quarantined_chat_messages"].iter_rows(named=True)
    }
    assert reasons == {
        "d1": {("deleted", "false")},
        "e1": {("text", "pattern")},
        "p2": {("lang", "pattern")},
        None: {("_record", "read_error")},
    }
    a1 = tables["validated_chat_messages"].filter(message_id="a1").row(0, named=True)
    assert (a1["conversation_id"], a1["parent_id"], a1["rank"], a1["quality"]) == ("t1", "p1", 0, 0.8)


def test_threads_and_rejects(lane):
    _, tables, *_ = lane
    threads = {row["thread_id"]: row["message_ids"] for row in tables["conversations"].iter_rows(named=True)}
    assert threads == {
        "a2": ["p1", "a2"],
        "a3": ["p1", "a1", "f1", "a3"],
        "r4": ["q4", "r4"],
        "r5": ["q5", "r5"],
        "r6": ["q6", "r6"],
    }
    rejects = {row["message_id"]: row["rule"] for row in tables["conversation_rejects"].iter_rows(named=True)}
    assert rejects == {"a4": "orphan", "r3": "role_alternation"}


def test_the_sft_set_and_its_rejects(lane):
    _, tables, *_ = lane
    sft = tables["sft_dataset"].sort("example_id")
    assert sft["example_id"].to_list() == ["a3", "r5"]
    assert [turn["role"] for turn in sft["messages"][0]] == ["user", "assistant", "user", "assistant"]
    assert sft["messages"][1][1]["content"] == "Start with simple recipes, and write to <EMAIL> for more."
    rejects = {row["item_id"]: (row["rule"], row["reason"]) for row in tables["sft_rejects"].iter_rows(named=True)}
    assert rejects == {
        "a2": ("rank", "a reply ranked 1 among its siblings (at most 0)"),
        "r4": (
            "contaminated",
            "shares 'how do i add my own folder of documents as a new collection' with the evaluation set "
            "project_docs_golden",
        ),
        "r6": ("duplicate_prompt", "exact duplicate prompt of r5 (similarity 1.0)"),  # "home?" and "home ?"
    }


def test_preference_pairs_kto_and_rejects(lane):
    _, tables, *_ = lane
    pairs = tables["preference_pairs"].sort("origin")
    assert pairs["origin"].to_list() == ["sibling_ranking", "transcript_pair"]
    ranked = pairs.row(0, named=True)
    assert ranked["chosen"][0]["content"].startswith("Through their roots")
    assert ranked["rejected"][0]["content"].startswith("They just do")
    assert tables["preference_kto"].height == 4 and tables["preference_kto"]["label"].sum() == 2
    assert sorted(tables["preference_rejects"]["rule"].to_list()) == ["identical_replies", *["one_ranked_reply"] * 3]


def test_releases_are_named_by_content_gated_by_their_rules_and_written_once(lane, monkeypatch, tmp_path):
    result, tables, settings, again = lane
    releases = [e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() == LLM_RELEASES]
    verdicts = {e.check_name: (e.passed, e.description) for e in releases}
    # One of the two chosen replies is one word ("Sure!"): the 5th percentile of their length is 1, below 3 words.
    assert verdicts["release_reply_length"] == (
        False,
        "preference_pairs: 5th percentile of reply length 1 words (at least 3); "
        "preference_kto: 5th percentile of reply length 1 words (at least 3)",
    )
    assert verdicts["release_not_empty"][0] and verdicts["release_label_balance"][0]
    published = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in again.get_asset_materialization_events()
    }[LLM_RELEASES]["published"].value
    assert published["preference_pairs"] is None and published["preference_kto"] is None
    found = list((settings.releases / "sft_dataset").iterdir())
    assert [p.name for p in found] == [published["sft_dataset"]]  # written once: the re-run found it
    folder = found[0]
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "data.jsonl").read_bytes()
    assert manifest["content_hash"] == hashlib.sha256(data).hexdigest() and manifest["rows"] == 2
    assert manifest["content_hash"].startswith(folder.name)
    assert manifest["partitions"]["rows_by_day"] == {DAY.isoformat(): 2}
    assert manifest["upstream"]["runs_by_partition"] == {DAY.isoformat(): result.run_id}
    assert manifest["upstream"]["settings"][0]["recipe"]["min_response_words"] == 5
    assert manifest["thresholds"]["near_duplicate_jaccard"] == 0.8
    assert manifest["thresholds"]["evaluation_overlap_words"] == 13
    table = pq.read_table(folder / "data.parquet")
    assert table.num_rows == 2 and table.column_names == ["example_id", "messages", "conversation_id", "lang", "turns"]
    assert table.column("messages").to_pylist() == tables["sft_dataset"].sort("example_id")["messages"].to_list()
    # Hugging Face's own parquet loader reads the release, offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    loaded = load_dataset(
        "parquet", data_files=str(folder / "data.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.num_rows == 2 and loaded.column_names == table.column_names
    assert loaded[0]["messages"] == table.column("messages").to_pylist()[0]
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["dataset_info"]["splits"] == [{"name": "train", "num_examples": 2}]
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "data.parquet"}]
