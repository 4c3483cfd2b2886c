"""The training-data lane's domain core on planted cases: trees read line by line, threads, SFT filters, pairs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import polars as pl

from ai_pipeline.lib.ingest.formats import TreeShape, read_jsonl
from ai_pipeline.lib.ingest.trees import counted_messages, flatten_trees
from ai_pipeline.lib.ingest.validation import vectorized_decisions
from ai_pipeline.lib.llm.contracts import ChatMessage, Feedback
from ai_pipeline.lib.llm.datasets import (
    SftRecipe,
    kto_rows,
    sft_examples,
    sibling_pairs,
    transcript_pairs,
    transcript_turns,
    word_count,
)
from ai_pipeline.lib.llm.threads import threads_for_day

SHAPE = TreeShape(children="replies", id="message_id", root="prompt", inherit=("message_tree_id",))
DAY = date(2024, 5, 2)


def _message(mid: str, role: str, text: str, replies=(), **extra) -> dict:
    return {"message_id": mid, "role": role, "text": text, "replies": list(replies), **extra}


def test_a_tree_a_line_becomes_a_row_per_message_counted_independently():
    tree = {
        "message_tree_id": "t1",
        "prompt": _message(
            "m1",
            "prompter",
            'How do I write {"message_id": 1} in JSON?',  # the key inside a text is not a message
            [
                _message("m2", "assistant", "Like that.", labels={"quality": {"value": 0.75, "count": 3}}),
                _message("m3", "assistant", "Quote it.", [_message("m4", "prompter", "Thanks")]),
            ],
        ),
    }
    text = "\n".join([json.dumps(tree), "not json {", json.dumps({"message_tree_id": "t2", "prompt": None})]) + "\n"
    records = flatten_trees(read_jsonl(text, "mem://trees.jsonl"), SHAPE, "mem://trees.jsonl")
    assert records.counted == 4 + 1 + 1 and records.rows == 6 and records.uncounted == 0 and records.unaccounted == 0
    frame = records.frame
    assert frame["message_id"].to_list() == ["m1", "m2", "m3", "m4", None, None]  # depth first, siblings in order
    assert frame["message_tree_id"].to_list()[:4] == ["t1"] * 4
    assert frame["labels.quality.value"].to_list()[1] == "0.75"
    assert records.offsets == [1, 1, 1, 1, 2, 3] and records.spans == [1, 0, 0, 0, 1, 1]
    assert records.read_errors[4].startswith("mem://trees.jsonl line 2: invalid JSON")
    assert records.read_errors[5] == "mem://trees.jsonl line 3: no message under 'prompt'"
    assert counted_messages(json.dumps(tree), SHAPE) == 4 and counted_messages("not json {", SHAPE) == 0


def test_the_contracts_decide_alike_in_both_paths():
    base = {
        "message_id": "m1",
        "conversation_id": "c1",
        "role": "prompter",
        "text": "Hi there",
        "lang": "en",
        "created_at": "2024-05-02T10:00:00Z",
    }
    rows = [
        base,
        base | {"text": " \n\t "},
        base | {"lang": "xx"},
        base | {"lang": "bar"},  # Bavarian: a three-letter code
        base | {"lang": "pt-BR", "deleted": "true"},
        base | {"deleted": "False", "quality": "0.6666666666666666", "rank": "0"},
        base | {"quality": "1.5", "role": "user", "rank": "-1"},
        base | {"deleted": "maybe"},
    ]
    expected = [
        set(),
        {"text"},
        {"lang"},
        set(),
        {"deleted"},
        set(),
        {"quality", "role", "rank"},
        {"deleted"},
    ]
    assert [set(d) for d in vectorized_decisions(ChatMessage, rows)] == expected
    from ai_pipeline.lib.ingest.validation import pydantic_decisions

    assert pydantic_decisions(ChatMessage, rows) == vectorized_decisions(ChatMessage, rows)
    feedback = {
        "feedback_id": "f1",
        "conversation_id": "c1",
        "message_id": "m2",
        "user_id": "u1",
        "created_at": "2024-05-02T10:00:00Z",
    }
    ratings = [feedback | {"rating": r} for r in ["1", "5", "0", "6", "4.5", None]]
    assert [set(d) for d in vectorized_decisions(Feedback, ratings)] == [set(), set(), *[{"rating"}] * 4]


def _messages(rows: list[tuple]) -> pl.DataFrame:
    """(id, parent, role, text, day, rank) in conversation c1."""
    return pl.DataFrame(
        [
            {
                "message_id": mid,
                "conversation_id": "c1",
                "parent_id": parent,
                "role": role,
                "text": text,
                "lang": "en",
                "created_at": datetime(2024, 5, day, 12, tzinfo=UTC),
                "rank": rank,
                "quality": None,
                "spam": None,
                "tree_state": "ready_for_export",
            }
            for mid, parent, role, text, day, rank in rows
        ],
        schema_overrides={"rank": pl.Int64, "quality": pl.Float64, "spam": pl.Float64, "parent_id": pl.String},
    )


TREE = _messages(
    [
        ("p1", None, "prompter", "How do plants drink water?", 1, None),
        ("a1", "p1", "assistant", "Through their roots, by osmosis and capillary action.", 1, 0),
        ("a2", "p1", "assistant", "They just do, it is magic or something like it.", 2, 1),
        ("f1", "a1", "prompter", "And how does it get to the leaves?", 2, None),
        ("x1", "p1", "prompter", "A prompter answering a prompter.", 2, None),  # roles do not alternate
        ("x2", "x1", "assistant", "Below a broken message.", 2, None),
        ("o1", "gone", "assistant", "Orphan reply to a deleted message.", 2, None),
        ("a2x", "a2", "assistant", "An assistant answering itself.", 2, None),  # a2 still ends a thread
        ("later", "f1", "assistant", "Through the xylem.", 3, None),  # written after the day
    ]
)


def test_threads_of_a_day_as_the_tree_stood_at_its_end_and_every_message_accounted_for():
    day = threads_for_day(TREE, DAY)
    assert sorted(day.threads["thread_id"].to_list()) == ["a2", "f1"]
    f1 = day.threads.filter(pl.col("thread_id") == "f1").row(0, named=True)
    assert f1["message_ids"] == ["p1", "a1", "f1"] and f1["roles"] == ["prompter", "assistant", "prompter"]
    rejected = {r["message_id"]: r["rule"] for r in day.rejected.iter_rows(named=True)}
    assert rejected == {"x1": "role_alternation", "x2": "below_rejected", "o1": "orphan", "a2x": "role_alternation"}
    assert day.messages == 6  # a2, f1, x1, x2, o1, a2x were written on May 2nd
    # On May 1st, a1 had no reply yet: it ended a thread then.
    assert threads_for_day(TREE, date(2024, 5, 1)).threads["thread_id"].to_list() == ["a1"]


def test_sft_keeps_threads_that_pass_every_filter_and_says_why_it_drops_the_others():
    day1, day2 = threads_for_day(TREE, date(2024, 5, 1)), threads_for_day(TREE, DAY)
    built = sft_examples(pl.concat([day1.threads, day2.threads]), SftRecipe())
    assert built.kept["example_id"].to_list() == ["a1"]
    assert built.kept["messages"].to_list()[0] == [
        {"role": "user", "content": "How do plants drink water?"},
        {"role": "assistant", "content": "Through their roots, by osmosis and capillary action."},
    ]
    assert dict(zip(built.rejected["item_id"], built.rejected["rule"], strict=True)) == {
        "a2": "rank",
        "f1": "ends_with_prompter",
    }
    assert built.kept.height + built.rejected.height == day1.threads.height + day2.threads.height
    strict = sft_examples(day1.threads, SftRecipe(min_response_words=20, languages=("de",)))
    assert strict.rejected["rule"].to_list() == ["language"]


def test_word_counts_treat_ideographs_as_words():
    assert word_count("Water moves up the xylem") == 5
    assert word_count("水分通过木质部") == 7
    assert word_count(" \n ") == 0


def test_sibling_pairs_best_against_worst_with_reasons_for_the_rest():
    messages = pl.concat(
        [
            TREE,
            _messages(
                [
                    ("p2", None, "prompter", "Tied question?", 1, None),
                    ("t1", "p2", "assistant", "One answer.", 1, 0),
                    ("t2", "p2", "assistant", "Another answer.", 1, 0),
                    ("p3", None, "prompter", "Same answers?", 1, None),
                    ("s1", "p3", "assistant", "Yes.", 1, 0),
                    ("s2", "p3", "assistant", "  yes!", 1, 1),
                ]
            ),
        ]
    )
    built = sibling_pairs(messages, ["p1", "p2", "p3", "f1", "gone"])
    pair = built.kept.row(0, named=True)
    assert built.kept.height == 1 and pair["source_id"] == "p1" and pair["origin"] == "sibling_ranking"
    assert pair["prompt"] == [{"role": "user", "content": "How do plants drink water?"}]
    assert pair["chosen"][0]["content"].startswith("Through their roots")
    assert pair["rejected"][0]["content"].startswith("They just do")
    assert dict(zip(built.rejected["item_id"], built.rejected["rule"], strict=True)) == {
        "f1": "one_ranked_reply",
        "gone": "one_ranked_reply",
        "p2": "tied_ranks",
        "p3": "identical_replies",
    }
    again = sibling_pairs(messages.sample(fraction=1.0, shuffle=True, seed=3), ["p3", "p1", "f1", "p2", "gone"])
    assert again.kept.equals(built.kept) and again.rejected.equals(built.rejected)  # deterministic
    kto = kto_rows(built.kept)
    assert kto["label"].to_list() == [True, False] and kto["completion"][0].to_list() == pair["chosen"]


def test_transcript_pairs_split_into_a_shared_prompt_and_two_replies():
    shared = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke"
    rows = [
        ("ok", shared + "\n\nAssistant: Why did the chicken cross the road?", shared + "\n\nAssistant: No."),
        ("same", shared + "\n\nAssistant: No.", shared + "\n\nAssistant: no"),
        ("apart", shared + "\n\nAssistant: A.", "\n\nHuman: Bye\n\nAssistant: B."),
        ("prose", "Just some text", shared + "\n\nAssistant: B."),
        ("human_last", shared, shared + "\n\nAssistant: B."),
    ]
    pairs = pl.DataFrame(rows, schema=["item_id", "chosen", "rejected"], orient="row")
    built = transcript_pairs(pairs)
    assert built.kept["source_id"].to_list() == ["ok"]
    pair = built.kept.row(0, named=True)
    assert [t["role"] for t in pair["prompt"]] == ["user", "assistant", "user"]
    assert pair["prompt"][-1]["content"] == "Tell me a joke" and pair["rejected"][0]["content"] == "No."
    assert dict(zip(built.rejected["item_id"], built.rejected["rule"], strict=True)) == {
        "apart": "different_prompts",
        "human_last": "ends_with_human",
        "prose": "not_a_dialogue",
        "same": "identical_replies",
    }
    assert transcript_turns("\n\nAssistant: hi") is None
