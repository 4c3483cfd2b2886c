"""Shared by the RAG benchmarks (`benchmarks/rag.py`): the real data sets and the pipeline path without Dagster.

The data are read where the project keeps them, `../shared/data` beside the checkout, never copied into the
repository. The pipeline path is the one of `ai_pipeline/defs/rag/assets.py`'s four assets, with the lib functions:
`load_documents` -> `chunk_document` (a fresh `TokenCounter` per run) -> the chunks in chunk_id order, texts
whose content hash is not in the embedding cache embedded once each by a fresh `Embedder` (with a progress
callback) -> one `VectorRecord` per chunk with the metadata of `_records` -> `sync_collection`. The cache is a
dict content_hash -> vector, standing in for the `chunk_embeddings` table (one model, so the key is the hash).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai_pipeline.lib.rag import chunking, documents, embedding, retrieval, vector_store

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PYDANTIC_DOCS = DATA / "docs_pydantic"
SQUAD_FILE = DATA / "squad" / "dev-v1.1-super_bowl_50.json"
CACHE_DIR = Path(os.environ.get("AI_PIPELINE_BENCH_CACHE", "~/.cache/ai_pipeline_bench")).expanduser()

log = logging.getLogger("benchmarks.rag")


# --- data sets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Squad:
    contexts: list[str]  # paragraph i's text
    questions: list[tuple[str, int]]  # (question, index of its paragraph)


def load_squad(path: Path = SQUAD_FILE) -> Squad:
    """The SQuAD v1.1 file's paragraphs (all articles, in order) and every question with its paragraph."""
    data = json.loads(path.read_text())
    contexts: list[str] = []
    questions: list[tuple[str, int]] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            questions += [(qa["question"], len(contexts)) for qa in paragraph["qas"]]
            contexts.append(paragraph["context"])
    return Squad(contexts, questions)


def squad_doc_id(index: int, source: str = "squad") -> str:
    return f"{source}:paragraphs/p{index:03d}.txt"


def write_squad_paragraphs(contexts: Sequence[str], root: Path) -> Path:
    """Each paragraph as `root/paragraphs/pNNN.txt` (so its doc id is `squad_doc_id(N)`); returns root."""
    folder = root / "paragraphs"
    folder.mkdir(parents=True, exist_ok=True)
    for i, context in enumerate(contexts):
        (folder / f"p{i:03d}.txt").write_text(context + "\n", encoding="utf-8")
    return root


# --- the pipeline path ---------------------------------------------------------------------------------------


def load_and_chunk(
    sources: Sequence[tuple[Path, str]], include: Sequence[str] | None = None
) -> tuple[list[documents.Document], list[chunking.Chunk]]:
    """The `raw_documents` and `document_chunks` assets: every source's documents (the files matching `include`,
    when given), and all their chunks in chunk_id order (the order in which the embedding and vector assets read
    them)."""
    docs: list[documents.Document] = []
    for root, name in sources:
        loaded, skipped = documents.load_documents(root, name, **({"include": include} if include else {}))
        if skipped:
            raise RuntimeError(f"{name}: {len(skipped)} files skipped, e.g. {skipped[0]}")
        docs += loaded
    counter = chunking.TokenCounter()
    chunks = [c for doc in docs for c in chunking.chunk_document(doc, counter)]
    return docs, sorted(chunks, key=lambda c: c.chunk_id)


def unique_texts(chunks: Sequence[chunking.Chunk], cached: Callable[[str], bool] = lambda h: False) -> list:
    """The chunks to embed, as `chunk_embeddings` picks them: content hash not cached, first chunk per hash."""
    todo, seen = [], set()
    for chunk in chunks:
        if chunk.content_hash not in seen and not cached(chunk.content_hash):
            seen.add(chunk.content_hash)
            todo.append(chunk)
    return todo


def asset_progress(collection: str) -> Callable[[int, int], None]:
    """The embedding asset's progress callback: one log line per batch (formatted; not shown by default)."""

    def progress(done: int, total: int) -> None:
        log.info(f"embedded {done}/{total} chunks of {collection}")

    return progress


def records_for(
    docs: Sequence[documents.Document], chunks: Sequence[chunking.Chunk], cache: dict[str, np.ndarray]
) -> list[vector_store.VectorRecord]:
    """`defs/rag/assets.py::vector_records`: one record per chunk, in chunk_id order, with the same metadata."""
    by_id = {d.doc_id: d for d in docs}
    return [
        vector_store.VectorRecord(
            id=c.chunk_id,
            embedding=cache[c.content_hash],
            document=c.text,
            metadata={
                "doc_id": c.doc_id,
                "source_path": by_id[c.doc_id].path,
                "doc_hash": by_id[c.doc_id].content_hash,
                "heading_path": retrieval.HEADING_SEPARATOR.join(c.heading_path),
                "chunk_index": c.index,
                "content_hash": c.content_hash,
                "model": embedding.MODEL_NAME,
                "dimension": embedding.DIMENSION,
            },
        )
        for c in chunks
    ]


