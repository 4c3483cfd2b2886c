"""Embedding backends side by side: throughput, retrieval quality and agreement of vectors, and the default they make.

    python benchmarks/embedding_backends.py [--reps 3] [--backends torch,onnx,onnx-int8]

The texts are the project's chunk texts of the shared real data sets (`../shared/data`): the 54 SQuAD v1.1
"Super_Bowl_50" paragraphs and the pydantic docs, chunked as the pipeline chunks them (unique by content hash).
Every backend embeds the same texts through `Embedder.embed` (the pipeline's own path, one model per backend,
exported ONNX files in a temporary cache, export time reported apart), REPS interleaved rounds (the order of the
backends alternates, so each runs beside the others under the same load): median texts/s and the ratio to torch.
Then, per backend:
- recall@1/@5 and MRR@10 of the 810 SQuAD questions (embedded by the same backend) by exact cosine search over the
  chunk vectors, the gold being the question's paragraph;
- the cosine agreement of each chunk vector with torch's (mean and minimum);
- query embedding latency: each question alone (`embed_query`), p50 / p99.

Target: a backend >= 2.5x torch's texts/s at a recall@5 loss <= 0.01. The default rule (embedding.DEFAULT_BACKEND):
the fastest backend whose recall@5 is within 0.01 of torch's and whose mean cosine agreement is >= 0.99; the script
prints which backend that is and whether the code's default matches it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _corpus import (
    PYDANTIC_DOCS,
    load_and_chunk,
    load_squad,
    machine_load,
    squad_doc_id,
    unique_texts,
    write_squad_paragraphs,
)

from ai_pipeline.lib.rag import embedding

SPEED_TARGET = 2.5
RECALL_LOSS = 0.01
AGREEMENT = 0.99


def recall(questions: np.ndarray, vectors: np.ndarray, docs: list[str], gold: list[str]) -> dict[str, float]:
    top = np.argsort(-(questions @ vectors.T), axis=1, kind="stable")[:, :10]
    ranks = [next((k + 1 for k, j in enumerate(row) if docs[j] == g), None) for row, g in zip(top, gold, strict=True)]
    return {
        "r1": float(np.mean([r is not None and r <= 1 for r in ranks])),
        "r5": float(np.mean([r is not None and r <= 5 for r in ranks])),
        "mrr": float(np.mean([1 / r if r else 0.0 for r in ranks])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default=",".join(embedding.BACKENDS))
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if backends[0] != embedding.TORCH:
        parser.error("torch comes first: it is the baseline")

    squad = load_squad()
    with tempfile.TemporaryDirectory(prefix="backends-bench-") as name:
        tmp = Path(name)
        root = write_squad_paragraphs(squad.contexts, tmp / "squad")
        _, chunks = load_and_chunk([(root, "squad"), (PYDANTIC_DOCS, "pydantic")])
        todo = unique_texts(chunks)
        texts, docs = [c.text for c in todo], [c.doc_id for c in todo]
        questions = [q for q, _ in squad.questions]
        gold = [squad_doc_id(p) for _, p in squad.questions]
        print(f"{len(texts)} chunk texts, {len(questions)} questions; {machine_load()}", flush=True)

        embedders, exported = {}, {}
        for backend in backends:
            started = time.perf_counter()
            embedders[backend] = embedding.Embedder(backend=backend, cache=tmp / "models")
            embedders[backend].embed(texts[:8])  # loads (and for ONNX exports) the model, untimed below
            exported[backend] = time.perf_counter() - started

        seconds: dict[str, list[float]] = {b: [] for b in backends}
        vectors: dict[str, np.ndarray] = {}
        for rep in range(args.reps):
            for backend in backends if rep % 2 == 0 else backends[::-1]:
                started = time.perf_counter()
                vectors[backend] = embedders[backend].embed(texts)
                seconds[backend].append(time.perf_counter() - started)
                print(f"round {rep + 1} {backend}: {len(texts) / seconds[backend][-1]:.1f} texts/s", flush=True)

        rows, results = [], {}
        base = len(texts) / statistics.median(seconds[embedding.TORCH])
        for backend in backends:
            rate = len(texts) / statistics.median(seconds[backend])
            question_vectors = embedders[backend].embed(questions)
            latencies = []
            for question in questions[:200]:
                started = time.perf_counter()
                embedders[backend].embed_query(question)
                latencies.append(1000 * (time.perf_counter() - started))
            quality = recall(question_vectors, vectors[backend], docs, gold)
            cosine = (vectors[backend] * vectors[embedding.TORCH]).sum(axis=1)
            results[backend] = (rate / base, quality, float(cosine.mean()))
            rows.append(
                (
                    backend,
                    f"{rate:.1f}",
                    f"{rate / base:.2f}x",
                    f"{quality['r1']:.4f} / {quality['r5']:.4f} / {quality['mrr']:.4f}",
                    f"{cosine.mean():.4f} / {cosine.min():.4f}",
                    "{:.1f} / {:.1f}".format(*np.percentile(latencies, [50, 99])),
                    f"{exported[backend]:.1f}",
                )
            )
    header = (
        "backend",
        "texts/s",
        "vs torch",
        "SQuAD r@1 / r@5 / MRR",
        "cos vs torch mean / min",
        "query ms p50 / p99",
        "load s",
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    torch_r5 = results[embedding.TORCH][1]["r5"]
    eligible = [
        b
        for b, (_, quality, cosine) in results.items()
        if torch_r5 - quality["r5"] <= RECALL_LOSS and cosine >= AGREEMENT
    ]
    chosen = max(eligible, key=lambda b: results[b][0])
    best = max(results, key=lambda b: results[b][0])
    speed, quality, _ = results[best]
    met = speed >= SPEED_TARGET and torch_r5 - quality["r5"] <= RECALL_LOSS
    print(
        f"\nfastest: {best} at {speed:.2f}x torch, recall@5 {quality['r5'] - torch_r5:+.4f} "
        f"(target >= {SPEED_TARGET}x at a loss <= {RECALL_LOSS}): {'PASS' if met else 'FAIL'}"
    )
    print(
        f"default by the rule (recall@5 loss <= {RECALL_LOSS}, mean cosine >= {AGREEMENT}, fastest): {chosen}; "
        f"the code's default: {embedding.DEFAULT_BACKEND} "
        f"({'matches' if chosen == embedding.DEFAULT_BACKEND else 'DIFFERS'})"
    )
    print(machine_load())
    sys.exit(0 if chosen == embedding.DEFAULT_BACKEND else 1)


if __name__ == "__main__":
    main()
