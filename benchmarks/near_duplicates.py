"""Near-duplicate texts at scale: the project's MinHash LSH index vs exact pairwise Jaccard, with planted copies.

    .venv/bin/python benchmarks/near_duplicates.py [--texts 100000] [--planted 1000] [--baseline-texts 2000]
                                                   [--seed 42]

The corpus (TEXTS texts) is every distinct real text of `../shared/data/llm`: the message texts of the OASST2
trees and the Human / Assistant turns of the HH-RLHF transcripts (split on "\\n\\nHuman: " / "\\n\\nAssistant: ";
chosen and rejected share all turns but the last, so only distinct strings are kept); then generated texts up to
the size, from a word-bigram chain trained on those real texts (numpy, seed 42), with the real texts' lengths,
so that they are varied and written like the rest. PLANTED real texts of at least 20 words get an edited copy:
5-10% of the words substituted, inserted or deleted, and sometimes the case or punctuation changed. The corpus is
shuffled, each copy placed at a random position after its original; keys are the positions.

(a) project: `DuplicateIndex().first_seen(keys, texts)` over the whole corpus in that order, timed end to end
    (MinHashes, LSH queries and inserts). Recall of the planted copies: a copy counts as found when it is reported
    (exact or near) as a duplicate of its original's family (the original, or the text the original itself was
    reported to repeat). The exact Jaccard of each planted pair (`dedup.shingles`) splits the recall into pairs at
    or above the threshold (what the index promises) and below it (edits that the 0.8 threshold does not cover).
    Also the number of texts flagged overall, by origin (real, generated, planted copy).
(b) baseline: the straightforward method, the exact Jaccard of the same shingle sets for every pair, on a random
    subsample of BASELINE_TEXTS texts in corpus order (half of them at most the originals and copies of planted
    pairs). Its pairs/s gives the time for the whole corpus (n*(n-1)/2 pairs, plus the shingles), its texts/s.
    On the subsample the project runs too (a fresh index), and its flags are compared with the exact ones: a text
    is flagged exactly when it has Jaccard >= THRESHOLD with an earlier text that was not itself flagged (the same
    keep-the-first rule as `first_seen`); precision and recall of the project's flags against that.
Exits 1 when ../shared/data is missing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time

import numpy as np
from _llm_data import HH, OASST, TURN, messages, require_data

from ai_pipeline.lib.llm import dedup

MIN_WORDS = 20
MAX_GENERATED_WORDS = 400


# --- data ---------------------------------------------------------------------------------------------------------


def real_texts() -> tuple[list[str], int, int]:
    """Distinct non-blank real texts (OASST messages first, then HH turns), and how many of each were read."""
    texts: dict[str, None] = {}
    n_oasst = n_turns = 0
    with OASST.open() as lines:
        for line in lines:
            for message in messages(json.loads(line)["prompt"]):
                n_oasst += 1
                if message["text"].strip():
                    texts.setdefault(message["text"].strip(), None)
    with gzip.open(HH, "rt") as lines:
        for line in lines:
            row = json.loads(line)
            for transcript in (row["chosen"], row["rejected"]):
                for turn in TURN.split(transcript):
                    if turn.strip():
                        n_turns += 1
                        texts.setdefault(turn.strip(), None)
    return list(texts), n_oasst, n_turns


def generated_texts(real: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n texts from a word-bigram chain over the real texts, each as long as a random real text (in words)."""
    vocab: dict[str, int] = {}
    successors: list[list[int]] = []
    starts: list[int] = []
    lengths = []
    for text in real:
        ids = [vocab.setdefault(w, len(vocab)) for w in text.split()]
        while len(successors) < len(vocab):
            successors.append([])
        lengths.append(len(ids))
        starts.append(ids[0])
        for a, b in zip(ids, ids[1:], strict=False):
            successors[a].append(b)
    words = list(vocab)
    follow = [np.array(s, dtype=np.int64) for s in successors]
    start_ids = np.array(starts, dtype=np.int64)
    sizes = np.minimum(np.array(lengths)[rng.integers(0, len(lengths), n)], MAX_GENERATED_WORDS)
    out = []
    for size in sizes:
        draws = rng.random(int(size) + 1)
        word = int(start_ids[int(draws[0] * len(start_ids))])
        ids = [word]
        for r in draws[1:size]:
            options = follow[word]
            word = int(options[int(r * len(options))]) if len(options) else int(start_ids[int(r * len(start_ids))])
            ids.append(word)
        out.append(" ".join(words[i] for i in ids))
    return out


