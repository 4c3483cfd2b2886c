"""Versioned, immutable dataset releases: Parquet and JSON Lines files, a manifest and a dataset card.

A release is named by its content: the SHA-256 of its rows as canonical JSON Lines (sorted by id, keys sorted, no
spaces), its first 16 hex digits the release id. The same rows give the same release, which is then written once and
never again (a re-run finds it and reports it); changed rows give a new release beside the old one. A release is
written into a hidden folder and renamed into place, so a reader never sees half of one.

    <root>/<dataset>/<release id>/data.parquet     rows for trainers (Hugging Face `datasets` reads it)
                                  data.jsonl       the same rows, canonical (what the content hash is of)
                                  manifest.json    hash, counts, partitions, upstream runs, filters, code version
                                  README.md        dataset card, Hugging Face `dataset_info` front matter

Quality before release (`qa`): at least one row (an empty dataset fails, where a not-null test on zero rows would
pass), the 5th percentile of reply length at least 3 words and no empty reply (the replies a model is trained toward:
an SFT example's, a pair's chosen one, a desirable KTO completion), and labels within 10x of each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from ai_pipeline.lib.llm.datasets import word_count
from ai_pipeline.lib.quality import Verdict

# Measured on real data: the chosen replies of HH-RLHF's harmless test set have a 5th percentile of 4 words (brief
# refusals such as "I'm not sure." are good answers there); a set whose 5th percentile is 1 or 2 words holds stubs.
MIN_P5_WORDS = 3
MAX_IMBALANCE = 10.0
FILES = ("data.parquet", "data.jsonl", "manifest.json", "README.md")


@dataclass(frozen=True)
class Release:
    dataset: str
    release_id: str
    rows: int
    path: Path
    created: bool  # False: the same rows were released before


def canonical_jsonl(frame: pl.DataFrame, id_column: str) -> bytes:
    rows = frame.sort(id_column).iter_rows(named=True)
    return b"".join(
        (json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode()
        for row in rows
    )


def _feature(dtype: pl.DataType) -> dict | str:
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        if isinstance(inner, pl.Struct):
            return {"list": [{"name": f.name, "dtype": _feature(f.dtype)} for f in inner.fields]}
        return {"list": _feature(inner)}
    return {
        pl.String: "string",
        pl.Int64: "int64",
        pl.Int32: "int32",
        pl.Float64: "float64",
        pl.Boolean: "bool",
        pl.Date: "date32",
    }.get(dtype.base_type(), str(dtype))


def dataset_card(manifest: dict, schema: dict[str, pl.DataType], description: str) -> str:
    """Markdown with the YAML front matter the Hugging Face Hub reads (`dataset_info`, `configs`)."""
    import yaml

    features = []
    for name, dtype in schema.items():
        feature = _feature(dtype)
        features.append({"name": name, **(feature if isinstance(feature, dict) else {"dtype": feature})})
    front = {
        "dataset_info": {
            "features": features,
            "splits": [{"name": "train", "num_examples": manifest["rows"]}],
        },
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data.parquet"}]}],
    }
    days = manifest["partitions"]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        f"# {manifest['dataset']} ({manifest['release_id']})",
        "",
        description,
        "",
        f"- Rows: {manifest['rows']}, from {days['count']} daily partitions ({days['first']} to {days['last']}).",
        f"- Content hash (SHA-256 of `data.jsonl`): `{manifest['content_hash']}`.",
        f"- Built by ai_pipeline {manifest['code_version']}; filters and gates: see `manifest.json`.",
        "",
    ]
    return "\n".join(lines)


def write_release(
    root: Path,
    dataset: str,
    frame: pl.DataFrame,
    *,
    id_column: str,
    description: str,
    extra: dict,
) -> Release:
    """The release of `frame` (its `partition_date` column says which days it holds) under `root/dataset/`."""
    days = frame["partition_date"] if "partition_date" in frame.columns else pl.Series([], dtype=pl.Date)
    data = frame.drop("partition_date", strict=False).sort(id_column)
    jsonl = canonical_jsonl(data, id_column)
    content_hash = hashlib.sha256(jsonl).hexdigest()
    release_id = content_hash[:16]
    final = root / dataset / release_id
    if (final / "manifest.json").is_file():
        return Release(dataset, release_id, data.height, final, created=False)
    by_day = Counter(d.isoformat() for d in days.to_list())
    manifest = {
        "dataset": dataset,
        "release_id": release_id,
        "content_hash": content_hash,
        "rows": data.height,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "partitions": {
            "first": min(by_day) if by_day else None,
            "last": max(by_day) if by_day else None,
            "count": len(by_day),
            "rows_by_day": dict(sorted(by_day.items())),
        },
        **extra,
    }
    staging = root / dataset / f".{release_id}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        data.write_parquet(staging / "data.parquet", compression="zstd", statistics=False)
        (staging / "data.jsonl").write_bytes(jsonl)
        manifest["files"] = {
            name: hashlib.sha256((staging / name).read_bytes()).hexdigest() for name in ("data.parquet", "data.jsonl")
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (staging / "README.md").write_text(dataset_card(manifest, dict(data.schema), description))
        try:
            staging.rename(final)
        except OSError:  # another writer renamed the same release into place first
            if not (final / "manifest.json").is_file():
                raise
            return Release(dataset, release_id, data.height, final, created=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Release(dataset, release_id, data.height, final, created=True)


def releases(root: Path, dataset: str | None = None) -> list[dict]:
    """Every release's manifest (with its `path`), oldest first."""
    found = []
    for manifest in sorted(root.glob(f"{dataset or '*'}/*/manifest.json")):
        if manifest.parent.name.startswith("."):
            continue
        found.append({**json.loads(manifest.read_text()), "path": str(manifest.parent)})
    return sorted(found, key=lambda m: (m["dataset"], m["created_at"], m["release_id"]))


