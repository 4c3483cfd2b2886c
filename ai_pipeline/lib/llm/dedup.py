"""Exact and near-duplicate texts: a normalized hash, then MinHash LSH (`datasketch`) over character shingles.

Texts are compared after `normalized` (case, runs of whitespace and surrounding punctuation ignored). Near
duplicates are pairs whose sets of character 5-grams have a Jaccard similarity of at least the threshold (0.8 by
default). LSH finds candidates at a lower threshold (`CANDIDATES`: 18 bands of 7 rows of 128 permutations, which
return a pair at Jaccard 0.8 with probability 0.986, where an index built at 0.8 returns it with 0.40), and each
candidate is confirmed by its exact Jaccard, computed from the kept normalized text: no estimate noise at the
threshold (`benchmarks/near_duplicates.py` measured both). Character shingles work for short prompts and for
languages written without spaces alike.

`DuplicateIndex.first_seen` is order-dependent by design: the first text of a family stays, every later one is its
duplicate, so feeding texts in a fixed order (earlier days first, then by id) gives the same answer every time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

SHINGLE = 5
NUM_PERM = 128
THRESHOLD = 0.8
CANDIDATES = 0.6  # the LSH index's own threshold: candidates, confirmed exactly against THRESHOLD


def normalized(text: str) -> str:
    """Case, spacing and surrounding punctuation ignored: what makes two texts the same text."""
    return re.sub(r"\s+", " ", text).strip(" .!?").casefold()


def shingles(text: str) -> set[bytes]:
    norm = normalized(text)
    if len(norm) <= SHINGLE:
        return {norm.encode()}
    return {norm[i : i + SHINGLE].encode() for i in range(len(norm) - SHINGLE + 1)}


@dataclass(frozen=True)
class Duplicate:
    kind: str  # "exact" or "near"
    of: str  # the key of the first text of its family
    similarity: float  # 1.0 for exact; the estimated Jaccard similarity for near


@dataclass(frozen=True)
class Prepared:
    digest: str  # of the normalized text
    text: str  # normalized
    minhash: object  # datasketch.LeanMinHash


class DuplicateIndex:
    """The texts seen so far, by key, for exact and near-duplicate lookups."""

    def __init__(self, threshold: float = THRESHOLD, num_perm: int = NUM_PERM):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self._lsh = MinHashLSH(threshold=min(threshold, CANDIDATES), num_perm=num_perm)
        self._exact: dict[str, str] = {}
        self._texts: dict[str, str] = {}

    def prepare(self, texts: Sequence[str]) -> list[Prepared]:
        """Each text's normalized form, its hash and its MinHash, computed in one batch."""
        from datasketch import LeanMinHash, MinHash

        minhashes = MinHash.bulk([list(shingles(t)) for t in texts], num_perm=self.num_perm)
        prepared = []
        for text, minhash in zip(texts, minhashes, strict=True):
            norm = normalized(text)
            prepared.append(Prepared(hashlib.sha256(norm.encode()).hexdigest(), norm, LeanMinHash(minhash)))
        return prepared

    def find(self, item: Prepared) -> Duplicate | None:
        """What `item` repeats among the texts added so far: the exact copy, else the most similar near one."""
        if item.digest in self._exact:
            return Duplicate("exact", self._exact[item.digest], 1.0)
        own = shingles(item.text)
        near = []
        for candidate in self._lsh.query(item.minhash):
            other = shingles(self._texts[candidate])
            similarity = len(own & other) / len(own | other)
            if similarity >= self.threshold:
                near.append((similarity, candidate))
        if not near:
            return None
        similarity, of = max(near)
        return Duplicate("near", of, round(similarity, 3))

    def add(self, key: str, item: Prepared) -> None:
        self._exact.setdefault(item.digest, key)
        self._texts[key] = item.text
        self._lsh.insert(key, item.minhash)

    def first_seen(self, keys: Sequence[str], texts: Sequence[str]) -> list[Duplicate | None]:
        """For each text in order: None if it is the first of its family (it is then added), else what it repeats."""
        found = []
        for key, item in zip(keys, self.prepare(texts), strict=True):
            duplicate = self.find(item)
            if duplicate is None:
                self.add(key, item)
            found.append(duplicate)
        return found
