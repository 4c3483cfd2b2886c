"""The gates between candidate training rows and a dataset: personal data, contamination, duplicates.

Applied in this order to the day's candidates (SFT examples or preference pairs), each drop a reject with its rule
and reason:

1. **Personal data** (`pii`): found in every turn; `scrub` replaces it with a placeholder (`<EMAIL>`) and keeps the
   row, `drop` rejects the row (`pii`). Counts by kind either way.
2. **Contamination** (`decontam`): a row sharing a 13-word sequence with an evaluation item is rejected
   (`contaminated`), naming the set and the words.
3. **Duplicates** (`dedup`): a row whose prompt repeats (exactly or nearly) the prompt of a row kept before it, or
   whose reply repeats a kept reply, is rejected (`duplicate_prompt`, `duplicate_reply`), naming the first one. "Before"
   is the dataset's earlier days, then the day's rows by id: deterministic.

The prompt of a row is every turn before its last reply; its reply is its last assistant turn (for a pair, its
chosen and rejected replies together).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from ai_pipeline.lib.llm import pii
from ai_pipeline.lib.llm.decontam import EvalIndex
from ai_pipeline.lib.llm.dedup import THRESHOLD, DuplicateIndex, Prepared

PII_MODES = ("scrub", "drop")
REJECT_COLUMNS = {"item_id": pl.String, "rule": pl.String, "reason": pl.String}


@dataclass(frozen=True)
class GateConfig:
    pii: str = "scrub"  # or "drop"
    near_duplicate_threshold: float = THRESHOLD

    def __post_init__(self):
        if self.pii not in PII_MODES:
            raise ValueError(f"pii: {self.pii!r} is not one of {PII_MODES}")


@dataclass
class Gated:
    kept: pl.DataFrame
    rejected: pl.DataFrame
    pii_found: Counter = field(default_factory=Counter)  # by kind, in the candidates
    duplicates: Counter = field(default_factory=Counter)  # exact / near


def _turn_lists(frame: pl.DataFrame) -> list[str]:
    return [c for c, dtype in frame.schema.items() if isinstance(dtype, pl.List) and dtype.inner == pl.Struct]


def _scrub_turns(turns: list[dict]) -> tuple[list[dict], Counter]:
    found, out = Counter(), []
    for turn in turns:
        text, kinds = pii.scrub(turn["content"])
        found += kinds
        out.append({**turn, "content": text})
    return out, found


@dataclass(frozen=True)
class Shape:
    """Where a dataset keeps its id, its prompt turns and its replies."""

    id: str
    prompt: Callable[[dict], list[dict]]
    replies: Callable[[dict], list[str]]


SFT = Shape("example_id", lambda row: row["messages"][:-1], lambda row: [row["messages"][-1]["content"]])
# A pair's replies count together: a stock refusal may be the rejected reply of many good pairs.
PAIRS = Shape(
    "pair_id",
    lambda row: row["prompt"],
    lambda row: [f"{row['chosen'][-1]['content']}\n---\n{row['rejected'][-1]['content']}"],
)


def _joined(turns: list[dict]) -> str:
    return "\n".join(f"{t['role']}: {t['content']}" for t in turns)


class Gates:
    """The gates of one dataset over a run of days: the duplicate indexes are built once, from the dataset's rows of
    the days before the run, and every day's kept rows join them, so a day is compared with everything before it
    at the cost of its own rows only."""

    def __init__(self, shape: Shape, evals: EvalIndex, config: GateConfig, earlier: pl.DataFrame):
        self.shape, self.evals, self.config = shape, evals, config
        self.prompts = DuplicateIndex(config.near_duplicate_threshold)
        self.replies = DuplicateIndex(config.near_duplicate_threshold)
        before = list(earlier.sort("partition_date", shape.id).iter_rows(named=True)) if earlier.height else []
        for row, prompt, replies in self._prepared(before):
            self._add(row, prompt, replies)

    def _prepared(self, rows: list[dict]) -> list[tuple[dict, Prepared, list[tuple[str, Prepared]]]]:
        """Each row with its prepared prompt and its prepared replies (keyed `id#n`), in one batch each."""
        replies = [self.shape.replies(row) for row in rows]
        prompts = self.prompts.prepare([_joined(self.shape.prompt(row)) for row in rows])
        prepared = iter(self.replies.prepare([text for texts in replies for text in texts]))
        return [
            (row, prompt, [(f"{row[self.shape.id]}#{i}", next(prepared)) for i in range(len(texts))])
            for row, prompt, texts in zip(rows, prompts, replies, strict=True)
        ]

    def _add(self, row: dict, prompt: Prepared, replies: list[tuple[str, Prepared]]) -> None:
        self.prompts.add(row[self.shape.id], prompt)
        for key, item in replies:
            self.replies.add(key, item)

    def apply(self, candidates: pl.DataFrame) -> Gated:
        """`candidates` (a day's rows) through the gates; the rows kept join what later days must not repeat."""
        shape, config = self.shape, self.config
        lists = _turn_lists(candidates)
        rows, rejected = [], []
        pii_found: Counter = Counter()
        for row in candidates.sort(shape.id).iter_rows(named=True):
            found: Counter = Counter()
            for column in lists:
                if config.pii == "scrub":
                    row[column], kinds = _scrub_turns(row[column])
                else:
                    kinds = Counter(f.kind for turn in row[column] for f in pii.find(turn["content"]))
                found += kinds
            pii_found += found
            if found and config.pii == "drop":
                rejected.append({"item_id": row[shape.id], "rule": "pii", "reason": f"personal data: {dict(found)}"})
                continue
            text = "\n".join(_joined(row[column]) for column in lists)
            match = self.evals.match(text)
            if match:
                name, words = match
                reason = f"shares '{words}' with the evaluation set {name}"
                rejected.append({"item_id": row[shape.id], "rule": "contaminated", "reason": reason})
                continue
            rows.append(row)

        kept, duplicates = [], Counter()
        for row, prompt_item, own in self._prepared(rows):
            prompt = self.prompts.find(prompt_item)
            reply = next((d for d in (self.replies.find(item) for _, item in own) if d is not None), None)
            if prompt is None and reply is None:
                self._add(row, prompt_item, own)
                kept.append(row)
                continue
            what, dup = ("prompt", prompt) if prompt is not None else ("reply", reply)
            duplicates[dup.kind] += 1
            rejected.append(
                {
                    "item_id": row[shape.id],
                    "rule": f"duplicate_{what}",
                    "reason": f"{dup.kind} duplicate {what} of {dup.of.split('#')[0]} (similarity {dup.similarity})",
                }
            )
        kept_frame = pl.DataFrame(kept, schema=candidates.schema, orient="row") if kept else candidates.clear()
        rejects = pl.DataFrame(rejected, schema=REJECT_COLUMNS) if rejected else pl.DataFrame(schema=REJECT_COLUMNS)
        return Gated(kept_frame, rejects, pii_found, duplicates)
