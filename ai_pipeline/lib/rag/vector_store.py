"""The vector store: a Chroma collection kept exactly in sync with the chunks' embeddings, and a thin query.

One collection holds the vectors of one model on one backend. `open_collection` creates it in cosine space (the
embeddings are unit vectors, so a hit's score `1 - distance` is the cosine similarity) with the model, backend and
dimension in its metadata, and refuses (`ModelMismatch`) to reuse a collection made for another model, backend,
dimension or space: mixing vectors of two models in one index gives meaningless neighbours, and two backends of one
model agree only to a cosine of ~0.99, so a query embedded on one ranks the other's vectors slightly off. Such a
collection is rebuilt (`rebuild=True`) only by a writer that holds every vector re-embedded. A collection made
before backends existed has no backend key and holds torch vectors.
Chroma 1.5 honours both `configuration={"hnsw": {"space": "cosine"}}` and the legacy metadata key
`"hnsw:space"`; the configuration is used, so the collection's metadata holds only our keys.

Chroma never embeds here: collections are made with `embedding_function=None` and every write and query passes
vectors (its default embedding function downloads a model, which fails offline).

`sync_collection` makes the collection hold exactly the given records, like the "full" cleanup mode of
LangChain's indexing API but computed against the collection itself rather than a separate record manager: it
reads the current ids, metadata, documents and vectors (paged), upserts the records that are new or differ in
any of them, leaves identical ones alone (a re-run with nothing changed writes nothing) and deletes ids that
are no longer wanted. Chroma's upsert merges metadata into the stored one, so a key a record no longer has is
sent as None, which removes it. Deletes come after upserts: while a sync runs, a reader may see a changed
document's old and new chunks side by side, never neither. It assumes one writer per collection at a time.

Ids, documents and metadata go to Chroma as they are. Vectors are stored as float32 and, in cosine space,
renormalized by Chroma, so a unit vector can come back a few float32 units in the last place off: vectors
compare as directions (normalized, within 1e-6 per component), page by page. Metadata values are str, int,
float or bool, compared with their types (1, True and 1.0 differ); None is refused because Chroma reads it as
"remove this key", and an empty metadata is stored as none and read back as {}. Chroma 1.5 returns about one
float metadata value in eight one unit in the last place off (0.15789473684210525 comes back as
0.15789473684210523), so floats compare within a relative 1e-12: compared exactly, those records would be
rewritten by every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

SPACE = "cosine"
MODEL_KEY = "embedding_model"
BACKEND_KEY = "embedding_backend"
LEGACY_BACKEND = "torch"  # collections made before backends existed
DIMENSION_KEY = "dimension"
PAGE_SIZE = 1000  # rows per collection.get while reading a collection
DEFAULT_PORT = 8000

MetadataValue = str | int | float | bool


@dataclass(frozen=True)
class VectorRecord:
    id: str  # the chunk id (deterministic, from the chunker)
    embedding: np.ndarray  # float32 (dim,)
    document: str  # the chunk text
    metadata: dict[str, MetadataValue]  # doc_id, source_path, heading_path, chunk_index, content_hash, ...


class ModelMismatch(ValueError):
    """The collection and the vectors offered to it do not belong together (model, dimension, space, or a vector
    that is not a finite vector of the collection's dimension)."""


def open_client(*, path: Path | None = None, url: str | None = None) -> Any:
    """An embedded `PersistentClient` on directory `path`, or an `HttpClient` for a server at `url`
    ("http://127.0.0.1:8000"); exactly one of them. Telemetry is off."""
    if (path is None) == (url is None):
        raise ValueError("open_client takes exactly one of path= and url=")
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"expected a Chroma server URL like http://127.0.0.1:8000, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else DEFAULT_PORT)
    return chromadb.HttpClient(host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=settings)


def _space(collection: Any) -> str | None:
    configuration = collection.configuration_json or {}  # the raw form: `.configuration` warns about legacy EFs
    index = configuration.get("hnsw") or configuration.get("spann") or {}
    return index.get("space") or (collection.metadata or {}).get("hnsw:space")


def open_collection(
    client: Any, name: str, *, model: str, dimension: int, backend: str = LEGACY_BACKEND, rebuild: bool = False
) -> Any:
    """The collection `name`, created if absent in cosine space with metadata {"embedding_model": model,
    "embedding_backend": backend, "dimension": dimension}. An existing collection of another model, backend,
    dimension or space -> ModelMismatch; with `rebuild`, it is deleted and created empty instead."""
    wanted = {MODEL_KEY: model, BACKEND_KEY: backend, DIMENSION_KEY: dimension}
    collection = client.get_or_create_collection(
        name, configuration={"hnsw": {"space": SPACE}}, metadata=wanted, embedding_function=None
    )
    found = {BACKEND_KEY: LEGACY_BACKEND, **(collection.metadata or {})}
    space = _space(collection)
    if any(found.get(key) != value for key, value in wanted.items()) or space != SPACE:
        if rebuild:
            client.delete_collection(name)
            return open_collection(client, name, model=model, dimension=dimension, backend=backend)
        if space != SPACE:
            raise ModelMismatch(f"collection {name!r} uses the {space!r} space, not {SPACE!r}: rebuild it")
        raise ModelMismatch(
            f"collection {name!r} holds vectors of model {found.get(MODEL_KEY)!r} on backend "
            f"{found.get(BACKEND_KEY)!r} (dimension {found.get(DIMENSION_KEY)!r}), not of model {model!r} on backend "
            f"{backend!r} (dimension {dimension}): re-embed and rebuild it (ai-pipeline collections)"
        )
    return collection


def backend_of(collection: Any) -> str:
    return (collection.metadata or {}).get(BACKEND_KEY, LEGACY_BACKEND)


def _dimension(collection: Any) -> int:
    dimension = (collection.metadata or {}).get(DIMENSION_KEY)
    if not isinstance(dimension, int):
        raise ModelMismatch(f"collection {collection.name!r} was not opened with open_collection (no dimension)")
    return dimension


def upsert_guard(collection: Any, records: Sequence[VectorRecord]) -> None:
    """ModelMismatch unless every record's embedding is a finite vector of the collection's dimension, and of its
    backend where the record's metadata names one (`backend`)."""
    dimension = _dimension(collection)
    backend = backend_of(collection)
    for record in records:
        if record.metadata.get("backend", backend) != backend:
            raise ModelMismatch(
                f"record {record.id!r} holds a vector of backend {record.metadata['backend']!r}; collection "
                f"{collection.name!r} holds backend {backend!r} vectors: re-embed the collection to change backend"
            )
        vector = np.asarray(record.embedding)
        if vector.shape != (dimension,):
            raise ModelMismatch(
                f"record {record.id!r} has an embedding of shape {vector.shape}; collection "
                f"{collection.name!r} holds vectors of dimension {dimension}"
            )
        if not np.isfinite(vector).all():
            raise ModelMismatch(f"record {record.id!r} has a non-finite embedding value")
        if not vector.any():
            raise ModelMismatch(f"record {record.id!r} has a zero embedding, which has no direction")


def _check_records(records: Sequence[VectorRecord]) -> dict[str, VectorRecord]:
    by_id: dict[str, VectorRecord] = {}
    for record in records:
        if not isinstance(record.id, str) or not record.id:
            raise ValueError(f"a record id must be a non-empty string, got {record.id!r}")
        if record.id in by_id:
            raise ValueError(f"record id {record.id!r} appears twice")
        if not isinstance(record.document, str):
            raise TypeError(f"record {record.id!r}: the document must be a string")
        for key, value in record.metadata.items():
            if type(value) not in (str, int, float, bool):
                raise TypeError(f"record {record.id!r}: metadata {key!r} is a {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"record {record.id!r}: metadata {key!r} is {value}")
        by_id[record.id] = record
    return by_id


def _pages(collection: Any, include: list[str]) -> Iterator[dict]:
    """`collection.get` in pages of PAGE_SIZE rows (a single writer is assumed: offsets shift under writes)."""
    offset = 0
    while True:
        page = collection.get(include=include, limit=PAGE_SIZE, offset=offset)
        if page["ids"]:
            yield page
        if len(page["ids"]) < PAGE_SIZE:
            return
        offset += len(page["ids"])


def current_state(collection: Any) -> dict[str, dict]:
    """id -> metadata ({} where none) of every record in the collection."""
    state = {}
    for page in _pages(collection, ["metadatas"]):
        for id_, metadata in zip(page["ids"], page["metadatas"], strict=True):
            state[id_] = dict(metadata or {})
    return state


FLOAT_TOLERANCE = 1e-12  # relative; Chroma returns some float metadata one unit in the last place off
VECTOR_TOLERANCE = 1e-6  # per component, between unit vectors; Chroma stores cosine vectors renormalized


def _same(a: Any, b: Any) -> bool:
    """Equal, with types (True != 1 != 1.0), floats within FLOAT_TOLERANCE, and dicts compared key by key."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=1e-300)
    return a == b


def plan_sync(
    desired: Sequence[VectorRecord] | Mapping[str, dict], current: Mapping[str, dict]
) -> tuple[list[str], list[str], int]:
    """(ids to upsert, ids to delete, how many desired ids are unchanged), comparing the desired and current
    dicts of each id (records: their metadata). Upserts keep the desired order; deletes are sorted."""
    if isinstance(desired, Mapping):
        wanted = {id_: dict(value or {}) for id_, value in desired.items()}
    else:
        wanted = {record.id: dict(record.metadata) for record in _check_records(desired).values()}
    to_upsert = [
        id_ for id_, value in wanted.items() if id_ not in current or not _same(value, dict(current[id_] or {}))
    ]
    to_delete = sorted(id_ for id_ in current if id_ not in wanted)
    return to_upsert, to_delete, len(wanted) - len(to_upsert)


def _direction(vector: Any) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def _signature(metadata: Mapping | None, document: str | None, same_direction: bool) -> dict:
    return {"metadata": dict(metadata or {}), "document": document, "same_direction": same_direction}


def _stored(collection: Any, desired: Mapping[str, VectorRecord]) -> tuple[dict[str, dict], dict[str, dict]]:
    """(id -> metadata, id -> signature) of the whole collection, where a signature holds the metadata, the
    document and whether the stored vector points where the desired record's does (False for unwanted ids).
    Vectors are compared page by page, so the collection's vectors are never all in memory."""
    metadatas, signatures = {}, {}
    for page in _pages(collection, ["metadatas", "documents", "embeddings"]):
        rows = zip(page["ids"], page["metadatas"], page["documents"], page["embeddings"], strict=True)
        for id_, metadata, document, vector in rows:
            record = desired.get(id_)
            same = record is not None and bool(
                np.allclose(_direction(vector), _direction(record.embedding), rtol=0, atol=VECTOR_TOLERANCE)
            )
            metadatas[id_] = dict(metadata or {})
            signatures[id_] = _signature(metadata, document, same)
    return metadatas, signatures


def _write_metadata(desired: dict[str, MetadataValue], stored: dict | None) -> dict | None:
    """What to send so that the stored metadata becomes `desired`: upsert merges, and None removes a key."""
    removed = {key: None for key in stored or {} if key not in desired}
    return {**removed, **desired} or None


@dataclass
class SyncReport:
    added: int
    updated: int
    deleted: int
    unchanged: int
    batches: int

    @property
    def writes(self) -> int:
        return self.added + self.updated + self.deleted


def _max_batch(collection: Any, batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    client = getattr(collection, "_client", None)  # Chroma's Collection keeps its API client here
    limit = client.get_max_batch_size() if client is not None else batch_size
    return min(batch_size, limit)


def sync_collection(
    collection: Any,
    records: Sequence[VectorRecord],
    *,
    batch_size: int = 1000,
    progress: Callable[[str, int, int], None] | None = None,
) -> SyncReport:
    """Make the collection hold exactly `records` (ids, vectors, documents, metadata): upsert the new and the
    changed ones, delete ids not among them, leave identical ones untouched. Writes go in batches of
    `batch_size` (at most the client's max batch size); `progress(stage, done, total)` follows each batch, stage
    "upsert" then "delete".

    Crash safety: a run killed at any point, then run again, ends with the same collection as a run never
    interrupted, because nothing about the sync lives outside the collection:
    - a record's id is deterministic and its id, vector, document and metadata travel together in one upsert
      entry, so each stored record is either its old or its new version, and writing it again is harmless
      (an upsert by id is idempotent);
    - every run computes its plan (what to upsert, which metadata keys to remove, what to delete) afresh from
      the collection's current state, so a re-run upserts exactly the records the killed run had not reached
      (or had reached in a batch that did not land) and deletes every id not wanted, whether or not the killed
      run got to its deletes. The result depends on `records` only.
    """
    by_id = _check_records(records)
    upsert_guard(collection, records)
    limit = _max_batch(collection, batch_size)
    stored, current = _stored(collection, by_id)
    desired = {record.id: _signature(record.metadata, record.document, True) for record in records}
    to_upsert, to_delete, unchanged = plan_sync(desired, current)

    batches = 0
    for start in range(0, len(to_upsert), limit):
        batch = [by_id[id_] for id_ in to_upsert[start : start + limit]]
        collection.upsert(
            ids=[record.id for record in batch],
            embeddings=np.stack([np.asarray(record.embedding, dtype=np.float32) for record in batch]),
            documents=[record.document for record in batch],
            metadatas=[_write_metadata(record.metadata, stored.get(record.id)) for record in batch],
        )
        batches += 1
        if progress is not None:
            progress("upsert", start + len(batch), len(to_upsert))
    for start in range(0, len(to_delete), limit):
        ids = to_delete[start : start + limit]
        collection.delete(ids=ids)
        batches += 1
        if progress is not None:
            progress("delete", start + len(ids), len(to_delete))

    added = sum(1 for id_ in to_upsert if id_ not in stored)
    return SyncReport(added, len(to_upsert) - added, len(to_delete), unchanged, batches)


def collection_vectors(collection: Any) -> tuple[list[str], np.ndarray, list[dict]]:
    """Every record's id (sorted), vector (float32 rows in the same order) and metadata ({} where none)."""
    ids, vectors, metadatas = [], [], []
    for page in _pages(collection, ["embeddings", "metadatas"]):
        ids += page["ids"]
        vectors.append(np.asarray(page["embeddings"], dtype=np.float32))
        metadatas += [dict(metadata or {}) for metadata in page["metadatas"]]
    if not ids:
        return [], np.empty((0, _dimension(collection)), dtype=np.float32), []
    order = sorted(range(len(ids)), key=ids.__getitem__)
    matrix = np.concatenate(vectors)[order]
    return [ids[i] for i in order], matrix, [metadatas[i] for i in order]


@dataclass(frozen=True)
class Hit:
    rank: int  # 1 for the best
    id: str
    score: float  # cosine similarity, 1 - the cosine distance
    document: str
    metadata: dict


def query(collection: Any, embedding: np.ndarray, k: int = 5, where: dict | None = None) -> list[Hit]:
    """The k records nearest to `embedding` (fewer if the collection or the `where` filter holds fewer), best
    first."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"query takes one vector, got shape {vector.shape}")
    found = collection.query(
        query_embeddings=[vector], n_results=k, where=where, include=["documents", "metadatas", "distances"]
    )
    rows = sorted(
        zip(found["distances"][0], found["ids"][0], found["documents"][0], found["metadatas"][0], strict=True),
        key=lambda row: (row[0], row[1]),
    )
    return [
        Hit(rank, id_, 1.0 - float(distance), document, dict(metadata or {}))
        for rank, (distance, id_, document, metadata) in enumerate(rows, start=1)
    ]