def edited_copy(text: str, vocabulary: list[str], rng: np.random.Generator) -> str:
    """`text` with 5-10% of its words substituted, inserted or deleted; sometimes its case or punctuation changed."""
    words = text.split()
    edits = max(1, round(rng.uniform(0.05, 0.10) * len(words)))
    for _ in range(edits):
        at = int(rng.integers(len(words)))
        op = int(rng.integers(3))
        if op == 0:
            words[at] = vocabulary[int(rng.integers(len(vocabulary)))]
        elif op == 1:
            words.insert(at, vocabulary[int(rng.integers(len(vocabulary)))])
        elif len(words) > 1:
            del words[at]
    out = " ".join(words)
    style = rng.random()
    if style < 0.15:
        out = out.lower()
    elif style < 0.25:
        out = out.upper()
    punctuation = rng.random()
    if punctuation < 0.15:
        out = out.replace(",", "")
    elif punctuation < 0.30:
        out = out.replace(". ", "! ", 1).rstrip(".!?") + "!"
    elif punctuation < 0.40:
        out = out.replace("'", "’")
    return out


# --- measures -----------------------------------------------------------------------------------------------------


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def exact_pairwise(texts: list[str], threshold: float) -> tuple[float, float, list[tuple[int, int]]]:
    """Seconds for the shingles, seconds for every pair's exact Jaccard, and the pairs (i < j) at the threshold."""
    t0 = time.perf_counter()
    sets = [dedup.shingles(t) for t in texts]
    shingle_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    close = []
    for j in range(1, len(sets)):
        b, lb = sets[j], len(sets[j])
        for i in range(j):
            a = sets[i]
            inter = len(a & b)
            if inter / (len(a) + lb - inter) >= threshold:
                close.append((i, j))
    return shingle_s, time.perf_counter() - t0, close


