"""Decontamination: no training text may contain an evaluation item's words.

As in GPT-3's report (Brown et al., 2020, appendix C): texts are lower-cased word sequences, and a training text is
contaminated when it shares a 13-word sequence with an evaluation item; an item shorter than 13 words counts whole
(so a 10-word question copied into a prompt is found), down to `MIN_WORDS` (shorter items are too generic to tell
a copy from a coincidence: "what is the capital of france").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

NGRAM = 13
MIN_WORDS = 8
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")


def words(text: str) -> tuple[str, ...]:
    return tuple(w.casefold() for w in _WORD.findall(text))


@dataclass
class EvalIndex:
    """The word sequences of the evaluation items, by length (13, or an item's whole length when shorter)."""

    sequences: dict[int, dict[tuple[str, ...], str]] = field(default_factory=dict)
    items: int = 0
    skipped: int = 0  # shorter than MIN_WORDS

    def add(self, item: str, name: str) -> None:
        seq = words(item)
        if len(seq) < MIN_WORDS:
            self.skipped += 1
            return
        self.items += 1
        n = min(NGRAM, len(seq))
        table = self.sequences.setdefault(n, {})
        for start in range(len(seq) - n + 1):
            table.setdefault(seq[start : start + n], name)

    def match(self, text: str) -> tuple[str, str] | None:
        """(evaluation set, the shared words) of the first shared sequence, or None."""
        seq = words(text)
        for n, table in sorted(self.sequences.items(), reverse=True):
            for start in range(len(seq) - n + 1):
                window = seq[start : start + n]
                if window in table:
                    return table[window], " ".join(window)
        return None


def eval_texts(path: Path) -> list[str]:
    """An evaluation set's items: a golden-question JSON (`{"questions": [{"question": ...}]}`), a JSON list of
    strings or objects with `question`/`prompt`/`text`, JSON Lines of such objects, or plain text (a line each)."""
    text = path.read_text(encoding="utf-8")
    keys = ("question", "prompt", "text", "answer")

    def of(item) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            found = [item[k] for k in keys if isinstance(item.get(k), str)]
            answers = item.get("answers")
            if isinstance(answers, list):
                found += [a if isinstance(a, str) else a.get("text", "") for a in answers if a]
            return found
        return []

    if path.suffix == ".jsonl":
        return [t for line in text.splitlines() if line.strip() for t in of(json.loads(line))]
    if path.suffix == ".json":
        document = json.loads(text)
        items = document.get("questions", []) if isinstance(document, dict) else document
        return [t for item in items for t in of(item)]
    return [line for line in text.splitlines() if line.strip()]


def build_index(sets: Iterable[tuple[str, Path]]) -> EvalIndex:
    index = EvalIndex()
    for name, path in sets:
        for item in eval_texts(path):
            index.add(item, name)
    return index
