"""Sample training-data sources for a fresh clone: conversation trees, transcript pairs and ratings, with dirt.

Per day, `conversations` trees in OpenAssistant's export shape (`<landing>/chat_trees/<day>/trees.jsonl`): a
question, two or three replies (the first good and well labelled, the others poor), sometimes a follow-up turn;
volunteers rank the replies of half of them, users rate (1-5) the replies of the other half, written into the
feedback store as the service would (the good reply 4-5, a poor one 1-2); and transcript pairs in HH-RLHF's shape
from conversations of their own (`<landing>/transcript_pairs/<day>/pairs.jsonl`).

Dirt, in about `dirty_rate` of the conversations, one kind each in turn (`DIRT`): a blank reply, a deleted reply, an
unknown language, two prompter messages in a row, a reply to a message that does not exist, an unreadable line, a
tree exported twice, a question asked again in other words, personal data in a reply, an evaluation question copied
into a prompt, a stub reply; among the pairs, identical replies and a transcript that is not a dialogue; among the
ratings, one out of range (written by a client that skipped the service's validation).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from ai_pipeline.lib.ingest.landing import COMPLETION_MARKER

DIRT = (
    "blank_reply",
    "deleted_reply",
    "unknown_language",
    "broken_alternation",
    "orphan",
    "unreadable_line",
    "duplicate_tree",
    "reworded_question",
    "personal_data",
    "contaminated_prompt",
    "stub_reply",
)
TOPICS = {
    "cooking": ("cook rice so it does not stick", "make a simple tomato sauce", "keep fresh herbs longer"),
    "gardening": ("grow tomatoes on a balcony", "know when to water succulents", "start a compost heap"),
    "travel": ("pack light for a week away", "avoid jet lag on long flights", "find quiet places in a busy city"),
    "programming": ("read a large CSV file in Python", "write a good commit message", "learn SQL joins"),
    "fitness": ("start running without injuries", "stretch after sitting all day", "build a morning routine"),
    "money": ("save for a holiday", "track monthly spending", "understand compound interest"),
}
OPENERS = ("How can I", "What is the best way to", "Could you explain how to", "Any tips on how to")
CONTEXTS = (
    "I am a complete beginner",
    "I only have {n} minutes a day",
    "I live in a small flat in {city}",
    "my budget is about {n} euros",
    "I tried twice and it went wrong both times",
    "my friend in {city} recommended asking here",
    "I want to teach it to my kids",
    "I need it done before {weekday}",
)
# How a good reply picks up each context (same order as CONTEXTS).
TAILORED = (
    "Since you are starting out, keep it simple:",
    "With so little time each day, focus on what matters most:",
    "In a small space you can still do it well:",
    "On that budget there is no need for special equipment:",
    "After two tries, it helps to change the method rather than try harder:",
    "Your friend was right that it is easier than it looks:",
    "Children learn this best by doing it with you:",
    "With a deadline, plan backwards from the day:",
)
CITIES = ("Lisbon", "Leeds", "Osaka", "Denver", "Krakow", "Lyon", "Austin", "Turin", "Bergen", "Quito")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ADVICE = {
    "cooking": (
        "rinse and measure everything before you turn on the stove",
        "gentle heat gives better results than high heat",
        "taste as you go and season in small amounts",
        "a heavy pan spreads the heat evenly",
        "let the dish rest for a few minutes before serving",
        "write down what you changed so you can repeat it",
        "a sharp knife is safer than a blunt one",
        "prepare the slow ingredients first and the quick ones last",
        "keep a damp towel under the board so it does not slide",
        "salt the water well when you boil pasta or grains",
        "fresh herbs go in at the end, dried ones early",
        "clean as you cook so the kitchen stays calm",
    ),
    "gardening": (
        "choose a sunny spot and a pot with drainage holes",
        "water in the morning so the roots stay healthy",
        "feed the soil with compost rather than strong fertiliser",
        "check the leaves every few days for pests",
        "mulch keeps the moisture in during hot weeks",
        "start with two or three plants, not twenty",
        "push a finger into the soil to feel whether it is dry",
        "turn the heap every couple of weeks to let air in",
        "mix brown material such as leaves with green kitchen scraps",
        "support tall plants with a stake before they lean",
        "remove yellow leaves so the plant spends energy on new growth",
        "keep a notebook of sowing dates and harvests",
    ),
    "travel": (
        "lay everything out first and remove a third of it",
        "sleep on the local schedule from the first night",
        "keep documents and chargers in one small pouch",
        "walk early in the morning before the crowds arrive",
        "drink water on the plane and skip the second coffee",
        "pick one neighbourhood and explore it properly",
        "clothes that mix and match halve what you carry",
        "a short nap on arrival should last under thirty minutes",
        "museums are quietest just before closing time",
        "daylight in the morning resets the body clock fastest",
        "roll clothes instead of folding them to save space",
        "parks and libraries are calm places to rest between visits",
    ),
    "programming": (
        "read the documentation and try a tiny example first",
        "work in small steps so errors are easy to find",
        "stream the file in chunks instead of loading it at once",
        "write the reason for a change, not only what changed",
        "draw the two tables and the key that links them",
        "run the code often and read the error messages closely",
        "a library such as Polars reads large files quickly",
        "keep the first line of a commit message under fifty characters",
        "practise joins on two tiny tables you can check by hand",
        "version control lets you undo a bad idea safely",
        "print the shape of the data after each step",
        "ask for a review before merging anything large",
    ),
    "fitness": (
        "warm up for five minutes before you begin",
        "rest days matter as much as training days",
        "increase the distance by no more than a tenth each week",
        "stand up and stretch your hips every hour",
        "keep the same wake-up time, weekends included",
        "track how you feel, not only the numbers",
        "good shoes prevent more injuries than any exercise",
        "alternate running and walking for the first weeks",
        "a glass of water first thing helps you wake up",
        "roll your shoulders back when you sit at a desk",
        "plan the routine the evening before",
        "sleep is when the muscles actually recover",
    ),
    "money": (
        "write down a goal and a date you want to reach it by",
        "automatic transfers on payday make saving effortless",
        "look at the last three months to see where money goes",
        "small regular amounts grow faster than you expect",
        "keep a separate account for the goal",
        "review the plan once a month and adjust it",
        "interest earns interest, which is why starting early matters",
        "a simple spreadsheet with categories is enough",
        "cancel subscriptions you have not used in a month",
        "compare prices for large purchases over a few days",
        "keep an emergency fund before investing",
        "round up purchases and save the difference",
    ),
}
POOR = (
    "Just try something and see what happens.",
    "It depends, it could work or not.",
    "Nobody really knows, I guess you could search online.",
    "Maybe ask someone else about that.",
)
FOLLOW_UPS = ("Thanks! How long until I see results?", "What mistakes should I avoid?", "Is there a cheaper way?")
FOLLOW_ANSWERS = (
    "Usually within {n} days if you keep at it; write down what you do so you can see the progress over time.",
    "The most common mistake is doing too much at once; change one thing at a time and keep short notes.",
    "Yes: reuse what you already have, and start with the basic version before you buy anything new at all.",
)


@dataclass
class ChatDay:
    day: date
    trees: int = 0
    messages: int = 0
    pairs: int = 0
    ratings: int = 0
    dirt: list[str] = field(default_factory=list)


def _at(day: date, minutes: int) -> str:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes)
    return moment.isoformat().replace("+00:00", "Z")


def _message(mid: str, parent: str | None, role: str, text: str, day: date, minutes: int, **extra) -> dict:
    return {
        "message_id": mid,
        "parent_id": parent,
        "user_id": f"user-{zlib.crc32(mid.encode()) % 97}" if role == "prompter" else None,
        "created_date": _at(day, minutes),
        "text": text,
        "role": role,
        "lang": "en",
        "deleted": False,
        "rank": extra.pop("rank", None),
        "emojis": extra.pop("emojis", {}),
        "labels": extra.pop("labels", {}),
        "replies": [],
        **extra,
    }


def _fill(text: str, rng: np.random.Generator) -> str:
    return text.format(
        n=int(rng.integers(5, 95)),
        city=CITIES[int(rng.integers(len(CITIES)))],
        weekday=WEEKDAYS[int(rng.integers(len(WEEKDAYS)))],
    )


def _good_reply(topic: str, goal: str, context: int, rng: np.random.Generator) -> str:
    first, second = (ADVICE[topic][i] for i in rng.permutation(len(ADVICE[topic]))[:2])
    plan = (
        f"Plan {int(rng.integers(2, 6))} short sessions a week and look at your progress after "
        f"{int(rng.integers(7, 30))} days."
    )
    return f"{TAILORED[context]} to {goal}, {first}. {second[0].upper()}{second[1:]}. {plan}"


def _conversation(day: date, index: int, rng: np.random.Generator, ranked: bool = True) -> dict:
    topic = list(TOPICS)[int(rng.integers(len(TOPICS)))]
    goal = TOPICS[topic][int(rng.integers(3))]
    tree_id = f"c-{day:%Y%m%d}-{index:04d}"
    start = int(rng.integers(0, 20 * 60))
    first, second = (int(i) for i in rng.permutation(len(CONTEXTS))[:2])
    context = f"{_fill(CONTEXTS[first], rng)}, and {_fill(CONTEXTS[second], rng)}"
    question = f"{OPENERS[int(rng.integers(len(OPENERS)))]} {goal}? {context[0].upper()}{context[1:]}."
    root = _message(f"{tree_id}-q", None, "prompter", question, day, start)
    for rank in range(int(rng.integers(2, 4))):
        text = _good_reply(topic, goal, first, rng) if rank == 0 else POOR[int(rng.integers(len(POOR)))]
        quality = round(float(rng.uniform(0.7, 0.95) if rank == 0 else rng.uniform(0.2, 0.45)), 3)
        reply = _message(
            f"{tree_id}-r{rank}",
            root["message_id"],
            "assistant",
            text,
            day,
            start + 5 + rank,
            rank=rank if ranked else None,
            labels={"quality": {"value": quality, "count": 3}, "spam": {"value": 0.0, "count": 3}},
            emojis={"+1": int(rng.integers(0, 5))} if rank == 0 else {"-1": int(rng.integers(0, 3))},
        )
        root["replies"].append(reply)
    if rng.random() < 0.4:
        best = root["replies"][0]
        pick = int(rng.integers(len(FOLLOW_UPS)))
        follow = _message(f"{tree_id}-f", best["message_id"], "prompter", FOLLOW_UPS[pick], day, start + 20)
        tip = ADVICE[topic][int(rng.integers(len(ADVICE[topic])))]
        answer = f"{_fill(FOLLOW_ANSWERS[pick], rng)} One more thing for you: {tip}."
        follow["replies"].append(_message(f"{tree_id}-fa", follow["message_id"], "assistant", answer, day, start + 25))
        best["replies"].append(follow)
    return {"message_tree_id": tree_id, "tree_state": "ready_for_export", "prompt": root}


def _dirty(kind: str, tree: dict, day: date, contaminate_with: Sequence[str], asked: str | None) -> dict | str:
    root, replies = tree["prompt"], tree["prompt"]["replies"]
    if kind == "blank_reply":
        replies[-1]["text"] = "  \n "
    elif kind == "deleted_reply":
        replies[-1]["deleted"] = True
    elif kind == "unknown_language":
        root["lang"] = "xx"
    elif kind == "broken_alternation":
        parent = replies[-1]["message_id"]
        replies[-1]["replies"].append(_message(f"{parent}-x", parent, "assistant", "And one more thing.", day, 1400))
    elif kind == "orphan":
        replies[-1]["parent_id"] = root["message_id"] + "-missing"
    elif kind == "unreadable_line":
        return json.dumps(tree)[:-20]
    elif kind == "reworded_question" and asked:
        root["text"] = asked.replace("?", ", please?", 1)
    elif kind == "personal_data":
        replies[0]["text"] += " Write to me at jordan.miles@example.com or call +1 415 555 0134 for more."
    elif kind == "contaminated_prompt" and contaminate_with:
        root["text"] = contaminate_with[day.toordinal() % len(contaminate_with)]
    elif kind == "stub_reply":
        replies[-1]["text"] = "ok"
    return tree


def _transcript(tree: dict) -> dict | None:
    root = tree["prompt"]
    ranked = [r for r in root["replies"] if r["rank"] is not None]
    if len(ranked) < 2:
        return None
    best, worst = ranked[0], ranked[-1]
    prefix = f"\n\nHuman: {root['text']}"
    return {"chosen": f"{prefix}\n\nAssistant: {best['text']}", "rejected": f"{prefix}\n\nAssistant: {worst['text']}"}


def _ratings(tree: dict, day: date, rng: np.random.Generator) -> list[dict]:
    """Users' ratings of the first reply (the good one) and the last (a poor one)."""
    replies = tree["prompt"]["replies"]
    events = []
    for rater in range(int(rng.integers(1, 4))):
        for reply, good in ((replies[0], True), (replies[-1], False)):
            events.append(
                {
                    "conversation_id": tree["message_tree_id"],
                    "message_id": reply["message_id"],
                    "rating": str(int(rng.integers(4, 6) if good else rng.integers(1, 3))),
                    "text": None,
                    "user_id": f"rater-{rater}",
                    "created_at": _at(day, 23 * 60 + rater),
                }
            )
    return events


