"""Questions against a vector collection: search, and retrieval quality on a golden question set.

A golden set is a JSON file: `{"threshold": 0.8, "questions": [{"question": "...", "gold": [{"doc_id": "...",
"heading": "..."}]}]}`. A hit is relevant when its document is a gold document and, if the gold names a heading,
the hit's heading path contains it. recall@k is the share of questions with a relevant hit in the top k;
MRR is the mean of 1 / rank of the first relevant hit (0 when none in the top k).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai_pipeline.lib.rag.vector_store import Hit, query

HEADING_SEPARATOR = " > "


@dataclass(frozen=True)
class Gold:
    doc_id: str
    heading: str | None = None

    def matches(self, hit: Hit) -> bool:
        if hit.metadata.get("doc_id") != self.doc_id:
            return False
        return self.heading is None or self.heading in str(hit.metadata.get("heading_path", "")).split(
            HEADING_SEPARATOR
        )


@dataclass(frozen=True)
class GoldenQuestion:
    question: str
    gold: tuple[Gold, ...]


@dataclass(frozen=True)
class GoldenSet:
    questions: tuple[GoldenQuestion, ...]
    threshold: float  # the recall@5 below which the retrieval gate fails

    @classmethod
    def load(cls, path: Path) -> GoldenSet:
        try:
            data = json.loads(path.read_text())
            questions = tuple(
                GoldenQuestion(q["question"], tuple(Gold(g["doc_id"], g.get("heading")) for g in q["gold"]))
                for q in data["questions"]
            )
            return cls(questions, float(data["threshold"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a golden question set ({error})") from error


@dataclass
class Evaluation:
    k: int
    questions: int
    recall: dict[int, float]  # k -> recall@k
    mrr: float
    misses: list[str] = field(default_factory=list)  # questions without a relevant hit in the top k

    def metadata(self) -> dict[str, float]:
        return {**{f"recall_at_{k}": round(v, 4) for k, v in self.recall.items()}, "mrr": round(self.mrr, 4)}


def first_relevant_rank(hits: Sequence[Hit], gold: Sequence[Gold]) -> int | None:
    return next((hit.rank for hit in hits if any(g.matches(hit) for g in gold)), None)


def evaluate(
    collection, question_embeddings: np.ndarray, golden: GoldenSet, *, k: int = 10, cutoffs=(1, 5, 10)
) -> Evaluation:
    """recall@cutoff for each cutoff <= k and MRR@k, querying `collection` once per question."""
    ranks = []
    misses = []
    for question, embedding in zip(golden.questions, question_embeddings, strict=True):
        rank = first_relevant_rank(query(collection, embedding, k=k), question.gold)
        ranks.append(rank)
        if rank is None:
            misses.append(question.question)
    n = len(ranks)
    recall = {c: sum(1 for r in ranks if r is not None and r <= c) / n for c in cutoffs if c <= k} if n else {}
    mrr = sum(1 / r for r in ranks if r is not None) / n if n else 0.0
    return Evaluation(k, n, recall, mrr, misses)
