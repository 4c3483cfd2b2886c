"""Documents -> chunks -> embeddings -> a ChromaDB collection, one partition per document source.

Assets: `raw_documents`, `document_chunks`, `chunk_embeddings`, `vector_collection`; checks on the collection in
`vector_collection_checks`. The work is done by `ai_pipeline.lib.documents`, `lib.chunking`, `lib.embedding`,
`lib.vector_store` and `lib.retrieval`; these shells read the warehouse, call them, and report numbers.
Partitions are dynamic: one key per configured document source (`Settings.doc_sources`), added by
`register_collections` (the demo) or the document sensor.
"""

import json
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.common import OWNERS, check_result
from ai_pipeline.defs.keys import (
    CHUNK_EMBEDDINGS,
    COLLECTIONS_LAG_CHECK,
    COVERAGE_CHECK,
    DOCUMENT_CHUNKS,
    DOCUMENTS_SENSOR,
    DUCKDB_POOL,
    GATE_CHECK,
    LOADED_CHECK,
    RAG_GROUP,
    RAW_DOCUMENTS,
    STALE_CHECK,
    SYNC_CHECK,
    TOKENS_CHECK,
    VALID_CHECK,
    VECTOR_COLLECTION,
)
from ai_pipeline.defs.resources import Embedder, VectorStore, query, table_exists
from ai_pipeline.lib import chunking, documents, embedding, retrieval
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.lib.vector_store import VectorRecord, collection_vectors, sync_collection
from ai_pipeline.settings import DocSource, Settings

COLLECTIONS = dg.DynamicPartitionsDefinition(name="document_collections")
COLLECTION_PARTITION_EXPR = {"partition_expr": "collection"}
# A document change has this long to reach its collection before the hourly lag check counts it.
LAG_GRACE = timedelta(minutes=30)
# A document collection is rebuilt when its sources change, not on a clock: stale after a week, failed after two.
DOCS_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=14), warn_window=timedelta(days=7))
NORM_TOLERANCE = 1e-3


