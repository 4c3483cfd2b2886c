"""A lexical (BM25) index over a collection's chunks, kept in exact sync with them, stored as files.

The index is `bm25s`'s (BM25 in sparse matrices, Lucene's scoring variant), built from `tokenize`: lower-cased
Unicode words, English stop words dropped, Snowball-stemmed (PyStemmer), so that "validators" finds "validator".
BM25's document frequencies change with every chunk added or removed, so a change rebuilds the collection's index
(about a second per 10,000 chunks here) rather than patching it.

On disk, a collection is a folder under the index root: `CURRENT` names the live version, a folder holding the
bm25s arrays and `entries.json` (each indexed chunk's id and content hash, in index order). A version's name is a
digest of its (id, content hash) pairs, so `sync` computes what the chunks would make and writes nothing when that is
the live version (a no-op sync), else writes the new version's folder and then swaps `CURRENT` with one atomic
rename: a reader sees the old index or the new one, never a mix. The version before is kept for readers that
loaded it a moment ago; older ones are removed. One writer per collection at a time, like the vector collection.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORD = re.compile(r"\w+")
CURRENT = "CURRENT"
ENTRIES = "entries.json"


@dataclass(frozen=True)
class LexicalEntry:
    id: str  # the chunk id
    content_hash: str  # of the chunk text: a changed text is a changed entry
    text: str


@dataclass(frozen=True)
class LexicalReport:
    added: int
    updated: int
    deleted: int
    unchanged: int
    version: str

    @property
    def writes(self) -> int:
        return self.added + self.updated + self.deleted


@functools.cache
def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG on import
    return bm25s


@functools.cache
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@functools.cache
def _stopwords() -> frozenset[str]:
    return frozenset(_bm25s().stopwords.STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters, digits, underscores) less English stop words, stemmed."""
    stop = _stopwords()
    return _stemmer().stemWords([word for word in WORD.findall(text.lower()) if word not in stop])


def version_of(entries: Sequence[LexicalEntry]) -> str:
    """The version a set of entries makes: a digest of their (id, content hash) pairs, whatever their order."""
    digest = hashlib.sha256()
    for id_, content_hash in sorted((entry.id, entry.content_hash) for entry in entries):
        digest.update(f"{id_}\x1f{content_hash}\x1e".encode())
    return digest.hexdigest()[:20]


def live_version(folder: Path) -> str | None:
    try:
        return (folder / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def _entries(folder: Path, version: str | None) -> dict[str, str]:
    if version is None:
        return {}
    return dict(json.loads((folder / version / ENTRIES).read_text()))


def sync(root: Path, name: str, entries: Sequence[LexicalEntry]) -> LexicalReport:
    """Make collection `name`'s index under `root` hold exactly `entries` (unique ids); nothing is written when it
    already does."""
    wanted = {entry.id: entry.content_hash for entry in entries}
    if len(wanted) != len(entries):
        raise ValueError(f"lexical index {name!r}: an entry id appears twice")
    folder = Path(root) / name
    live = live_version(folder)
    current = _entries(folder, live)
    version = version_of(entries)
    added = sum(1 for id_ in wanted if id_ not in current)
    updated = sum(1 for id_, content_hash in wanted.items() if id_ in current and current[id_] != content_hash)
    deleted = sum(1 for id_ in current if id_ not in wanted)
    report = LexicalReport(added, updated, deleted, len(wanted) - added - updated, version)
    if live == version:
        return report
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda entry: entry.id)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as work:
        staged = Path(work) / version
        staged.mkdir()
        if ordered:
            index = _bm25s().BM25()
            index.index([tokenize(entry.text) for entry in ordered], show_progress=False)
            index.save(str(staged), show_progress=False)
        (staged / ENTRIES).write_text(json.dumps([[e.id, e.content_hash] for e in ordered]))
        if not (folder / version).exists():
            os.replace(staged, folder / version)
    pointer = folder / f".{CURRENT}.{os.getpid()}"
    pointer.write_text(version)
    os.replace(pointer, folder / CURRENT)
    for old in folder.iterdir():
        if old.is_dir() and old.name not in (version, live) and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return report


@dataclass(frozen=True)
class LexicalHit:
    id: str
    score: float  # BM25


class LexicalIndex:
    """One version of a collection's index, loaded for searching."""

    def __init__(self, folder: Path, version: str | None):
        self.version = version
        self.ids = [id_ for id_, _ in json.loads((folder / version / ENTRIES).read_text())] if version else []
        self._bm25 = None
        if self.ids:
            self._bm25 = _bm25s().BM25.load(str(folder / version), mmap=False, show_progress=False)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, text: str, k: int) -> list[LexicalHit]:
        """The k best chunks by BM25 for `text`, best first (ties by id); only chunks sharing a term score."""
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if self._bm25 is None:
            return []
        vocabulary = self._bm25.vocab_dict
        tokens = [token for token in tokenize(text) if token in vocabulary]
        if not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        found = np.flatnonzero(scores > 0)
        if len(found) > k:
            found = found[np.argpartition(-scores[found], k - 1)[:k]]
        best = sorted(found.tolist(), key=lambda i: (-scores[i], self.ids[i]))
        return [LexicalHit(self.ids[i], float(scores[i])) for i in best]


@functools.lru_cache(maxsize=32)
def _load(folder: str, version: str | None) -> LexicalIndex:
    return LexicalIndex(Path(folder), version)


def open_index(root: Path, name: str) -> LexicalIndex:
    """The live version of collection `name`'s index (an empty one before its first sync); loaded once per
    process and version."""
    folder = Path(root) / name
    return _load(str(folder), live_version(folder))
