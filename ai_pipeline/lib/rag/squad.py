"""A SQuAD v1.1 file as a document source with its golden question set.

Each paragraph becomes a text document `paragraphs/<title>-<n>.txt`; each question's gold is its paragraph's
document. Tests and benchmarks use it to measure retrieval (the data lives in ../shared, never in the repo).
"""

from __future__ import annotations

import json
from pathlib import Path

GOLDEN_FILE = "golden_questions.json"


def write_source(squad_json: Path, root: Path, source: str, *, threshold: float) -> int:
    """Writes the paragraphs under `root/paragraphs/` and `root/golden_questions.json`; returns the question count."""
    data = json.loads(Path(squad_json).read_text())
    questions = []
    folder = root / "paragraphs"
    folder.mkdir(parents=True, exist_ok=True)
    for article in data["data"]:
        for n, paragraph in enumerate(article["paragraphs"]):
            path = folder / f"{article['title']}-{n:03d}.txt"
            path.write_text(paragraph["context"] + "\n")
            gold = [{"doc_id": f"{source}:{path.relative_to(root).as_posix()}"}]
            questions += [{"question": qa["question"], "gold": gold} for qa in paragraph["qas"]]
    (root / GOLDEN_FILE).write_text(json.dumps({"threshold": threshold, "questions": questions}, indent=1))
    return len(questions)