def register_collections(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Adds a partition for every configured source that has none yet; returns the new keys."""
    existing = set(instance.get_dynamic_partitions(COLLECTIONS.name))
    new = [s.name for s in settings.doc_sources if s.name not in existing]
    if new:
        instance.add_dynamic_partitions(COLLECTIONS.name, new)
    return new


def load_source(source: DocSource) -> tuple[list[documents.Document], list[documents.Skipped]]:
    """The source's documents and skipped files (its golden question set is not a skipped document)."""
    docs, skipped = documents.load_documents(source.root, source.name, include=source.include)
    root = source.root.resolve()
    golden = source.golden.resolve() if source.golden else None
    relative = golden.relative_to(root).as_posix() if golden and golden.is_relative_to(root) else None
    return docs, [s for s in skipped if s.path != relative]


def _spec(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, partitions_def=COLLECTIONS, description=description, blocking=blocking)


_COMMON = dict(
    group_name=RAG_GROUP,
    owners=OWNERS,
    partitions_def=COLLECTIONS,
    freshness_policy=DOCS_FRESHNESS,
)


def rag_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=RAW_DOCUMENTS,
        description="Documents (Markdown, text, HTML) of one configured source: stable id from the path within "
        "the source, content hash, title, updated time. Never follows links or leaves the source root; binary, "
        "undecodable and oversize files are reported, not loaded.",
        kinds={"python", "duckdb"},
        pool=DUCKDB_POOL,
        metadata=COLLECTION_PARTITION_EXPR,
        check_specs=[
            _spec(LOADED_CHECK, RAW_DOCUMENTS, "Every file under the source root is loaded or reported with a reason.")
        ],
        **_COMMON,
    )
    def raw_documents(context: dg.AssetExecutionContext):
        source = settings.doc_source(context.partition_key)
        docs, skipped = load_source(source)
        frame = documents.documents_frame(docs).with_columns(pl.lit(source.name).alias("collection"))
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "bytes": int(frame["size"].sum() or 0),
                "skipped": len(skipped),
                "root": str(source.root),
            },
        )
        reasons = {s.path: s.reason for s in skipped}
        verdict = Verdict(
            not skipped,
            "WARN",
            f"{len(docs)} documents loaded, {len(skipped)} files skipped" + (f": {reasons}" if skipped else ""),
        )
        yield check_result(
            verdict, {"skipped": dg.MetadataValue.json(reasons)}, check_name=LOADED_CHECK, asset_key=RAW_DOCUMENTS
        )

    @dg.asset(
        name=DOCUMENT_CHUNKS,
        description="Structure-aware chunks: split on Markdown headings, code blocks and tables kept whole where "
        f"they fit, sized in the embedding model's own tokens (at most {chunking.MAX_TOKENS}), with the heading "
        "path; ids from document id and chunk content.",
        kinds={"python", "duckdb"},
        pool=DUCKDB_POOL,
        deps=[RAW_DOCUMENTS],
        metadata=COLLECTION_PARTITION_EXPR,
        check_specs=[
            _spec(
                TOKENS_CHECK,
                DOCUMENT_CHUNKS,
                f"Every chunk has at most {chunking.MAX_TOKENS} tokens and a unique id.",
                True,
            )
        ],
        **_COMMON,
    )
    def document_chunks(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        raw = query(
            warehouse,
            f"select * from main.{RAW_DOCUMENTS} where collection = ? order by doc_id",
            [context.partition_key],
        )
        counter = chunking.TokenCounter()
        started = time.perf_counter()
        chunks = [c for doc in _documents(raw) for c in chunking.chunk_document(doc, counter)]
        frame = chunking.chunks_frame(chunks).with_columns(pl.lit(context.partition_key).alias("collection"))
        tokens = frame["tokens"] if frame.height else pl.Series([0])
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "documents": raw.height,
                "max_tokens": int(tokens.max()),
                "mean_tokens": round(float(tokens.mean()), 1),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        over = int((tokens > chunking.MAX_TOKENS).sum())
        duplicates = frame.height - frame["chunk_id"].n_unique() if frame.height else 0
        verdict = Verdict(
            over == 0 and duplicates == 0,
            "ERROR",
            f"{frame.height} chunks, {over} over {chunking.MAX_TOKENS} tokens, {duplicates} duplicate ids",
        )
        yield check_result(
            verdict,
            {"over_limit": over, "duplicate_ids": duplicates},
            check_name=TOKENS_CHECK,
            asset_key=DOCUMENT_CHUNKS,
        )

    @dg.asset(
        name=CHUNK_EMBEDDINGS,
        description=f"One {embedding.DIMENSION}-dimensional, normalized {embedding.MODEL_NAME} vector per chunk. "
        "Content-addressed: a chunk whose text was embedded before by the same model (in any collection) reuses "
        "that vector; only new text is embedded.",
        kinds={"python", "pytorch", "duckdb"},
        pool=DUCKDB_POOL,
        deps=[DOCUMENT_CHUNKS],
        metadata=COLLECTION_PARTITION_EXPR,
        check_specs=[_spec(COVERAGE_CHECK, CHUNK_EMBEDDINGS, "Every chunk has exactly one vector of the model.", True)],
        **_COMMON,
    )
    def chunk_embeddings(context: dg.AssetExecutionContext, warehouse: DuckDBResource, embedder: Embedder):
        collection = context.partition_key
        chunks = query(
            warehouse,
            f"select chunk_id, content_hash, text from main.{DOCUMENT_CHUNKS} where collection = ? order by chunk_id",
            [collection],
        )
        cached = _cached_vectors(warehouse, embedding.MODEL_NAME, chunks["content_hash"].unique().to_list())
        todo = chunks.filter(~pl.col("content_hash").is_in(cached["content_hash"].implode())).unique(
            "content_hash", keep="first", maintain_order=True
        )
        started = time.perf_counter()
        fresh = pl.DataFrame(schema=cached.schema)
        if todo.height:

            def progress(done: int, total: int) -> None:
                context.log.info(f"embedded {done}/{total} chunks of {collection}")

            vectors = embedder.embed(todo["text"].to_list(), progress=progress)
            fresh = pl.DataFrame({"content_hash": todo["content_hash"], "embedding": vectors}, schema=cached.schema)
        seconds = time.perf_counter() - started
        frame = (
            chunks.select("chunk_id", "content_hash")
            .join(pl.concat([cached, fresh]), on="content_hash", how="left")
            .with_columns(pl.lit(embedding.MODEL_NAME).alias("model"), pl.lit(collection).alias("collection"))
        )
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "embedded": todo.height,
                "reused": frame.height - todo.height,
                "embed_seconds": round(seconds, 3),
                "texts_per_second": round(todo.height / seconds, 1) if todo.height and seconds else 0.0,
                "model": embedding.MODEL_NAME,
            },
        )
        missing = int(frame["embedding"].is_null().sum())
        verdict = Verdict(missing == 0, "ERROR", f"{frame.height - missing} of {frame.height} chunks have a vector")
        yield check_result(verdict, {"missing": missing}, check_name=COVERAGE_CHECK, asset_key=CHUNK_EMBEDDINGS)

    @dg.asset(
        name=VECTOR_COLLECTION,
        description="The ChromaDB collection (cosine space) of one source, kept in exact sync with its chunks: new "
        "chunks added, moved ones updated, those of changed or deleted documents removed; a run with nothing "
        "changed writes nothing. Each vector carries document id, source path, heading path, chunk index, content "
        "hash, model and dimension; the collection refuses another model's vectors.",
        kinds={"python", "chromadb"},
        deps=[CHUNK_EMBEDDINGS],
        pool=DUCKDB_POOL,  # reads the warehouse, which a writer in another run holds exclusively
        **_COMMON,
    )
    def vector_collection(context: dg.AssetExecutionContext, warehouse: DuckDBResource, chroma: VectorStore):
        collection = chroma.collection(context.partition_key)
        records = _records(warehouse, context.partition_key)
        started = time.perf_counter()

        def progress(stage: str, done: int, total: int) -> None:
            context.log.info(f"{stage}: {done}/{total} vectors")

        report = sync_collection(collection, records, progress=progress)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(records),
                "added": report.added,
                "updated": report.updated,
                "deleted": report.deleted,
                "unchanged": report.unchanged,
                "writes": report.writes,
                "no_op": report.writes == 0,
                "sync_seconds": round(time.perf_counter() - started, 3),
                "store": chroma.location,
            }
        )

    return [raw_documents, document_chunks, chunk_embeddings, vector_collection]


