"""The gates of the training-data lane on planted cases: personal data, evaluation overlap, duplicates."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest

from ai_pipeline.lib.llm import pii
from ai_pipeline.lib.llm.datasets import SFT_COLUMNS
from ai_pipeline.lib.llm.decontam import EvalIndex, build_index, eval_texts
from ai_pipeline.lib.llm.dedup import DuplicateIndex
from ai_pipeline.lib.llm.gates import SFT, GateConfig, Gates


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        ("write to jane.doe+work@example.co.uk today", "email", "jane.doe+work@example.co.uk"),
        ("llámame al +34 612 345 678", "phone", "+34 612 345 678"),
        ("call (555) 123-4567 now", "phone", "(555) 123-4567"),
        ("ruf 030 1234 5678 an", "phone", "030 1234 5678"),
        ("server at 192.168.1.20.", "ipv4", "192.168.1.20"),
        ("ping fe80::1ff:fe23:4567:890a please", "ipv6", "fe80::1ff:fe23:4567:890a"),
        ("card 4111 1111 1111 1111 expires", "card", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004", "card", "5500-0000-0000-0004"),
        ("IBAN DE89 3704 0044 0532 0130 00 bitte", "iban", "DE89 3704 0044 0532 0130 00"),
        ("SSN 123-45-6789 on file", "ssn", "123-45-6789"),
        ("SSN 509 02 5762 on file", "ssn", "509 02 5762"),
        ("请发邮件到maria.tanaka@company.io。", "email", "maria.tanaka@company.io"),  # no space before it
        ("请打电话020 7211 1968。", "phone", "020 7211 1968"),
        ("écrire à françois.rossi@mail.co.uk", "email", "françois.rossi@mail.co.uk"),
        ("call 1-800-977-0064 or", "phone", "1-800-977-0064"),
        ("call 872 855 8142 today", "phone", "872 855 8142"),
        ("appelez le 01.67.60.19.24", "phone", "01.67.60.19.24"),
        ("звоните 8 (495) 057-71-51", "phone", "8 (495) 057-71-51"),
        ("mobile 07576 715486 ok", "phone", "07576 715486"),
        ("llámame al 670 059 947 mañana", "phone", "670 059 947"),  # a Spanish number, no trunk prefix
        ("我的手机13512077375，谢谢", "phone", "13512077375"),  # a Chinese mobile, 11 digits in one run
        ("from ::ffff:150.216.102.42 today", "ipv6", "::ffff:150.216.102.42"),
        ("link-local fe80::751 only", "ipv6", "fe80::751"),
        ("card 4111 1111 1111 1111 2 tsp", "card", "4111 1111 1111 1111"),  # a number after it
        ("IBAN BE36640250290265 I do", "iban", "BE36640250290265"),  # a short word after it
    ],
)
def test_each_kind_of_personal_data_is_found(text, kind, found):
    assert [(f.kind, f.text) for f in pii.find(text)] == [(kind, found)]


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 the price rose to 1,234.56 euros on 2023-05-02 at 12:30:45.",
        "Version 1.2.3.4.5 of the ISBN 978-3-16-148410-0 book, pi is 3.14159, ratio 16:9.",
        "Card-like but not Luhn: 4111 1111 1111 1112; IBAN-like with wrong digits: DE00 3704 0044 0532 0130 00.",
        "An address that is not one: 999.1.1.1, and dead:beef:cafe is no IPv6 address.",
        "The answer is 42 and the order number is 12345678.",
        "Dates 05.12.2023 and 05-12-2023, the years 2023 2024 2025 2026, a loopback ::1 and 12:30:45.",
        "Ids X4111111111111111 and a list 120 150 180 200 250 300.",
        "La ciudad tiene 700 000 000 de litros; el censo de 2021 contó 12345678901 registros.",
    ],
)
def test_numbers_that_are_not_personal_data_are_left_alone(text):
    assert pii.find(text) == []


def test_scrubbing_replaces_each_find_with_its_placeholder_and_counts_it():
    text, counts = pii.scrub("Mail a@b.io or b@c.io, call +1 415 555 0100.")
    assert text == "Mail <EMAIL> or <EMAIL>, call <PHONE>."
    assert counts == {"email": 2, "phone": 1}


def test_an_evaluation_item_is_found_inside_a_longer_text_whatever_the_case_and_punctuation():
    index = EvalIndex()
    index.add("Which NFL team represented the AFC at Super Bowl 50?", "squad")  # 10 words: counts whole
    index.add("What is the capital of France?", "short")  # 6 words: too generic to tell a copy
    long_item = "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire"
    index.add(long_item, "long")
    assert (index.items, index.skipped) == (2, 1)
    assert index.match("Quiz: which nfl team represented the AFC at Super-Bowl 50 ? Answer below.") == (
        "squad",
        "which nfl team represented the afc at super bowl 50",
    )
    assert index.match("Tell me: what is the capital of France?") is None
    assert index.match("so the quick brown fox jumps over the lazy dog while the cat sleeps by the door")[0] == "long"
    assert index.match("the quick brown fox jumps over the lazy dog while the dog sleeps") is None


def test_evaluation_sets_are_read_in_every_format(tmp_path):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"questions": [{"question": "Q one?", "gold": []}]}))
    lines = tmp_path / "eval.jsonl"
    lines.write_text(json.dumps({"prompt": "P", "answers": [{"text": "A"}]}) + "\n")
    plain = tmp_path / "eval.txt"
    plain.write_text("first item\n\nsecond item\n")
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["x", {"text": "y"}]))
    assert eval_texts(golden) == ["Q one?"]
    assert eval_texts(lines) == ["P", "A"]
    assert eval_texts(plain) == ["first item", "second item"]
    assert eval_texts(listed) == ["x", "y"]
    assert build_index([("g", golden)]).skipped == 1


BASE = (
    "Water moves from the roots to the leaves through the xylem, pulled by the evaporation of water from "
    "small pores in the leaves called stomata, a process named transpiration."
)


def test_exact_and_near_duplicates_are_told_apart_from_different_texts():
    index = DuplicateIndex()
    found = index.first_seen(
        ["a", "b", "c", "d"],
        [
            BASE,
            "  " + BASE.upper() + "!",  # the same text after normalization
            BASE.replace("small pores", "tiny pores"),  # one word changed
            "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in the chloroplasts.",
        ],
    )
    assert found[0] is None and found[3] is None
    assert (found[1].kind, found[1].of) == ("exact", "a")
    assert (found[2].kind, found[2].of) == ("near", "a") and 0.8 <= found[2].similarity < 1


def _examples(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "example_id": eid,
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
                "conversation_id": "c",
                "lang": "en",
                "turns": 2,
            }
            for eid, prompt, reply in rows
        ],
        schema=SFT_COLUMNS,
    )


def test_the_gates_drop_what_repeats_earlier_days_and_drop_personal_data_when_asked():
    earlier = _examples([("e0", "How do plants drink?", BASE)]).with_columns(partition_date=pl.lit(date(2024, 1, 1)))
    candidates = _examples(
        [
            ("e1", "Where does the water go?", BASE),  # repeats an earlier day's reply
            ("e2", "Call me at +44 20 7946 0958, please", "I cannot call anyone, but I can answer here."),
            ("e3", "What is photosynthesis?", "Plants turn light into sugar in their chloroplasts, all day long."),
        ]
    )
    scrubbed = Gates(SFT, EvalIndex(), GateConfig(), earlier).apply(candidates)
    assert scrubbed.kept["example_id"].to_list() == ["e2", "e3"]
    assert scrubbed.kept["messages"][0][0]["content"] == "Call me at <PHONE>, please"
    assert scrubbed.rejected.to_dicts() == [
        {"item_id": "e1", "rule": "duplicate_reply", "reason": "exact duplicate reply of e0 (similarity 1.0)"}
    ]
    assert scrubbed.pii_found == {"phone": 1} and scrubbed.duplicates == {"exact": 1}
    dropped = Gates(SFT, EvalIndex(), GateConfig(pii="drop"), earlier.clear()).apply(candidates)
    assert dropped.kept["example_id"].to_list() == ["e1", "e3"]
    assert dropped.rejected.to_dicts() == [{"item_id": "e2", "rule": "pii", "reason": "personal data: {'phone': 1}"}]
    with pytest.raises(ValueError, match="pii: 'mask' is not one of"):
        GateConfig(pii="mask")


def test_a_days_kept_rows_are_what_the_next_day_of_the_run_must_not_repeat():
    gate = Gates(SFT, EvalIndex(), GateConfig(), _examples([]).with_columns(partition_date=pl.lit(date(2024, 1, 1))))
    first = gate.apply(_examples([("d1-a", "How do plants drink?", BASE), ("d1-b", "How do plants drink?", "No.")]))
    assert first.kept["example_id"].to_list() == ["d1-a"]
    second = gate.apply(
        _examples([("d2-a", "how do plants drink", "Through roots."), ("d2-b", "Why is the sky blue?", BASE + "!")])
    )
    assert second.kept.height == 0
    assert second.rejected.to_dicts() == [
        {"item_id": "d2-a", "rule": "duplicate_prompt", "reason": "exact duplicate prompt of d1-a (similarity 1.0)"},
        {"item_id": "d2-b", "rule": "duplicate_reply", "reason": "exact duplicate reply of d1-a (similarity 1.0)"},
    ]
