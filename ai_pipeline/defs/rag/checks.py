"""Checks on a vector collection, read back from Chroma so they can be re-run on their own from the UI: exact
sync with the chunks, valid vectors, staleness against the sources, the retrieval gate; and the hourly lag check.
"""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.keys import (
    COLLECTIONS_LAG_CHECK,
    DUCKDB_POOL,
    GATE_CHECK,
    STALE_CHECK,
    SYNC_CHECK,
    VALID_CHECK,
    VECTOR_COLLECTION,
)
from ai_pipeline.defs.rag.assets import (
    COLLECTIONS,
    collection_check_spec,
    lexical_entries,
    load_source,
    vector_records,
)
from ai_pipeline.defs.reporting import check_result
from ai_pipeline.defs.resources import Embedder, VectorStore
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.lib.rag import documents, embedding, lexical, retrieval
from ai_pipeline.lib.rag.vector_store import collection_vectors
from ai_pipeline.settings import DocSource, Settings

NORM_TOLERANCE = 1e-3


# A document change has this long to reach its collection before the hourly lag check counts it.
LAG_GRACE = timedelta(minutes=30)


def rag_checks(settings: Settings) -> dg.AssetChecksDefinition:
    """Checks read the collection back from Chroma, so they can be re-run on their own from the UI."""

    @dg.multi_asset_check(
        pool=DUCKDB_POOL,  # reads the chunks from the warehouse
        specs=[
            collection_check_spec(
                SYNC_CHECK,
                VECTOR_COLLECTION,
                "Same ids as the chunks (no orphans, none missing), same vectors; the BM25 index holds exactly the "
                "chunks' ids and texts.",
                True,
            ),
            collection_check_spec(
                VALID_CHECK,
                VECTOR_COLLECTION,
                f"Every vector has {embedding.DIMENSION} finite values and unit norm.",
                True,
            ),
            collection_check_spec(
                STALE_CHECK,
                VECTOR_COLLECTION,
                "The collection reflects every document now in the source (content hashes).",
            ),
            collection_check_spec(
                GATE_CHECK,
                VECTOR_COLLECTION,
                "recall@5 of the source's golden question set (gold passages found in the top 5), searched in the "
                "configured mode (dense, lexical or hybrid), stays above its threshold.",
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
        collection = chroma.collection(name, embedder.backend)
        ids, vectors, metadatas = collection_vectors(collection)
        records = vector_records(warehouse, name)
        expected = {r.id: r for r in records}
        indexed = chroma.lexical(name).version
        yield _sync_result(ids, vectors, expected, indexed == lexical.version_of(lexical_entries(records)))
        yield _valid_result(vectors)
        yield _stale_result(source, metadatas)
        yield _gate_result(source, collection, chroma, embedder)

    return vector_collection_checks


def _sync_result(ids: list[str], vectors: np.ndarray, expected: dict, lexical_in_sync: bool) -> dg.AssetCheckResult:
    orphans = sorted(set(ids) - set(expected))
    missing = sorted(set(expected) - set(ids))
    common = [i for i in ids if i in expected]
    position = {i: n for n, i in enumerate(ids)}
    moved = [i for i in common if not np.allclose(vectors[position[i]], expected[i].embedding, atol=1e-6)]
    verdict = Verdict(
        not (orphans or missing or moved) and lexical_in_sync,
        "ERROR",
        f"{len(ids)} vectors for {len(expected)} chunks: {len(orphans)} orphans, {len(missing)} missing, "
        f"{len(moved)} differ from the pipeline's embedding; BM25 index "
        + ("in sync" if lexical_in_sync else "out of sync with the chunks"),
    )
    metadata = {
        "vectors": len(ids),
        "chunks": len(expected),
        "orphans": len(orphans),
        "missing": len(missing),
        "vectors_differing": len(moved),
        "lexical_in_sync": lexical_in_sync,
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
    def collections_current(context: dg.AssetCheckExecutionContext, chroma: VectorStore, embedder: Embedder):
        cutoff = datetime.now(UTC) - LAG_GRACE
        built = set(context.instance.get_dynamic_partitions(COLLECTIONS.name))
        metadata, lagging = {}, []
        for source in settings.doc_sources:
            metadatas = (
                collection_vectors(chroma.collection(source.name, embedder.backend))[2] if source.name in built else []
            )
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


def _gate_result(source: DocSource, collection, chroma: VectorStore, embedder: Embedder) -> dg.AssetCheckResult:
    if source.golden is None:
        return check_result(
            Verdict(True, "ERROR", "no golden question set for this source"),
            {},
            check_name=GATE_CHECK,
            asset_key=VECTOR_COLLECTION,
        )
    golden = retrieval.GoldenSet.load(source.golden)
    questions = embedder.embed([q.question for q in golden.questions])
    config = chroma.search_config()
    index = chroma.lexical(collection.name)
    milliseconds: list[float] = []

    def searcher(text: str, vector: np.ndarray, k: int):
        started = time.perf_counter()
        hits = retrieval.search(collection, index, text, vector, k=k, config=config)
        milliseconds.append((time.perf_counter() - started) * 1000)
        return hits

    result = retrieval.evaluate(searcher, questions, golden)
    recall = result.recall[5]
    latencies = np.asarray(milliseconds)
    verdict = Verdict(
        recall >= golden.threshold,
        "ERROR",
        f"recall@5 {recall:.3f} on {result.questions} questions, {config.mode} search (threshold {golden.threshold})",
    )
    metadata = {
        **result.metadata(),
        "threshold": golden.threshold,
        "questions": result.questions,
        "search_mode": config.mode,
        "misses": dg.MetadataValue.json(result.misses[:10]),
        # Every search's latency, for the exporter's histogram (ai_pipeline.monitoring).
        "search_p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "search_p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "search_latencies_ms": dg.MetadataValue.json([round(float(ms), 3) for ms in latencies]),
    }
    return check_result(verdict, metadata, check_name=GATE_CHECK, asset_key=VECTOR_COLLECTION)