def _documents(raw: pl.DataFrame) -> list[documents.Document]:
    fields = documents.Document.__dataclass_fields__
    return [documents.Document(**{k: v for k, v in row.items() if k in fields}) for row in raw.iter_rows(named=True)]


def _cached_vectors(warehouse: DuckDBResource, model: str, hashes: list[str]) -> pl.DataFrame:
    schema = {"content_hash": pl.String, "embedding": pl.Array(pl.Float32, embedding.DIMENSION)}
    if not hashes or not table_exists(warehouse, CHUNK_EMBEDDINGS):
        return pl.DataFrame(schema=schema)
    found = query(
        warehouse,
        f"select content_hash, any_value(embedding) as embedding from main.{CHUNK_EMBEDDINGS} "
        "where model = ? and content_hash in (select unnest(?)) group by content_hash",
        [model, hashes],
    )
    return found.cast(schema)


def _records(warehouse: DuckDBResource, collection: str) -> list[VectorRecord]:
    rows = query(
        warehouse,
        f"""
        select c.chunk_id, c.text, c.doc_id, d.path, d.content_hash as doc_hash, c.heading_path, c.index,
               c.content_hash, e.embedding
        from main.{DOCUMENT_CHUNKS} c
        join main.{RAW_DOCUMENTS} d on d.collection = c.collection and d.doc_id = c.doc_id
        join main.{CHUNK_EMBEDDINGS} e on e.collection = c.collection and e.chunk_id = c.chunk_id
        where c.collection = ?
        order by c.chunk_id
        """,
        [collection],
    )
    return [
        VectorRecord(
            id=row["chunk_id"],
            embedding=np.asarray(row["embedding"], dtype=np.float32),
            document=row["text"],
            metadata={
                "doc_id": row["doc_id"],
                "source_path": row["path"],
                "doc_hash": row["doc_hash"],
                "heading_path": retrieval.HEADING_SEPARATOR.join(row["heading_path"]),
                "chunk_index": row["index"],
                "content_hash": row["content_hash"],
                "model": embedding.MODEL_NAME,
                "dimension": embedding.DIMENSION,
            },
        )
        for row in rows.iter_rows(named=True)
    ]


