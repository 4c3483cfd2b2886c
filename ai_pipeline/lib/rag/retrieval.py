"""Questions against a collection: dense, lexical or hybrid search, and retrieval quality on a golden question set.

Search modes (`MODES`): `dense` asks the Chroma collection for the nearest vectors; `lexical` asks the collection's
BM25 index (`lexical.py`); `hybrid` fuses the two rankings by weighted reciprocal-rank fusion (`rrf`): each mode
contributes `weight / (rrf_k + rank)` for every chunk in its top `depth`, and chunks are ranked by the sum (Cormack
et al., 2009; k = 60 as there). RRF needs no score calibration between cosine similarities and BM25 scores, which
live on different scales. A hit's score is the cosine similarity (dense), the BM25 score (lexical) or the fused
score (hybrid). Which mode is the default, and why, is measured in docs/rag.md.

A golden set is a JSON file: `{"threshold": 0.8, "questions": [{"question": "...", "gold": [{"doc_id": "...",
"heading": "..."}]}]}`. A hit is relevant when its document is a gold document and, if the gold names a heading,
the hit's heading path contains it. recall@k is the share of questions with a relevant hit in the top k;
MRR is the mean of 1 / rank of the first relevant hit (0 when none in the top k).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ai_pipeline.lib.rag.lexical import LexicalIndex
from ai_pipeline.lib.rag.vector_store import Hit, query

HEADING_SEPARATOR = " > "
DENSE, LEXICAL, HYBRID = "dense", "lexical", "hybrid"
MODES = (DENSE, LEXICAL, HYBRID)


@dataclass(frozen=True)
class SearchConfig:
    mode: str = HYBRID
    rrf_k: int = 60  # RRF's rank constant: larger flattens the difference between the first ranks
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    depth: int = 50  # how many of each mode's best chunks the fusion considers

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown search mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.rrf_k < 0 or self.depth < 1 or self.dense_weight < 0 or self.lexical_weight < 0:
            raise ValueError(f"rrf_k and the weights must not be negative, depth must be positive: {self}")


def rrf(rankings: Sequence[tuple[float, Sequence[str]]], k: int = 60) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of (weight, ids best first) rankings: (id, sum of weight / (k + rank)),
    best first, ties by id."""
    scores: dict[str, float] = defaultdict(float)
    for weight, ids in rankings:
        for rank, id_ in enumerate(ids, start=1):
            scores[id_] += weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def search(
    collection: Any,
    lexical: LexicalIndex,
    text: str,
    vector: np.ndarray | None,
    *,
    k: int = 5,
    config: SearchConfig = SearchConfig(),
) -> list[Hit]:
    """The k best chunks for the question `text` (embedded as `vector`; unused in lexical mode), best first."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if config.mode == DENSE:
        return query(collection, vector, k=k)
    lexical_hits = lexical.search(text, k if config.mode == LEXICAL else max(k, config.depth))
    if config.mode == LEXICAL:
        ranked = [(hit.id, hit.score) for hit in lexical_hits]
        known: dict[str, Hit] = {}
    else:
        dense_hits = query(collection, vector, k=max(k, config.depth))
        known = {hit.id: hit for hit in dense_hits}
        rankings = [
            (config.dense_weight, [hit.id for hit in dense_hits]),
            (config.lexical_weight, [hit.id for hit in lexical_hits]),
        ]
        ranked = rrf(rankings, config.rrf_k)[:k]
    missing = [id_ for id_, _ in ranked if id_ not in known]
    if missing:
        found = collection.get(ids=missing, include=["documents", "metadatas"])
        for id_, document, metadata in zip(found["ids"], found["documents"], found["metadatas"], strict=True):
            known[id_] = Hit(0, id_, 0.0, document, dict(metadata or {}))
    return [
        Hit(rank, id_, score, known[id_].document, known[id_].metadata)
        for rank, (id_, score) in enumerate((pair for pair in ranked if pair[0] in known), start=1)
    ]


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


Searcher = Callable[[str, np.ndarray, int], list[Hit]]  # (question, its vector, k) -> hits, best first


def evaluate(
    searcher: Searcher, question_embeddings: np.ndarray, golden: GoldenSet, *, k: int = 10, cutoffs=(1, 5, 10)
) -> Evaluation:
    """recall@cutoff for each cutoff <= k and MRR@k, searching once per question."""
    ranks = []
    misses = []
    for question, embedding in zip(golden.questions, question_embeddings, strict=True):
        rank = first_relevant_rank(searcher(question.question, embedding, k), question.gold)
        ranks.append(rank)
        if rank is None:
            misses.append(question.question)
    n = len(ranks)
    recall = {c: sum(1 for r in ranks if r is not None and r <= c) / n for c in cutoffs if c <= k} if n else {}
    mrr = sum(1 / r for r in ranks if r is not None) / n if n else 0.0
    return Evaluation(k, n, recall, mrr, misses)