def generate(
    landing: Path,
    start: date,
    end: date,
    *,
    feedback_store=None,
    conversations: int = 40,
    seed: int = 42,
    dirty_rate: float = 0.05,
    contaminate_with: Sequence[str] = (),
) -> list[ChatDay]:
    """Writes the conversation trees and transcript pairs of every day in [start, end]; ratings go to
    `feedback_store` (a `lib.llm.feedback` store) when one is given."""
    from ai_pipeline.lib.llm.feedback import feedback_id

    summaries, dirt_turn = [], 0
    day = start
    while day <= end:
        rng = np.random.default_rng([seed, day.toordinal(), 7])
        summary = ChatDay(day)
        # Volunteers rank the replies of half the conversations; users rate the replies of the other half.
        trees = [_conversation(day, i, rng, ranked=i % 2 == 0) for i in range(conversations)]
        # Transcript pairs come from conversations of their own (another source).
        pairs = [_transcript(_conversation(day, conversations + i, rng)) for i in range(conversations // 2)]
        pairs = [p for p in pairs if p]
        lines: list[str] = []
        ratings = []
        for index, tree in enumerate(trees):
            if index % 2:
                ratings += _ratings(tree, day, rng)
            if rng.random() < dirty_rate:
                kind = DIRT[dirt_turn % len(DIRT)]
                dirt_turn += 1
                summary.dirt.append(kind)
                if kind == "duplicate_tree":
                    lines.append(json.dumps(trees[0]))
                dirty = _dirty(kind, tree, day, contaminate_with, trees[0]["prompt"]["text"] if index else None)
                lines.append(dirty if isinstance(dirty, str) else json.dumps(dirty))
                continue
            lines.append(json.dumps(tree))
        if dirty_rate > 0 and pairs:
            pairs.append({"chosen": pairs[0]["chosen"], "rejected": pairs[0]["chosen"]})  # identical replies
            pairs.append({"chosen": "A paragraph of prose.", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!"})
            ratings.append({**ratings[0], "rating": "9", "user_id": "rater-broken", "created_at": _at(day, 1439)})
        summary.trees = len(lines)
        summary.messages = sum(line.count('"message_id":') for line in lines)
        summary.pairs, summary.ratings = len(pairs), len(ratings)
        for folder, name, rows in (("chat_trees", "trees.jsonl", lines), ("transcript_pairs", "pairs.jsonl", pairs)):
            path = landing / folder / day.isoformat()
            path.mkdir(parents=True, exist_ok=True)
            text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
            (path / name).write_text(text)
            (path / COMPLETION_MARKER).write_bytes(b"")
        if feedback_store is not None:
            feedback_store.add([{**r, "feedback_id": feedback_id(r)} for r in ratings])
        summaries.append(summary)
        day += timedelta(days=1)
    return summaries