def exact_first_seen(n: int, close: list[tuple[int, int]]) -> list[bool]:
    """Flags by the keep-the-first rule: j is flagged when it is close to an earlier text that was kept."""
    earlier: list[list[int]] = [[] for _ in range(n)]
    for i, j in close:
        earlier[j].append(i)
    flagged = [False] * n
    for j in range(n):
        flagged[j] = any(not flagged[i] for i in earlier[j])
    return flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000, help="corpus size (at least the real texts + copies)")
    parser.add_argument("--planted", type=int, default=1000, help="real texts given an edited copy")
    parser.add_argument("--baseline-texts", type=int, default=2000, help="subsample for the exact pairwise method")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    require_data()
    rng = np.random.default_rng(args.seed)
    threshold = dedup.THRESHOLD

    # --- corpus
    t0 = time.perf_counter()
    real, n_oasst, n_turns = real_texts()
    eligible = [i for i, t in enumerate(real) if len(t.split()) >= MIN_WORDS]
    planted = min(args.planted, len(eligible))
    originals = [eligible[int(i)] for i in rng.choice(len(eligible), planted, replace=False)]
    n_generated = max(0, args.texts - len(real) - planted)
    generated = generated_texts(real, n_generated, rng)
    vocabulary = sorted({w for t in real for w in t.split() if w.isalpha()})
    copies = [edited_copy(real[i], vocabulary, rng) for i in originals]
    base = real + generated  # base index -> text; origin: real below len(real), generated above
    n_base = len(base)
    # Shuffle the base texts; each copy goes at a random position after its original (ties: copy after).
    position = rng.permutation(n_base).astype(np.float64)
    copy_position = [position[o] + rng.uniform(0.5, n_base - position[o] + 0.5) for o in originals]
    items = [(position[i], i) for i in range(n_base)] + [(p, n_base + k) for k, p in enumerate(copy_position)]
    items.sort()
    order = [item for _, item in items]  # corpus position -> item id (base index, or n_base + copy number)
    texts = [base[i] if i < n_base else copies[i - n_base] for i in order]
    keys = [f"t{p}" for p in range(len(order))]
    where = {item: p for p, item in enumerate(order)}
    origin = ["real" if i < len(real) else "generated" if i < n_base else "copy" for i in order]
    words = sum(len(t.split()) for t in texts)
    print(
        f"corpus: {len(texts):,} texts ({words / len(texts):.0f} words, {sum(map(len, texts)) / len(texts):.0f}"
        f" characters on average): {len(real):,} distinct real texts ({n_oasst:,} OASST messages, {n_turns:,} HH"
        f" turns read), {n_generated:,} generated, {planted:,} planted copies of real texts of >= {MIN_WORDS} words"
        f" (built in {time.perf_counter() - t0:.1f}s)"
    )
    pair_j = np.array(
        [jaccard(dedup.shingles(real[o]), dedup.shingles(c)) for o, c in zip(originals, copies, strict=True)]
    )
    print(
        f"planted pairs' exact Jaccard of {dedup.SHINGLE}-gram shingles: median {np.median(pair_j):.3f},"
        f" {np.mean(pair_j >= threshold):.1%} at or above the threshold {threshold}"
    )

    # --- (a) the project over the whole corpus
    t0 = time.perf_counter()
    found = dedup.DuplicateIndex().first_seen(keys, texts)
    project_s = time.perf_counter() - t0
    of_position = {k: p for p, k in enumerate(keys)}

    def family(p: int) -> int:
        d = found[p]
        return p if d is None else of_position[d.of]

    hit = np.zeros(planted, dtype=bool)
    other = np.zeros(planted, dtype=bool)
    for k, o in enumerate(originals):
        d = found[where[n_base + k]]
        if d is not None:
            hit[k] = of_position[d.of] == family(where[o])
            other[k] = not hit[k]
    flagged: dict[tuple[str, str], int] = {}
    for p, d in enumerate(found):
        if d is not None:
            flagged[(origin[p], d.kind)] = flagged.get((origin[p], d.kind), 0) + 1

    # --- (b) the baseline on a subsample, with planted pairs in it
    n_sub = min(args.baseline_texts, len(texts))
    pairs_in = min(planted, n_sub // 4)
    chosen_pairs = rng.choice(planted, pairs_in, replace=False)
    sub = {where[originals[k]] for k in chosen_pairs} | {where[n_base + k] for k in chosen_pairs}
    rest = np.setdiff1d(np.arange(len(texts)), np.fromiter(sub, dtype=np.int64))
    sub |= {int(p) for p in rng.choice(rest, n_sub - len(sub), replace=False)}
    sub_positions = sorted(sub)
    sub_texts = [texts[p] for p in sub_positions]
    shingle_s, pairs_s, close = exact_pairwise(sub_texts, threshold)
    n_pairs = n_sub * (n_sub - 1) // 2
    pairs_per_s = n_pairs / pairs_s
    exact_flags = exact_first_seen(n_sub, close)
    t0 = time.perf_counter()
    sub_found = dedup.DuplicateIndex().first_seen([keys[p] for p in sub_positions], sub_texts)
    sub_project_s = time.perf_counter() - t0
    project_flags = [d is not None for d in sub_found]
    both = sum(a and b for a, b in zip(project_flags, exact_flags, strict=True))
    precision = both / max(1, sum(project_flags))
    recall = both / max(1, sum(exact_flags))

    # --- report
    n = len(texts)
    full_pairs = n * (n - 1) // 2
    baseline_full_s = shingle_s / n_sub * n + full_pairs / pairs_per_s
    print(f"\n{'method':<44}{'measured on':>12}{'seconds':>10}{'whole corpus s':>16}{'texts/s':>12}")
    print(
        f"{'(a) project: DuplicateIndex.first_seen':<44}{n:>12,}{project_s:>10.1f}{project_s:>16,.1f}"
        f"{n / project_s:>12,.0f}"
    )
    print(
        f"{'    same, on the subsample':<44}{n_sub:>12,}{sub_project_s:>10.2f}{'':>16}{n_sub / sub_project_s:>12,.0f}"
    )
    print(
        f"{'(b) exact Jaccard, every pair':<44}{n_sub:>12,}{shingle_s + pairs_s:>10.1f}{baseline_full_s:>16,.0f}"
        f"{n / baseline_full_s:>12,.1f}"
    )
    print(
        f"    baseline: {pairs_per_s:,.0f} pairs/s ({n_pairs:,} pairs in {pairs_s:.1f}s); the whole corpus is"
        f" {full_pairs:,} pairs -> ~{baseline_full_s / 3600:,.1f} h"
    )
    print(f"ratio (whole corpus): the project is {baseline_full_s / project_s:,.0f}x faster than every pair")

    print(f"\nplanted near-duplicates ({planted:,} copies), found as duplicates of their original's family:")
    print(f"{'exact Jaccard of the pair':<30}{'pairs':>8}{'found':>8}{'recall':>9}{'flagged, other text':>22}")
    bins = [
        (0.9, 1.01, "[0.9, 1.0]"),
        (threshold, 0.9, f"[{threshold}, 0.9)"),
        (0.7, threshold, f"[0.7, {threshold})"),
        (0.0, 0.7, "< 0.7"),
    ]
    for lo, hi, label in bins:
        mask = (pair_j >= lo) & (pair_j < hi)
        print(
            f"{label:<30}{mask.sum():>8,}{hit[mask].sum():>8,}{hit[mask].mean() if mask.any() else 0:>9.1%}"
            f"{other[mask].sum():>22,}"
        )
    above = pair_j >= threshold
    print(f"{'all':<30}{planted:>8,}{hit.sum():>8,}{hit.mean():>9.1%}{other.sum():>22,}")
    print(f"recall at or above the threshold (what the index promises): {hit[above].mean():.1%} of {above.sum():,}")
    missed = [k for k in range(planted) if above[k] and not hit[k]]
    if missed:
        # Why: the pair's MinHash estimate is below the threshold (the confirmation drops it), or no LSH candidate.
        index = dedup.DuplicateIndex()
        prepared = index.prepare([t for k in missed for t in (real[originals[k]], copies[k])])
        estimates = np.array([prepared[2 * m].minhash.jaccard(prepared[2 * m + 1].minhash) for m in range(len(missed))])
        print(
            f"  its {len(missed):,} misses: {np.sum(estimates < threshold):,} with a MinHash estimate below {threshold}"
            f" (exact Jaccard {np.median(pair_j[missed]):.3f}, estimate {np.median(estimates):.3f}, medians),"
            f" {np.sum(estimates >= threshold):,} estimated >= {threshold} but not returned by the LSH query"
        )

    print(f"\ntexts flagged over the whole corpus: {sum(flagged.values()):,} of {n:,}")
    for group in ("real", "generated", "copy"):
        total = sum(1 for o in origin if o == group)
        print(
            f"  {group:<10} {total:>8,} texts: {flagged.get((group, 'exact'), 0):>6,} exact,"
            f" {flagged.get((group, 'near'), 0):>6,} near"
        )

    print(
        f"\nagreement on the subsample ({n_sub:,} texts, {pairs_in:,} planted pairs in it; {len(close):,} pairs with"
        f" exact Jaccard >= {threshold}): exact method flags {sum(exact_flags):,}, project {sum(project_flags):,},"
        f" both {both:,} -> precision {precision:.1%}, recall {recall:.1%}"
    )


if __name__ == "__main__":
    main()
