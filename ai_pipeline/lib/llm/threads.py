"""Conversation trees -> threads: each path from a conversation's first message to a message without replies.

Point in time: the threads of day D are those whose last message was written on D, as the tree stood at the end of D
(replies written later do not exist yet). Every message written on D is then in at least one thread of D (its
replies, if any, were written on D too, down to a last one) or rejected with the reason: nothing is lost, and
`threads_for_day` returns both.

A message is rejected (with every message below it, "below a rejected message") when:
- its parent is not a valid message of the conversation (`orphan`: never sent, deleted, or quarantined);
- it has the same role as its parent (`role_alternation`: two prompter or two assistant messages in a row);
- it starts the conversation with an assistant message (`role_alternation` too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

THREAD_COLUMNS = {
    "thread_id": pl.String,  # the last message's id
    "conversation_id": pl.String,
    "message_ids": pl.List(pl.String),
    "roles": pl.List(pl.String),
    "texts": pl.List(pl.String),
    "ranks": pl.List(pl.Int64),
    "quality": pl.List(pl.Float64),
    "spam": pl.List(pl.Float64),
    "lang": pl.String,  # the last message's
    "tree_state": pl.String,
    "turns": pl.Int64,
    "last_at": pl.Datetime("us", "UTC"),
}
REJECT_COLUMNS = {"message_id": pl.String, "conversation_id": pl.String, "rule": pl.String, "reason": pl.String}


@dataclass(frozen=True)
class DayThreads:
    threads: pl.DataFrame  # THREAD_COLUMNS
    rejected: pl.DataFrame  # REJECT_COLUMNS: the day's messages that are in no thread
    messages: int  # messages written on the day


def _end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _rejections(by_id: dict[str, dict], children: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
    """message_id -> (rule, reason) for every message that cannot be in a thread."""
    rejected: dict[str, tuple[str, str]] = {}
    roots = []
    for message in by_id.values():
        parent = message["parent_id"]
        if parent is None:
            roots.append(message["message_id"])
        elif parent not in by_id:
            rejected[message["message_id"]] = ("orphan", f"parent {parent} is not a valid message of the conversation")
    for root in roots:
        if by_id[root]["role"] != "prompter":
            rejected[root] = ("role_alternation", "the conversation starts with an assistant message")
    for message in by_id.values():
        parent = by_id.get(message["parent_id"]) if message["parent_id"] else None
        if parent is not None and parent["role"] == message["role"] and message["message_id"] not in rejected:
            rejected[message["message_id"]] = (
                "role_alternation",
                f"a {message['role']} message replies to a {parent['role']} message ({parent['message_id']})",
            )
    # Everything below a rejected message goes with it.
    stack = [(m, first) for first in list(rejected) for m in children.get(first, [])]
    while stack:
        message_id, first = stack.pop()
        if message_id not in rejected:
            rejected[message_id] = ("below_rejected", f"below a rejected message ({first})")
            stack.extend((child, first) for child in children.get(message_id, []))
    return rejected


def threads_for_day(messages: pl.DataFrame, day: date) -> DayThreads:
    """`messages`: every valid message of the conversations touched on `day`, written up to the end of `day` or later
    (later ones are ignored). Threads are ordered by conversation and last message; deterministic."""
    end = _end(day)
    start = end - timedelta(days=1)
    known = messages.filter(pl.col("created_at") < end).sort("conversation_id", "created_at", "message_id")
    threads, rejects = [], []
    todays = 0
    for (conversation,), group in known.group_by("conversation_id", maintain_order=True):
        rows = group.to_dicts()
        by_id = {row["message_id"]: row for row in rows}
        children: dict[str, list[str]] = {}
        for row in rows:
            if row["parent_id"] is not None:
                children.setdefault(row["parent_id"], []).append(row["message_id"])
        rejected = _rejections(by_id, children)
        for row in rows:
            written_today = start <= row["created_at"] < end
            todays += written_today
            if not written_today:
                continue
            if row["message_id"] in rejected:
                rule, reason = rejected[row["message_id"]]
                rejects.append(
                    {"message_id": row["message_id"], "conversation_id": conversation, "rule": rule, "reason": reason}
                )
            elif not [child for child in children.get(row["message_id"], []) if child not in rejected]:
                # No reply that can be in a thread: this message ends one.
                threads.append(_thread(row, by_id))
    return DayThreads(
        pl.DataFrame(threads, schema=THREAD_COLUMNS, orient="row") if threads else pl.DataFrame(schema=THREAD_COLUMNS),
        pl.DataFrame(rejects, schema=REJECT_COLUMNS) if rejects else pl.DataFrame(schema=REJECT_COLUMNS),
        todays,
    )


def _thread(leaf: dict, by_id: dict[str, dict]) -> dict:
    path = [leaf]
    while path[-1]["parent_id"] is not None:
        path.append(by_id[path[-1]["parent_id"]])
    path.reverse()
    return {
        "thread_id": leaf["message_id"],
        "conversation_id": leaf["conversation_id"],
        "message_ids": [m["message_id"] for m in path],
        "roles": [m["role"] for m in path],
        "texts": [m["text"] for m in path],
        "ranks": [m.get("rank") for m in path],
        "quality": [m.get("quality") for m in path],
        "spam": [m.get("spam") for m in path],
        "lang": leaf["lang"],
        "tree_state": leaf.get("tree_state"),
        "turns": len(path),
        "last_at": leaf["created_at"],
    }