def rag_checks(settings: Settings) -> dg.AssetChecksDefinition:
    """Checks read the collection back from Chroma, so they can be re-run on their own from the UI."""

    @dg.multi_asset_check(
        pool=DUCKDB_POOL,  # reads the chunks from the warehouse
        specs=[
            _spec(
                SYNC_CHECK, VECTOR_COLLECTION, "Same ids as the chunks (no orphans, none missing), same vectors.", True
            ),
            _spec(
                VALID_CHECK,
                VECTOR_COLLECTION,
                f"Every vector has {embedding.DIMENSION} finite values and unit norm.",
                True,
            ),
            _spec(
                STALE_CHECK,
                VECTOR_COLLECTION,
                "The collection reflects every document now in the source (content hashes).",
            ),
            _spec(
                GATE_CHECK,
                VECTOR_COLLECTION,
                "recall@5 of the source's golden question set (gold passages found in the top 5) stays above its "
                "threshold.",
                True,
            ),
        ],
        can_subset=False,
    )
    def vector_collection_checks(
        context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource, chroma: VectorStore, embedder: Embedder
    ):
        name = context.partition_key
        source = settings.doc_source(name)
        collection = chroma.collection(name)
        ids, vectors, metadatas = collection_vectors(collection)
        expected = {r.id: r for r in _records(warehouse, name)}
        yield _sync_result(ids, vectors, expected)
        yield _valid_result(vectors)
        yield _stale_result(source, metadatas)
        yield _gate_result(source, collection, embedder)

    return vector_collection_checks


def _sync_result(ids: list[str], vectors: np.ndarray, expected: dict) -> dg.AssetCheckResult:
    orphans = sorted(set(ids) - set(expected))
    missing = sorted(set(expected) - set(ids))
    common = [i for i in ids if i in expected]
    position = {i: n for n, i in enumerate(ids)}
    moved = [i for i in common if not np.allclose(vectors[position[i]], expected[i].embedding, atol=1e-6)]
    verdict = Verdict(
        not (orphans or missing or moved),
        "ERROR",
        f"{len(ids)} vectors for {len(expected)} chunks: {len(orphans)} orphans, {len(missing)} missing, "
        f"{len(moved)} differ from the pipeline's embedding",
    )
    metadata = {
        "vectors": len(ids),
        "chunks": len(expected),
        "orphans": len(orphans),
        "missing": len(missing),
        "vectors_differing": len(moved),
        "examples": dg.MetadataValue.json((orphans + missing + moved)[:5]),
    }
    return check_result(verdict, metadata, check_name=SYNC_CHECK, asset_key=VECTOR_COLLECTION)


def _valid_result(vectors: np.ndarray) -> dg.AssetCheckResult:
    width = vectors.shape[1] if vectors.ndim == 2 else 0
    finite = bool(np.isfinite(vectors).all())
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.ones(1)
    off = int((np.abs(norms - 1) > NORM_TOLERANCE).sum())
    ok = (width == embedding.DIMENSION or not len(vectors)) and finite and off == 0
    verdict = Verdict(ok, "ERROR", f"dimension {width}, all finite: {finite}, {off} vectors not of unit norm")
    metadata = {
        "dimension": width,
        "not_unit_norm": off,
        "min_norm": float(norms.min()),
        "max_norm": float(norms.max()),
    }
    return check_result(verdict, metadata, check_name=VALID_CHECK, asset_key=VECTOR_COLLECTION)


def _indexed_hashes(metadatas: list[dict]) -> dict[str, str]:
    return {m["doc_id"]: m["doc_hash"] for m in metadatas}


def _drift_metadata(drift: documents.IndexDrift) -> dict:
    return {
        "changed": len(drift.changed),
        "new": len(drift.added),
        "deleted": len(drift.deleted),
        "examples": dg.MetadataValue.json(drift.stale[:5]),
    }


def _stale_result(source: DocSource, metadatas: list[dict]) -> dg.AssetCheckResult:
    indexed = _indexed_hashes(metadatas)
    drift = documents.index_drift(load_source(source)[0], indexed)
    verdict = Verdict(
        not drift.stale,
        "WARN",
        f"{len(drift.changed)} changed, {len(drift.added)} new (or without chunks), {len(drift.deleted)} deleted "
        "documents since the last sync"
        if drift.stale
        else f"all {len(indexed)} indexed documents match the source",
    )
    return check_result(verdict, _drift_metadata(drift), check_name=STALE_CHECK, asset_key=VECTOR_COLLECTION)


