"""The vector store on real Chroma (embedded in tmp_path, and a `chroma run` server) with real embeddings of
small real texts: cosine space, model guard, exact sync (no-op re-runs write nothing), crash-resume after a
SIGKILL mid-sync, persistence, server mode and queries."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ai_pipeline.lib.rag import vector_store
from ai_pipeline.lib.rag.embedding import DIMENSION, MODEL_NAME, Embedder
from ai_pipeline.lib.rag.vector_store import (
    Hit,
    ModelMismatch,
    SyncReport,
    VectorRecord,
    collection_vectors,
    current_state,
    open_client,
    open_collection,
    plan_sync,
    query,
    sync_collection,
    upsert_guard,
)
from ai_pipeline_support.chroma_server import chroma_server as running_chroma

# The slow tier (not in `make test-fast`): the embedding model and a `chroma run` server.
pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NAME = "chunks"

# Six small documents of five paragraphs: (doc_id, heading, paragraphs).
DOCS = [
    (
        "pipeline",
        "Overview",
        [
            "The pipeline turns raw event files into validated tables every night.",
            "Each asset records its row count and schema as metadata.",
            "Failed validations stop the downstream assets from running.",
            "A daily schedule starts the job shortly after midnight UTC.",
            "Backfills rebuild older partitions without touching newer ones.",
        ],
    ),
    (
        "features",
        "User features",
        [
            "Window features sum each user's spending over seven, thirty and ninety days.",
            "Daily partial aggregates are computed once and combined into windows.",
            "The online store keeps only the newest feature vector of every user.",
            "A lookup by user id returns the features in the order requested.",
            "Point-in-time correctness means no feature reads an event from the future.",
        ],
    ),
    (
        "retail",
        "Online retail",
        [
            "The shop sells gift items to customers in many European countries.",
            "Most customers who order in November order again in December.",
            "Returned items appear as invoices with a negative quantity.",
            "Wholesale buyers place fewer but much larger orders.",
            "The busiest trading day of the year is just before Christmas.",
        ],
    ),
    (
        "garden",
        "Gardening",
        [
            "Tomatoes need full sun and regular watering to ripen well.",
            "Prune the roses in late winter before new shoots appear.",
            "Compost improves heavy clay soil over a few seasons.",
            "Slugs come out at night and eat young lettuce leaves.",
            "Sow beans directly outdoors once the frosts have passed.",
        ],
    ),
    (
        "cooking",
        "Baking bread",
        [
            "Knead the dough until it is smooth and springs back when pressed.",
            "Let the dough rise in a warm place until it doubles in size.",
            "A hot oven and a tray of water give the loaf a crisp crust.",
            "Sourdough uses a starter of wild yeast instead of dried yeast.",
            "Cool the bread on a rack so the bottom does not turn soggy.",
        ],
    ),
    (
        "search",
        "Semantic search",
        [
            "Sentence embeddings place texts with similar meaning close together.",
            "Cosine similarity compares the directions of two vectors.",
            "A vector database returns the nearest stored chunks to a query vector.",
            "Chunks are split at headings so each one covers a single topic.",
            "Re-embedding only changed chunks keeps the nightly run short.",
        ],
    ),
]
CHANGED_TEXT = "The pipeline turns raw event files into validated Parquet tables every night."
INSERTED_TEXT = "Every asset check result is stored in the run history."
NEW_DOC = (
    "weather",
    "Weather",
    ["Heavy rain is forecast for the weekend in the north.", "The summer was the warmest on record."],
)
QUERIES = ["How do I bake a loaf with a crunchy crust?", "Which features describe a user's purchases?"]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_records(docs, vectors: dict[str, np.ndarray]) -> list[VectorRecord]:
    """Chunk records as the chunker makes them: the id is deterministic from the document and the content."""
    records = []
    for doc_id, heading, paragraphs in docs:
        for index, text in enumerate(paragraphs):
            digest = content_hash(text)
            metadata = {
                "doc_id": doc_id,
                "source_path": f"docs/{doc_id}.md",
                "heading_path": " > ".join([doc_id.title(), heading]),
                "chunk_index": index,
                "content_hash": digest,
                "chars": len(text),
                "has_digits": any(c.isdigit() for c in text),
                "words_per_char": len(text.split()) / len(text),
            }
            records.append(VectorRecord(f"{doc_id}:{digest[:16]}", vectors[text], text, metadata))
    return records


def second_version(docs) -> list:
    """pipeline: paragraph 0 reworded (new id, old id gone) and a paragraph inserted at 2 (the later ones move:
    chunk_index changes, same ids); features: a new heading (all five updated); garden: deleted; weather: new."""
    changed = []
    for doc_id, heading, paragraphs in docs:
        if doc_id == "pipeline":
            paragraphs = [CHANGED_TEXT, paragraphs[1], INSERTED_TEXT, *paragraphs[2:]]
        if doc_id == "features":
            heading = "Feature store"
        if doc_id != "garden":
            changed.append((doc_id, heading, paragraphs))
    return [*changed, NEW_DOC]


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    """Real embeddings of every text the tests use, computed once."""
    texts = [t for _, _, ps in DOCS for t in ps] + [CHANGED_TEXT, INSERTED_TEXT, *NEW_DOC[2], *QUERIES]
    return dict(zip(texts, Embedder().embed(texts), strict=True))


@pytest.fixture(scope="module")
def v1(vectors) -> list[VectorRecord]:
    records = make_records(DOCS, vectors)
    assert len(records) == 30
    return records


@pytest.fixture(scope="module")
def v2(vectors) -> list[VectorRecord]:
    return make_records(second_version(DOCS), vectors)


def fresh(path: Path, name: str = NAME):
    return open_collection(open_client(path=path), name, model=MODEL_NAME, dimension=DIMENSION)


class Typed:
    """A metadata value compared with its type (1, True and 1.0 differ) and, for floats, within 1e-12 relative:
    Chroma returns some floats one unit in the last place off."""

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        if not isinstance(other, Typed) or type(self.value) is not type(other.value):
            return False
        if isinstance(self.value, float):
            return math.isclose(self.value, other.value, rel_tol=1e-12)
        return self.value == other.value

    def __repr__(self) -> str:
        return f"{type(self.value).__name__}({self.value!r})"


def typed(metadata: dict) -> dict:
    return {key: Typed(value) for key, value in metadata.items()}


def snapshot(collection) -> dict[str, tuple[str, dict, np.ndarray]]:
    """Everything in the collection, read in one plain `get` (not through the module under test)."""
    got = collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        id_: (document, typed(metadata or {}), np.asarray(vector, dtype=np.float32))
        for id_, document, metadata, vector in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        )
    }


def assert_same(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for id_, (document, metadata, vector) in expected.items():
        assert actual[id_][0] == document, id_
        assert actual[id_][1] == metadata, id_
        np.testing.assert_allclose(actual[id_][2], vector, atol=1e-6, err_msg=id_)


def assert_holds_exactly(collection, records: list[VectorRecord]) -> None:
    assert_same(snapshot(collection), {r.id: (r.document, typed(r.metadata), r.embedding) for r in records})


def test_open_collection_uses_cosine_space(tmp_path, v1, vectors) -> None:
    collection = fresh(tmp_path / "chroma")
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
    assert collection.metadata == {"embedding_model": MODEL_NAME, "embedding_backend": "torch", "dimension": 384}
    sync_collection(collection, v1)
    stored = {r.id: r.embedding for r in v1}
    q = vectors[QUERIES[0]]
    found = collection.query(query_embeddings=[q], n_results=10, include=["distances"])
    for id_, distance in zip(found["ids"][0], found["distances"][0], strict=True):
        assert abs(distance - (1 - float(q @ stored[id_]))) < 1e-4
    assert max(found["distances"][0]) < 1.5  # an L2 distance between unit vectors would be up to 4 (squared)


def test_reopen_with_another_model_or_dimension_is_refused(tmp_path, v1) -> None:
    client = open_client(path=tmp_path / "chroma")
    collection = open_collection(client, NAME, model=MODEL_NAME, dimension=DIMENSION)
    sync_collection(collection, v1[:3])
    with pytest.raises(ModelMismatch, match=r"all-MiniLM-L6-v2.*other/model-v2"):
        open_collection(client, NAME, model="other/model-v2", dimension=DIMENSION)
    with pytest.raises(ModelMismatch, match="768"):
        open_collection(client, NAME, model=MODEL_NAME, dimension=768)
    again = open_collection(client, NAME, model=MODEL_NAME, dimension=DIMENSION)
    assert again.count() == 3 and again.metadata == collection.metadata
    client.create_collection("l2-made-elsewhere", embedding_function=None, metadata=collection.metadata)
    with pytest.raises(ModelMismatch, match="l2"):
        open_collection(client, "l2-made-elsewhere", model=MODEL_NAME, dimension=DIMENSION)


def test_another_backend_is_refused_unless_rebuilt_from_re_embedded_vectors(tmp_path, v1) -> None:
    client = open_client(path=tmp_path / "chroma")
    torch = open_collection(client, NAME, model=MODEL_NAME, dimension=DIMENSION, backend="torch")
    sync_collection(torch, v1[:3])
    with pytest.raises(ModelMismatch, match=r"backend 'torch'.*backend 'onnx-int8'"):
        open_collection(client, NAME, model=MODEL_NAME, dimension=DIMENSION, backend="onnx-int8")
    # A record that says it holds another backend's vector is refused by the collection, whatever its values.
    other = VectorRecord(v1[3].id, v1[3].embedding, v1[3].document, {**v1[3].metadata, "backend": "onnx-int8"})
    with pytest.raises(ModelMismatch, match="re-embed"):
        sync_collection(torch, [*v1[:3], other])
    assert torch.count() == 3
    # A collection made before backends existed (no backend key) holds torch vectors.
    legacy = client.create_collection(
        "legacy",
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"embedding_model": MODEL_NAME, "dimension": 384},
    )
    legacy.add(ids=["a"], embeddings=[v1[0].embedding])
    assert open_collection(client, "legacy", model=MODEL_NAME, dimension=DIMENSION, backend="torch").count() == 1
    with pytest.raises(ModelMismatch):
        open_collection(client, "legacy", model=MODEL_NAME, dimension=DIMENSION, backend="onnx")
    # The writer that re-embedded every vector rebuilds the collection for the new backend: it starts empty.
    rebuilt = open_collection(client, NAME, model=MODEL_NAME, dimension=DIMENSION, backend="onnx-int8", rebuild=True)
    assert rebuilt.count() == 0 and rebuilt.metadata["embedding_backend"] == "onnx-int8"
    assert rebuilt.configuration_json["hnsw"]["space"] == "cosine"
    with pytest.raises(ModelMismatch):
        open_collection(client, NAME, model=MODEL_NAME, dimension=DIMENSION, backend="torch")


def test_upsert_guard_refuses_wrong_dimension_and_non_finite(tmp_path, v1) -> None:
    collection = fresh(tmp_path / "chroma")
    upsert_guard(collection, v1)
    good = v1[0]
    short = VectorRecord("short", good.embedding[:383], good.document, good.metadata)
    nan = good.embedding.copy()
    nan[7] = np.nan
    with_nan = VectorRecord("nan", nan, good.document, good.metadata)
    infinite = VectorRecord("inf", np.where(np.arange(384) == 3, np.inf, good.embedding), good.document, good.metadata)
    for bad in (short, with_nan, infinite):
        with pytest.raises(ModelMismatch, match=bad.id):
            upsert_guard(collection, [*v1[1:4], bad])
        with pytest.raises(ModelMismatch):
            sync_collection(collection, [*v1[1:4], bad])
        assert collection.count() == 0  # refused before any write


def test_sync_rejects_what_it_could_not_store_exactly(tmp_path, v1) -> None:
    collection = fresh(tmp_path / "chroma")
    with pytest.raises(ValueError, match="twice"):
        sync_collection(collection, [v1[0], v1[1], v1[0]])
    for value in (None, np.int64(3), [1, 2]):
        bad = VectorRecord("bad", v1[0].embedding, v1[0].document, {**v1[0].metadata, "chunk_index": value})
        with pytest.raises(TypeError, match="chunk_index"):
            sync_collection(collection, [bad])
    assert collection.count() == 0


def test_sync_adds_then_rerun_writes_nothing(tmp_path, v1) -> None:
    collection = fresh(tmp_path / "chroma")
    calls = []
    report = sync_collection(collection, v1, batch_size=8, progress=lambda *call: calls.append(call))
    assert report == SyncReport(added=30, updated=0, deleted=0, unchanged=0, batches=4)
    assert calls == [("upsert", 8, 30), ("upsert", 16, 30), ("upsert", 24, 30), ("upsert", 30, 30)]
    assert_holds_exactly(collection, v1)
    before = snapshot(collection)

    calls.clear()
    again = sync_collection(collection, v1, batch_size=8, progress=lambda *call: calls.append(call))
    assert again == SyncReport(added=0, updated=0, deleted=0, unchanged=30, batches=0)
    assert again.writes == 0 and calls == []
    assert_same(snapshot(collection), before)


def test_sync_updates_moves_and_deletes_exactly(tmp_path, v1, v2, vectors) -> None:
    collection = fresh(tmp_path / "chroma")
    sync_collection(collection, v1)
    calls = []
    report = sync_collection(collection, v2, batch_size=4, progress=lambda *call: calls.append(call))
    old, new = {r.id for r in v1}, {r.id for r in v2}
    # pipeline: 2 new ids, 3 moved; features: 5 re-headed; garden: 5 gone; weather: 2 new; old pipeline[0] gone
    assert report == SyncReport(added=4, updated=8, deleted=6, unchanged=16, batches=3 + 2)
    assert report.writes == 18
    assert calls == [("upsert", 4, 12), ("upsert", 8, 12), ("upsert", 12, 12), ("delete", 4, 6), ("delete", 6, 6)]
    assert len(new - old) == 4 and len(old - new) == 6
    assert_holds_exactly(collection, v2)
    moved = next(r for r in v2 if r.document == DOCS[0][2][4])
    assert moved.metadata["chunk_index"] == 5
    assert collection.get(ids=[moved.id])["metadatas"][0]["chunk_index"] == 5

    # A key a record no longer has is removed (Chroma's upsert alone would keep it); other fields change alone.
    first, second, third, *rest = v2
    dropped = VectorRecord(first.id, first.embedding, first.document, {"doc_id": first.metadata["doc_id"]})
    bare = VectorRecord(second.id, second.embedding, second.document, {})
    reworded = VectorRecord(third.id, third.embedding, third.document + " Really.", third.metadata)
    revectored = VectorRecord(rest[0].id, vectors[QUERIES[1]], rest[0].document, rest[0].metadata)
    v3 = [dropped, bare, reworded, revectored, *rest[1:]]
    report = sync_collection(collection, v3)
    assert (report.added, report.updated, report.deleted, report.unchanged) == (0, 4, 0, len(v2) - 4)
    assert_holds_exactly(collection, v3)
    assert current_state(collection)[second.id] == {}
    assert sync_collection(collection, v3).writes == 0

    emptied = sync_collection(collection, [], batch_size=5)
    assert emptied == SyncReport(added=0, updated=0, deleted=len(v3), unchanged=0, batches=math.ceil(len(v3) / 5))
    assert collection.count() == 0


def test_batch_size_is_capped_by_the_client(tmp_path, v1) -> None:
    collection = fresh(tmp_path / "chroma")
    report = sync_collection(collection, v1, batch_size=10**9)
    assert report.batches == 1 and collection.count() == 30
    with pytest.raises(ValueError):
        sync_collection(collection, v1, batch_size=0)


@pytest.mark.parametrize("page_size", [4, 5, 7, 1000])
def test_reads_page_through_the_whole_collection(tmp_path, v1, monkeypatch, page_size) -> None:
    collection = fresh(tmp_path / "chroma")
    sync_collection(collection, v1)
    monkeypatch.setattr(vector_store, "PAGE_SIZE", page_size)
    state = current_state(collection)
    assert {id_: typed(m) for id_, m in state.items()} == {r.id: typed(r.metadata) for r in v1}
    ids, matrix, metadatas = collection_vectors(collection)
    by_id = {r.id: r for r in v1}
    assert ids == sorted(by_id)
    assert matrix.dtype == np.float32 and matrix.shape == (30, 384)
    np.testing.assert_allclose(matrix, np.stack([by_id[i].embedding for i in ids]), atol=1e-6)
    assert [typed(m) for m in metadatas] == [typed(by_id[i].metadata) for i in ids]
    assert sync_collection(collection, v1).writes == 0  # the sync's own read pages too


def test_plan_sync_is_pure_and_type_strict(v1) -> None:
    current = {"a": {"n": 1}, "b": {"n": 2}, "c": {"flag": True}, "d": {}}
    desired = {"a": {"n": 1}, "b": {"n": 3}, "c": {"flag": 1}, "e": {"n": 5}}
    assert plan_sync(desired, current) == (["b", "c", "e"], ["d"], 1)
    assert current == {"a": {"n": 1}, "b": {"n": 2}, "c": {"flag": True}, "d": {}}
    assert plan_sync({"a": {"x": 1.0}}, {"a": {"x": 1}}) == (["a"], [], 0)
    state = {r.id: dict(r.metadata) for r in v1}
    assert plan_sync(v1, state) == ([], [], 30)
    state[v1[3].id]["chunk_index"] = 99
    del state[v1[4].id]
    state["stale"] = {"doc_id": "gone"}
    assert plan_sync(v1, state) == ([v1[3].id, v1[4].id], ["stale"], 28)


SYNC_SCRIPT = """
import json, sys, time
from pathlib import Path
import numpy as np
from ai_pipeline.lib.rag.vector_store import VectorRecord, open_client, open_collection, sync_collection