def qa(
    frame: pl.DataFrame, replies: list[str], labels: list | None = None, inputs: int | None = None
) -> list[tuple[str, Verdict, dict]]:
    """(rule, verdict, numbers) of the release rules on a dataset's rows, its replies and its labels (if any).

    `inputs`: what the dataset was built from (rows plus rejects). An empty dataset built from something fails
    (ERROR); one with no input at all yet only warns, so a lane that has not started is not an alarm. The other rules
    speak only about rows that exist."""
    if frame.height == 0:
        if inputs:
            rows = Verdict(False, "ERROR", f"0 rows from {inputs} inputs: every one was dropped")
        else:
            rows = Verdict(False, "WARN", "0 rows: no input yet, nothing to release")
        nothing = Verdict(True, "ERROR", "no rows")
        results = [("rows", rows, {"rows": 0}), ("reply_length", nothing, {}), ("empty_replies", nothing, {})]
        return results + ([("label_balance", nothing, {})] if labels is not None else [])
    lengths = sorted(word_count(text) for text in replies)
    p5 = lengths[int(0.05 * (len(lengths) - 1))] if lengths else 0
    empty = sum(1 for text in replies if not text.strip())
    results = [
        ("rows", Verdict(True, "ERROR", f"{frame.height} rows"), {"rows": frame.height}),
        (
            "reply_length",
            Verdict(
                p5 >= MIN_P5_WORDS, "ERROR", f"5th percentile of reply length {p5} words (at least {MIN_P5_WORDS})"
            ),
            {"reply_words_p5": p5},
        ),
        ("empty_replies", Verdict(empty == 0, "ERROR", f"{empty} empty replies"), {"empty_replies": empty}),
    ]
    if labels is not None:
        counts = Counter(labels)
        most, least = (max(counts.values()), min(counts.values())) if counts else (0, 0)
        ratio = most / least if least else float("inf")
        balanced = len(counts) > 1 and ratio <= MAX_IMBALANCE
        results.append(
            (
                "label_balance",
                Verdict(balanced, "ERROR", f"labels {dict(counts)}: {ratio:.1f}x (at most {MAX_IMBALANCE:g}x)"),
                {"imbalance": round(ratio, 3) if least else -1.0},
            )
        )
    return results