def collection_lag_check(settings: Settings) -> dg.AssetChecksDefinition:
    """Hourly, on its own: every collection reflects every document changed more than `LAG_GRACE` ago.

    The document sensor reacts within a minute; this catches a sensor, daemon or run that stopped carrying changes.
    """

    @dg.asset_check(
        asset=VECTOR_COLLECTION,
        name=COLLECTIONS_LAG_CHECK,
        description=f"Every collection reflects every document added or changed more than "
        f"{int(LAG_GRACE.total_seconds() // 60)} minutes ago (and no deleted one), evaluated hourly.",
        automation_condition=dg.AutomationCondition.cron_tick_passed("20 * * * *").with_label("hourly at :20"),
    )
    def collections_current(context: dg.AssetCheckExecutionContext, chroma: VectorStore):
        cutoff = datetime.now(UTC) - LAG_GRACE
        built = set(context.instance.get_dynamic_partitions(COLLECTIONS.name))
        metadata, lagging = {}, []
        for source in settings.doc_sources:
            metadatas = collection_vectors(chroma.collection(source.name))[2] if source.name in built else []
            drift = documents.index_drift(load_source(source)[0], _indexed_hashes(metadatas), modified_before=cutoff)
            metadata[f"{source.name}/behind"] = len(drift.stale)
            lagging += [f"{source.name}: {doc}" for doc in drift.stale]
        verdict = Verdict(
            not lagging,
            "ERROR",
            f"{len(lagging)} document(s) not reflected in their collection more than "
            f"{int(LAG_GRACE.total_seconds() // 60)} minutes after their change"
            if lagging
            else f"all {len(settings.doc_sources)} collection(s) reflect their sources",
        )
        return check_result(verdict, {**metadata, "examples": dg.MetadataValue.json(lagging[:5])})

    return collections_current


class _TimedCollection:
    """Times each search the gate sends to the collection, so the gate reports the latency it saw."""

    def __init__(self, collection):
        self.collection = collection
        self.milliseconds: list[float] = []

    def query(self, **kwargs):
        started = time.perf_counter()
        found = self.collection.query(**kwargs)
        self.milliseconds.append((time.perf_counter() - started) * 1000)
        return found


def _gate_result(source: DocSource, collection, embedder: Embedder) -> dg.AssetCheckResult:
    if source.golden is None:
        return check_result(
            Verdict(True, "ERROR", "no golden question set for this source"),
            {},
            check_name=GATE_CHECK,
            asset_key=VECTOR_COLLECTION,
        )
    golden = retrieval.GoldenSet.load(source.golden)
    questions = embedder.embed([q.question for q in golden.questions])
    timed = _TimedCollection(collection)
    result = retrieval.evaluate(timed, questions, golden)
    recall = result.recall[5]
    latencies = np.asarray(timed.milliseconds)
    verdict = Verdict(
        recall >= golden.threshold,
        "ERROR",
        f"recall@5 {recall:.3f} on {result.questions} questions (threshold {golden.threshold})",
    )
    metadata = {
        **result.metadata(),
        "threshold": golden.threshold,
        "questions": result.questions,
        "misses": dg.MetadataValue.json(result.misses[:10]),
        # Every search's latency, for the exporter's histogram (ai_pipeline.monitoring).
        "search_p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "search_p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "search_latencies_ms": dg.MetadataValue.json([round(float(ms), 3) for ms in latencies]),
    }
    return check_result(verdict, metadata, check_name=GATE_CHECK, asset_key=VECTOR_COLLECTION)


def documents_sensor(settings: Settings) -> dg.SensorDefinition:
    """Registers every configured source as a partition and reloads the documents of a source whose files changed.

    The automation sensor then carries the change to chunks, embeddings and the vector collection.

    The cursor holds each source's fingerprint (names, sizes and modification times of its files, no content
    read); a run key of source and fingerprint means one run per state of the files, however often it ticks.
    """

    @dg.sensor(
        name=DOCUMENTS_SENSOR,
        target=[RAW_DOCUMENTS],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New document sources become partitions of the RAG assets; added, changed or deleted files "
        "request a reload of their documents, which automation carries down to the vector collection.",
    )
    def document_sources(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        known = json.loads(context.cursor) if context.cursor else {}
        existing = set(context.instance.get_dynamic_partitions(COLLECTIONS.name))
        new = [s.name for s in settings.doc_sources if s.name not in existing]
        current, requests, skipped = {}, [], []
        for source in settings.doc_sources:
            try:
                current[source.name] = documents.fingerprint(source.root, source.include)
            except (OSError, ValueError) as error:
                skipped.append(f"{source.name}: {error}")
                continue
            if current[source.name] != known.get(source.name):
                requests.append(
                    dg.RunRequest(partition_key=source.name, run_key=f"{source.name}:{current[source.name]}")
                )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[COLLECTIONS.build_add_request(new)] if new else [],
            cursor=json.dumps(current, sort_keys=True),
            skip_reason="; ".join(skipped) if skipped and not requests else None,
        )

    return document_sources