@dataclass
class PipelineRun:
    documents: int
    chunks: int
    embedded: int
    report: vector_store.SyncReport
    records: list[vector_store.VectorRecord]
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def run_pipeline(
    sources: Sequence[tuple[Path, str]],
    collection,
    cache: dict[str, np.ndarray],
    *,
    embedder: embedding.Embedder | None = None,
    include: Sequence[str] | None = None,
) -> PipelineRun:
    """One materialization of the four assets for `sources` into `collection`; `cache` gains the new vectors.

    Like the embedding asset, a new `Embedder` (model loaded from disk) is made when there is something to
    embed, unless `embedder` is given; its load time is counted in the "model" stage."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    docs, chunks = load_and_chunk(sources, include)
    seconds["load+chunk"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    todo = unique_texts(chunks, cache.__contains__)
    seconds["plan"] = time.perf_counter() - t0
    seconds["model"] = seconds["embed"] = 0.0
    if todo:
        t0 = time.perf_counter()
        if embedder is None:
            embedder = embedding.Embedder()
            embedder._loaded()  # the asset's `Embedder().embed(...)` loads the model on this first use
        seconds["model"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        name = getattr(collection, "name", "collection")
        vectors = embedder.embed([c.text for c in todo], progress=asset_progress(name))
        cache.update({c.content_hash: v for c, v in zip(todo, vectors, strict=True)})
        seconds["embed"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    records = records_for(docs, chunks, cache)
    seconds["records"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = vector_store.sync_collection(collection, records)
    seconds["sync"] = time.perf_counter() - t0
    return PipelineRun(len(docs), len(chunks), len(todo), report, records, seconds)


def open_store(path: Path, name: str, *, hnsw: dict | None = None):
    """A PersistentClient on `path` and the collection `name` through `open_collection`. With `hnsw`, the
    collection is first created with those HNSW settings (space cosine) and then opened by `open_collection`,
    which accepts it: this is how a setting such as ef_search can be tried without changing the library."""
    client = vector_store.open_client(path=path)
    if hnsw:
        client.get_or_create_collection(
            name,
            configuration={"hnsw": {"space": vector_store.SPACE, **hnsw}},
            metadata={vector_store.MODEL_KEY: embedding.MODEL_NAME, vector_store.DIMENSION_KEY: embedding.DIMENSION},
            embedding_function=None,
        )
    return client, vector_store.open_collection(client, name, model=embedding.MODEL_NAME, dimension=embedding.DIMENSION)


# --- edits and short texts -----------------------------------------------------------------------------------

EDIT_SENTENCE = " This sentence was appended by the incremental-sync benchmark."


def append_to_paragraph(path: Path) -> int:
    """Append EDIT_SENTENCE to one prose paragraph of the Markdown file (the middle one of the prose lines
    outside fenced code, not indented, not a heading, list, table, quote or admonition); returns its line
    number (1-based)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    fence, candidates = "", []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        if line[:1].isalpha() and stripped.endswith(".") and len(stripped.split()) >= 8:
            candidates.append(i)
    if not candidates:
        raise ValueError(f"{path}: no prose paragraph to edit")
    line_no = candidates[len(candidates) // 2]
    lines[line_no] += EDIT_SENTENCE
    path.write_text("\n".join(lines), encoding="utf-8")
    return line_no + 1


def word_windows(streams: Sequence[str], lengths: Sequence[int], count: int) -> list[str]:
    """`count` distinct word windows: all windows of each length in `lengths` (words split on whitespace,
    never across two streams) in order (length, stream, start), de-duplicated, then `count` of them picked at
    even spacing, so the effective stride is (number of windows) / count words per length."""
    words = [s.split() for s in streams]
    seen: dict[str, None] = {}
    for length in lengths:
        for w in words:
            for start in range(0, len(w) - length + 1):
                seen.setdefault(" ".join(w[start : start + length]), None)
    candidates = list(seen)
    if len(candidates) < count:
        raise ValueError(f"only {len(candidates)} distinct windows of {lengths} words, {count} wanted")
    picks = np.unique(np.linspace(0, len(candidates) - 1, count).round().astype(np.int64))
    assert len(picks) == count, "windows picked twice"
    return [candidates[i] for i in picks]


# --- machine load --------------------------------------------------------------------------------------------


def machine_load(top: int = 4) -> str:
    """The 1/5/15-minute load average and the busiest other processes right now (a 1-second `top` sample)."""
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:
        out = subprocess.run(
            ["top", "-b", "-c", "-n", "2", "-d", "1", "-w", "200", "-o", "%CPU"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return f"load {loadavg}"
    last = out.rsplit("  PID", 1)[-1].splitlines()[1:]  # the second sample's process table
    busy = []
    for row in last:
        parts = row.split(None, 11)
        if len(parts) == 12 and parts[0] != str(os.getpid()) and float(parts[8]) >= 5:
            busy.append(f"{parts[11][:40]} {float(parts[8]):.0f}%")
    return f"load {loadavg}; others: " + (", ".join(busy[:top]) or "none busy")