path, records_file, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
rows = json.loads(records_file.read_text())
matrix = np.load(records_file.with_suffix(".npy"))
records = [VectorRecord(r["id"], matrix[i], r["document"], r["metadata"]) for i, r in enumerate(rows)]
collection = open_collection(open_client(path=path), "chunks", model=sys.argv[4], dimension=int(sys.argv[5]))

def progress(stage, done, total):
    print(stage, done, total, flush=True)
    time.sleep(delay)

report = sync_collection(collection, records, batch_size=2, progress=progress)
print("done", report.writes, flush=True)
"""


def write_records(records: list[VectorRecord], path: Path) -> Path:
    path.write_text(json.dumps([{"id": r.id, "document": r.document, "metadata": r.metadata} for r in records]))
    np.save(path.with_suffix(".npy"), np.stack([r.embedding for r in records]))
    return path


def sync_process(script: Path, chroma: Path, records: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), str(chroma), str(records), str(delay), MODEL_NAME, str(DIMENSION)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sync_killed_mid_run_then_rerun_converges(tmp_path, v1, v2) -> None:
    script = tmp_path / "sync.py"
    script.write_text(textwrap.dedent(SYNC_SCRIPT))
    chroma = tmp_path / "chroma"
    first, second = write_records(v1, tmp_path / "v1.json"), write_records(v2, tmp_path / "v2.json")

    done = sync_process(script, chroma, first, 0.0)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert out.splitlines()[-1] == "done 30"

    killed = sync_process(script, chroma, second, 0.5)  # 6 upsert batches of 2, then 3 delete batches
    upserts = []
    try:
        for line in killed.stdout:
            if line.startswith("upsert"):
                upserts.append(line.split())
            if len(upserts) == 3:
                killed.send_signal(signal.SIGKILL)
                break
    finally:
        killed.kill()
        killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read()
    assert upserts == [["upsert", "2", "12"], ["upsert", "4", "12"], ["upsert", "6", "12"]]

    collection = fresh(chroma)
    interrupted = snapshot(collection)
    wanted = {r.id: (r.document, typed(r.metadata)) for r in v2}
    as_wanted = {i for i, (document, metadata, _) in interrupted.items() if wanted.get(i) == (document, metadata)}
    unchanged = {r.id for r in v1 if wanted.get(r.id) == (r.document, typed(r.metadata))}
    assert len(unchanged) == 16
    written = as_wanted - unchanged
    assert 0 < len(written) < 12  # some but not all of the 12 upserts landed
    assert len(set(interrupted) - set(wanted)) == 6  # and none of the 6 deletes

    report = sync_collection(collection, v2)
    assert (report.added + report.updated, report.deleted) == (12 - len(written), 6)
    assert sync_collection(collection, v2).writes == 0

    reference = fresh(tmp_path / "uninterrupted")
    sync_collection(reference, v1)
    sync_collection(reference, v2)
    assert_same(snapshot(collection), snapshot(reference))
    assert_holds_exactly(collection, v2)


def test_state_persists_across_processes(tmp_path, v1) -> None:
    chroma = tmp_path / "chroma"
    sync_collection(fresh(chroma), v1)
    code = (
        "import json, sys; from pathlib import Path; "
        "from ai_pipeline.lib.rag.vector_store import open_client, open_collection, collection_vectors; "
        "c = open_collection(open_client(path=Path(sys.argv[1])), 'chunks', model=sys.argv[2], dimension=384); "
        "ids, m, metas = collection_vectors(c); got = c.get(ids=ids); "
        "docs = [dict(zip(got['ids'], got['documents']))[i] for i in ids]; "
        "print(json.dumps({'ids': ids, 'vectors': m.tolist(), 'metadatas': metas, 'documents': docs}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(chroma), MODEL_NAME], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    by_id = {r.id: r for r in v1}
    assert seen["ids"] == sorted(by_id)
    assert seen["documents"] == [by_id[i].document for i in seen["ids"]]
    assert [typed(m) for m in seen["metadatas"]] == [typed(by_id[i].metadata) for i in seen["ids"]]
    expected = np.stack([by_id[i].embedding for i in seen["ids"]])
    np.testing.assert_allclose(np.array(seen["vectors"]), expected, atol=1e-6)


def test_query_ranks_by_cosine_similarity(tmp_path, v1, vectors) -> None:
    collection = fresh(tmp_path / "chroma")
    sync_collection(collection, v1)
    hits = query(collection, vectors[QUERIES[0]], k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].metadata["doc_id"] == "cooking" and "crust" in hits[0].document
    by_id = {r.id: r for r in v1}
    for hit in hits:
        assert isinstance(hit, Hit) and hit.document == by_id[hit.id].document
        assert abs(hit.score - float(vectors[QUERIES[0]] @ by_id[hit.id].embedding)) < 1e-4
    everything = query(collection, vectors[QUERIES[0]], k=100)
    assert len(everything) == 30 and everything[:4] == hits
    assert {h.id for h in everything} == set(by_id)

    duplicate = v1[17]
    top = query(collection, Embedder().embed_query(duplicate.document), k=3)[0]
    assert top.id == duplicate.id and top.score == pytest.approx(1.0, abs=1e-5)
    assert typed(top.metadata) == typed(duplicate.metadata)

    features = query(collection, vectors[QUERIES[1]], k=3, where={"doc_id": "features"})
    assert len(features) == 3 and {h.metadata["doc_id"] for h in features} == {"features"}
    assert query(collection, vectors[QUERIES[1]], k=5, where={"doc_id": "nothing-like-this"}) == []
    with pytest.raises(ValueError):
        query(collection, np.stack([vectors[QUERIES[0]]] * 2))
    with pytest.raises(ValueError):
        query(collection, vectors[QUERIES[0]], k=0)


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory) -> Iterator[str]:
    """A real `chroma run` in its own process group; the URL once it answers heartbeats."""
    try:
        with running_chroma(tmp_path_factory.mktemp("chroma-server")) as url:
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))


def test_server_mode_matches_embedded(chroma_server, tmp_path, v1, v2, vectors) -> None:
    remote = open_collection(open_client(url=chroma_server), NAME, model=MODEL_NAME, dimension=DIMENSION)
    local = fresh(tmp_path / "chroma")
    for records in (v1, v2):
        remote_report = sync_collection(remote, records, batch_size=7)
        assert remote_report == sync_collection(local, records, batch_size=7)
        assert_same(snapshot(remote), snapshot(local))
        assert_holds_exactly(remote, records)
        for text in QUERIES:
            remote_hits, local_hits = query(remote, vectors[text], k=5), query(local, vectors[text], k=5)
            assert [h.id for h in remote_hits] == [h.id for h in local_hits]
            assert [h.metadata for h in remote_hits] == [h.metadata for h in local_hits]
            np.testing.assert_allclose([h.score for h in remote_hits], [h.score for h in local_hits], atol=1e-5)
    assert sync_collection(remote, v2).writes == 0
    with pytest.raises(ModelMismatch):
        open_collection(open_client(url=chroma_server), NAME, model="other/model", dimension=DIMENSION)


def test_import_is_light() -> None:
    """Importing the module (as the Dagster code location does) does not import chromadb."""
    code = (
        "import sys; import ai_pipeline.lib.rag.vector_store; print('chromadb' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_open_client_takes_exactly_one_target(tmp_path) -> None:
    with pytest.raises(ValueError):
        open_client()
    with pytest.raises(ValueError):
        open_client(path=tmp_path, url="http://127.0.0.1:8000")
    with pytest.raises(ValueError):
        open_client(url="127.0.0.1:8000")
