"""Threads and transcript pairs -> training sets: SFT examples (TRL's conversational format) and preference pairs
(DPO's `prompt`/`chosen`/`rejected`, and the unpaired KTO form `prompt`/`completion`/`label`).

Every rule that drops something says why: each builder returns what it kept and what it rejected (`rule`, `reason`),
one row per input, so the counts add up (threads in = examples + rejects; candidates in = pairs + rejects).

Roles: the conversations' `prompter` is TRL's `user`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import polars as pl

from ai_pipeline.lib.llm.dedup import normalized

ROLE = {"prompter": "user", "assistant": "assistant"}
TURN = pl.Struct({"role": pl.String, "content": pl.String})
# Ideographs, kana and hangul count a word each: those languages put no spaces between words.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")

SFT_COLUMNS = {
    "example_id": pl.String,
    "messages": pl.List(TURN),
    "conversation_id": pl.String,
    "lang": pl.String,
    "turns": pl.Int64,
}
PAIR_COLUMNS = {
    "pair_id": pl.String,
    "prompt": pl.List(TURN),
    "chosen": pl.List(TURN),
    "rejected": pl.List(TURN),
    "origin": pl.String,  # sibling_ranking, transcript_pair, ratings
    "source_id": pl.String,  # what it was built from: the prompt message, or the transcript pair's lineage
}
KTO_COLUMNS = {"pair_id": pl.String, "prompt": pl.List(TURN), "completion": pl.List(TURN), "label": pl.Boolean}
REJECT_COLUMNS = {"item_id": pl.String, "rule": pl.String, "reason": pl.String}


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class SftRecipe:
    """The filters of the SFT set, declared (the seed recipe's defaults)."""

    min_prompt_words: int = 3
    min_response_words: int = 5
    # Where volunteers ranked the replies to a message: every reply of the thread ranked at most this (0: the best).
    max_rank: int | None = 0
    # Where volunteers labelled quality: every message's average at least this.
    min_quality: float | None = 0.5
    max_spam: float = 0.5
    languages: tuple[str, ...] | None = None  # None: every language
    excluded_states: tuple[str, ...] = ("aborted_low_grade", "halted_by_moderator")
    excluded_patterns: tuple[str, ...] = (r"(?i)^\s*(test|testing|asdf+|hello|hi)\s*[.!?]*\s*$", r"(?i)lorem ipsum")


@dataclass
class Built:
    kept: pl.DataFrame
    rejected: pl.DataFrame
    extra: dict[str, pl.DataFrame] = field(default_factory=dict)


def _frame(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _turns(roles: Sequence[str], texts: Sequence[str]) -> list[dict]:
    return [{"role": ROLE.get(r, r), "content": t} for r, t in zip(roles, texts, strict=True)]


def _sft_rule(thread: dict, recipe: SftRecipe, patterns: list[re.Pattern]) -> tuple[str, str] | None:
    roles, texts = thread["roles"], thread["texts"]
    if roles[-1] != "assistant":
        return "ends_with_prompter", "the thread ends with a prompter message (no reply to learn)"
    if recipe.languages is not None and thread["lang"].split("-")[0] not in recipe.languages:
        return "language", f"language {thread['lang']} is not one of {list(recipe.languages)}"
    if thread["tree_state"] in recipe.excluded_states:
        return "tree_state", f"the conversation's state is {thread['tree_state']}"
    for role, text in zip(roles, texts, strict=True):
        words, least = word_count(text), recipe.min_prompt_words if role == "prompter" else recipe.min_response_words
        if words < least:
            return "too_short", f"a {role} message of {words} words (at least {least})"
        for pattern in patterns:
            if pattern.search(text):
                return "excluded_content", f"a {role} message matches {pattern.pattern}"
    if recipe.max_rank is not None:
        worst = max((r for r in thread["ranks"] if r is not None), default=None)
        if worst is not None and worst > recipe.max_rank:
            return "rank", f"a reply ranked {worst} among its siblings (at most {recipe.max_rank})"
    if recipe.min_quality is not None:
        low = min((q for q in thread["quality"] if q is not None), default=None)
        if low is not None and low < recipe.min_quality:
            return "quality", f"a message's quality label averages {low:.2f} (at least {recipe.min_quality})"
    spam = max((s for s in thread["spam"] if s is not None), default=None)
    if spam is not None and spam > recipe.max_spam:
        return "spam", f"a message's spam label averages {spam:.2f} (at most {recipe.max_spam})"
    return None


def sft_examples(threads: pl.DataFrame, recipe: SftRecipe) -> Built:
    """One example per thread that passes every filter; the others rejected with the first failing filter."""
    patterns = [re.compile(p) for p in recipe.excluded_patterns]
    kept, rejected = [], []
    for thread in threads.sort("thread_id").iter_rows(named=True):
        rule = _sft_rule(thread, recipe, patterns)
        if rule:
            rejected.append({"item_id": thread["thread_id"], "rule": rule[0], "reason": rule[1]})
            continue
        kept.append(
            {
                "example_id": thread["thread_id"],
                "messages": _turns(thread["roles"], thread["texts"]),
                "conversation_id": thread["conversation_id"],
                "lang": thread["lang"],
                "turns": thread["turns"],
            }
        )
    return Built(_frame(kept, SFT_COLUMNS), _frame(rejected, REJECT_COLUMNS))


def pair_id(origin: str, prompt: Iterable[dict], chosen: str, rejected: str) -> str:
    content = "\x1f".join([origin, *(f"{t['role']}:{t['content']}" for t in prompt), chosen, rejected])
    return hashlib.sha256(content.encode()).hexdigest()[:24]


def _pair(origin: str, source_id: str, prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {
        "pair_id": pair_id(origin, prompt, chosen, rejected),
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "origin": origin,
        "source_id": source_id,
    }


def _best_against_worst(
    messages: pl.DataFrame,
    prompt_ids: Iterable[str],
    origin: str,
    replies_of: Callable[[dict[str, dict], str], list[dict]],
    problem_of: Callable[[list[dict]], tuple[str, str] | None],
) -> Built:
    """For each prompter message: its best reply against its worst (`replies_of`: best first), unless `problem_of`
    the replies says why not, the two say the same, or the prompt's path to the first message is broken."""
    by_id = {row["message_id"]: row for row in messages.iter_rows(named=True)}
    kept, rejected = [], []
    for prompt_id in sorted(set(prompt_ids)):
        ordered = replies_of(by_id, prompt_id)
        problem = problem_of(ordered)
        if problem is None and normalized(ordered[0]["text"]) == normalized(ordered[-1]["text"]):
            problem = ("identical_replies", "the best and the worst reply say the same")
        path = _path(by_id, prompt_id) if prompt_id in by_id else None
        if problem is None and path is None:
            problem = ("orphan", "the prompt's path to the first message is broken")
        if problem:
            rejected.append({"item_id": prompt_id, "rule": problem[0], "reason": problem[1]})
            continue
        prompt = _turns([m["role"] for m in path], [m["text"] for m in path])
        kept.append(_pair(origin, prompt_id, prompt, ordered[0]["text"], ordered[-1]["text"]))
    return Built(_frame(kept, PAIR_COLUMNS), _frame(rejected, REJECT_COLUMNS))


def sibling_pairs(messages: pl.DataFrame, prompt_ids: Iterable[str]) -> Built:
    """For each prompter message in `prompt_ids`: its best-ranked reply against its worst-ranked one (ties by id).

    `messages`: the valid messages of the prompts' conversations (a prompt's path from the first message). A
    prompt with fewer than two ranked replies, only tied ranks, or whose best and worst replies say the same, is
    rejected."""

    def ranked(by_id: dict[str, dict], prompt_id: str) -> list[dict]:
        replies = [
            m
            for m in by_id.values()
            if m["parent_id"] == prompt_id and m["role"] == "assistant" and m["rank"] is not None
        ]
        return sorted(replies, key=lambda r: (r["rank"], r["message_id"]))

    def problem(replies: list[dict]) -> tuple[str, str] | None:
        if len(replies) < 2:
            return "one_ranked_reply", f"{len(replies)} ranked replies: nothing to compare"
        if replies[0]["rank"] == replies[-1]["rank"]:
            return "tied_ranks", f"every ranked reply has rank {replies[0]['rank']}"
        return None

    return _best_against_worst(messages, prompt_ids, "sibling_ranking", ranked, problem)


GOOD_RATING, BAD_RATING = 4, 2


def mean_ratings(feedback: pl.DataFrame) -> dict[str, tuple[float, int]]:
    """message_id -> (mean rating, raters), each user's latest rating of a message counting once."""
    if not feedback.height:
        return {}
    latest = (
        feedback.sort("created_at", "feedback_id")
        .group_by("message_id", "user_id", maintain_order=True)
        .agg(pl.col("rating").last())
        .group_by("message_id")
        .agg(pl.col("rating").mean().alias("mean"), pl.len().alias("raters"))
    )
    return {row["message_id"]: (row["mean"], row["raters"]) for row in latest.iter_rows(named=True)}


def rating_pairs(messages: pl.DataFrame, feedback: pl.DataFrame, prompt_ids: Iterable[str]) -> Built:
    """For each prompter message in `prompt_ids`: its best-rated reply (mean >= 4) against its worst-rated one
    (mean <= 2), by users' ratings (each user's latest). Otherwise rejected: fewer than two rated replies, no such
    contrast, or replies that say the same."""
    means = mean_ratings(feedback)

    def rated(by_id: dict[str, dict], prompt_id: str) -> list[dict]:
        replies = [
            m
            for m in by_id.values()
            if m["parent_id"] == prompt_id and m["role"] == "assistant" and m["message_id"] in means
        ]
        return sorted(replies, key=lambda r: (-means[r["message_id"]][0], r["message_id"]))

    def problem(replies: list[dict]) -> tuple[str, str] | None:
        if len(replies) < 2:
            return "one_rated_reply", f"{len(replies)} rated replies: nothing to compare"
        best, worst = means[replies[0]["message_id"]][0], means[replies[-1]["message_id"]][0]
        if best < GOOD_RATING or worst > BAD_RATING:
            return (
                "no_contrast",
                f"best reply rated {best:.1f}, worst {worst:.1f} (needs >= {GOOD_RATING} against <= {BAD_RATING})",
            )
        return None

    return _best_against_worst(messages, prompt_ids, "ratings", rated, problem)


def _path(by_id: dict[str, dict], message_id: str) -> list[dict] | None:
    path = [by_id[message_id]]
    while path[-1]["parent_id"] is not None:
        parent = by_id.get(path[-1]["parent_id"])
        if parent is None:
            return None
        path.append(parent)
    return path[::-1]


_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant): ")


def transcript_turns(text: str) -> list[dict] | None:
    """`\\n\\nHuman: ...\\n\\nAssistant: ...` -> turns; None when it does not alternate from Human to Assistant."""
    text = "\n\n" + text.lstrip()
    parts = _SPEAKER.split(text)
    if parts[0].strip():
        return None
    speakers, contents = parts[1::2], parts[2::2]
    if not speakers or any(s != ("Human" if i % 2 == 0 else "Assistant") for i, s in enumerate(speakers)):
        return None
    return [
        {"role": "user" if s == "Human" else "assistant", "content": c.strip()}
        for s, c in zip(speakers, contents, strict=True)
    ]


def transcript_pairs(pairs: pl.DataFrame) -> Built:
    """Each (chosen, rejected) transcript pair: the shared turns are the prompt, the two last replies the answers.

    `pairs` carries `chosen`, `rejected` and `item_id` (its lineage)."""
    kept, rejected = [], []
    for row in pairs.sort("item_id").iter_rows(named=True):
        chosen, other = transcript_turns(row["chosen"]), transcript_turns(row["rejected"])
        problem = None
        if chosen is None or other is None:
            problem = ("not_a_dialogue", "a transcript does not alternate Human and Assistant turns")
        elif chosen[-1]["role"] != "assistant" or other[-1]["role"] != "assistant":
            problem = ("ends_with_human", "a transcript does not end with an Assistant reply")
        elif chosen[:-1] != other[:-1]:
            problem = ("different_prompts", "the transcripts differ before their last reply")
        elif not chosen[-1]["content"] or not other[-1]["content"]:
            problem = ("empty_reply", "a last reply is empty")
        elif normalized(chosen[-1]["content"]) == normalized(other[-1]["content"]):
            problem = ("identical_replies", "the chosen and the rejected reply say the same")
        if problem:
            rejected.append({"item_id": row["item_id"], "rule": problem[0], "reason": problem[1]})
            continue
        kept.append(_pair("transcript_pair", row["item_id"], chosen[:-1], chosen[-1]["content"], other[-1]["content"]))
    return Built(_frame(kept, PAIR_COLUMNS), _frame(rejected, REJECT_COLUMNS))


def kto_rows(pairs: pl.DataFrame) -> pl.DataFrame:
    """The unpaired form: each pair's chosen reply labelled True and its rejected reply False."""
    rows = []
    for pair in pairs.sort("pair_id").iter_rows(named=True):
        rows.append({"pair_id": pair["pair_id"], "prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append(
            {"pair_id": pair["pair_id"], "prompt": pair["prompt"], "completion": pair["rejected"], "label": False}
        )
    return _frame(rows, KTO_COLUMNS)
