"""The BM25 index kept in exact sync with a collection's chunks, and reciprocal-rank fusion."""

from __future__ import annotations

import pytest

from ai_pipeline.lib.rag import lexical
from ai_pipeline.lib.rag.lexical import LexicalEntry, open_index, sync, tokenize
from ai_pipeline.lib.rag.retrieval import SearchConfig, rrf

CHUNKS = [
    LexicalEntry("c1", "h1", "Validators run after Pydantic parses a field."),
    LexicalEntry("c2", "h2", "The Denver Broncos won Super Bowl 50 in Santa Clara."),
    LexicalEntry("c3", "h3", "A field validator can transform the value it validates."),
    LexicalEntry("c4", "h4", "Serialization turns a model into a dict or JSON."),
]


def files(root):
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_tokens_are_lowercased_stemmed_words_without_stop_words() -> None:
    assert tokenize("The Validators VALIDATE fields_and values, in 2016!") == [
        "valid",
        "valid",
        "fields_and",
        "valu",
        "2016",
    ]


def test_sync_adds_changes_deletes_and_a_no_op_writes_nothing(tmp_path) -> None:
    report = sync(tmp_path, "docs", CHUNKS)
    assert (report.added, report.updated, report.deleted, report.unchanged) == (4, 0, 0, 0)
    assert [hit.id for hit in open_index(tmp_path, "docs").search("who won the super bowl", 3)] == ["c2"]
    before = files(tmp_path)
    again = sync(tmp_path, "docs", list(reversed(CHUNKS)))
    assert again.writes == 0 and again.unchanged == 4 and again.version == report.version
    assert files(tmp_path) == before  # not a byte written, not a file touched

    changed = [CHUNKS[0], LexicalEntry("c2", "h2b", "Serialization of a model to JSON."), CHUNKS[3]]
    changed.append(LexicalEntry("c5", "h5", "Computed fields appear in the serialized output."))
    report = sync(tmp_path, "docs", changed)
    assert (report.added, report.updated, report.deleted, report.unchanged) == (1, 1, 1, 2)
    index = open_index(tmp_path, "docs")
    assert sorted(index.ids) == ["c1", "c2", "c4", "c5"]
    assert index.search("super bowl broncos", 5) == []  # the old text of c2 is gone with it
    assert index.search("validator", 5)[0].id == "c1"  # c3 was deleted
    assert [hit.id for hit in index.search("serialization JSON", 2)] == ["c2", "c4"]
    # Two versions stay on disk (the live one and the one before, for readers that loaded it); older ones go.
    assert len([p for p in (tmp_path / "docs").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2

    emptied = sync(tmp_path, "docs", [])
    assert emptied.deleted == 4 and len(open_index(tmp_path, "docs")) == 0
    assert open_index(tmp_path, "docs").search("serialization", 3) == []


def test_an_index_is_the_same_whatever_order_the_chunks_come_in(tmp_path) -> None:
    a = sync(tmp_path / "a", "docs", CHUNKS)
    b = sync(tmp_path / "b", "docs", CHUNKS[::-1])
    assert a.version == b.version
    query = "field validator validates"
    assert open_index(tmp_path / "a", "docs").search(query, 4) == open_index(tmp_path / "b", "docs").search(query, 4)


def test_duplicate_ids_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="twice"):
        sync(tmp_path, "docs", [CHUNKS[0], CHUNKS[0]])
    assert lexical.live_version(tmp_path / "docs") is None


def test_reciprocal_rank_fusion_on_a_fixed_example() -> None:
    dense = ["a", "b", "c", "d"]
    lexical_ranks = ["c", "e", "a"]
    fused = rrf([(1.0, dense), (1.0, lexical_ranks)], k=60)
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (a tie, broken by id), b: 1/62, e: 1/62, d: 1/64.
    assert [id_ for id_, _ in fused] == ["a", "c", "b", "e", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    # Weights move a ranking's votes: with lexical at 2, its first chunk wins, and e passes b.
    weighted = rrf([(1.0, dense), (2.0, lexical_ranks)], k=60)
    assert [id_ for id_, _ in weighted] == ["c", "a", "e", "b", "d"]
    # k = 0 gives the first ranks far more weight than the later ones.
    assert [id_ for id_, _ in rrf([(1.0, dense), (1.0, lexical_ranks)], k=0)][:2] == ["a", "c"]


def test_search_config_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'"):
        SearchConfig(mode="fuzzy")
    with pytest.raises(ValueError):
        SearchConfig(depth=0)
