"""Where data lives and which sources shape the graph: read once from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_HOME = PROJECT_ROOT / ".data"
DEFAULT_START_DATE = "2024-01-01"


@dataclass(frozen=True)
class DocSource:
    """A folder of documents that becomes one vector collection (and one partition of the RAG assets)."""

    name: str
    root: Path
    include: tuple[str, ...] = ("*",)  # fnmatch patterns on paths relative to root (`*` also matches `/`)
    golden: Path | None = None  # golden question set for the retrieval gate

    def __post_init__(self):
        # The name is a Chroma collection name and a partition key.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]", self.name):
            raise ValueError(f"document source name {self.name!r}: use 3-63 letters, digits, '.', '_' or '-'")


PROJECT_DOCS = DocSource(
    "project_docs",
    PROJECT_ROOT,
    include=("README.md", "docs/*.md"),
    golden=PROJECT_ROOT / "docs" / "golden_questions.json",
)


def parse_doc_sources(text: str) -> tuple[DocSource, ...]:
    """`name=/path;name2=/path2`: every document under each path; `golden_questions.json` there is the golden set."""
    sources = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"AI_PIPELINE_DOC_SOURCES: {entry!r} is not name=path")
        root = Path(path.strip()).expanduser().resolve()
        golden = root / "golden_questions.json"
        sources.append(DocSource(name.strip(), root, golden=golden if golden.is_file() else None))
    return tuple(sources)


def project_docs(env: Mapping[str, str]) -> tuple[DocSource, ...]:
    """The project's own documentation as the collection `project_docs`, unless `AI_PIPELINE_PROJECT_DOCS=off` (a
    deployment that serves only its own collections)."""
    value = (env.get("AI_PIPELINE_PROJECT_DOCS") or "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"AI_PIPELINE_PROJECT_DOCS must be 'on' or 'off', not {value!r}")
    return (PROJECT_DOCS,) if value == "on" else ()


def parse_eval_sets(text: str) -> tuple[tuple[str, Path], ...]:
    """`name=/path;name2=/path2`: evaluation sets (files) by name."""
    sets = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"AI_PIPELINE_EVAL_SETS: {entry!r} is not name=path")
        resolved = Path(path.strip()).expanduser().resolve()
        if not resolved.is_file():
            raise ValueError(f"AI_PIPELINE_EVAL_SETS: {resolved} is not a file")
        sets.append((name.strip(), resolved))
    return tuple(sets)


def table_format(env: Mapping[str, str]) -> str:
    """Where the tables live, from AI_PIPELINE_TABLE_FORMAT: `duckdb` (the default, one DuckDB file) or `delta`
    (Delta Lake tables that many workers write at once)."""
    value = env.get("AI_PIPELINE_TABLE_FORMAT") or "duckdb"
    if value not in ("duckdb", "delta"):
        raise ValueError(f"AI_PIPELINE_TABLE_FORMAT must be 'duckdb' or 'delta', not {value!r}")
    return value


def parse_seconds(name: str, text: str | None) -> int | None:
    """The whole number of seconds in the variable `name` (unset or empty: None)."""
    if not (text or "").strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds, not {text!r}") from None


@dataclass(frozen=True)
class Settings:
    """What shapes the graph and where the embedded defaults keep their files. The outside systems (databases,
    stores, the API, the webhook, the model) are resources: `ai_pipeline.defs.resources`."""

    home: Path = DEFAULT_HOME
    start_date: date = date.fromisoformat(DEFAULT_START_DATE)
    # Document collections: the project's own docs (unless AI_PIPELINE_PROJECT_DOCS=off), plus
    # AI_PIPELINE_DOC_SOURCES.
    doc_sources: tuple[DocSource, ...] = (PROJECT_DOCS,)
    # More landing source declarations (`<name>/defs.yaml` each) besides the built-in ones.
    sources_dir: Path | None = None
    # Evaluation sets no training example may overlap, besides the document sources' golden question sets:
    # AI_PIPELINE_EVAL_SETS, `name=/path;name2=/path2` (lib/llm/decontam.py reads their formats).
    eval_sets: tuple[tuple[str, Path], ...] = ()
    # Where the ONNX embedding backends keep their exported model files: AI_PIPELINE_MODEL_CACHE, else
    # <home>/models (`models`).
    model_cache: Path | None = None
    # One minimum interval (seconds) for every sensor: AI_PIPELINE_SENSOR_INTERVAL_S, else each sensor's own
    # (`ai_pipeline.defs.policy.sensor_interval`).
    sensor_interval_s: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            home=Path(env.get("AI_PIPELINE_HOME") or DEFAULT_HOME).resolve(),
            start_date=date.fromisoformat(env.get("AI_PIPELINE_START_DATE") or DEFAULT_START_DATE),
            doc_sources=(*project_docs(env), *parse_doc_sources(env.get("AI_PIPELINE_DOC_SOURCES") or "")),
            sources_dir=Path(env["AI_PIPELINE_SOURCES_DIR"]).expanduser().resolve()
            if env.get("AI_PIPELINE_SOURCES_DIR")
            else None,
            eval_sets=parse_eval_sets(env.get("AI_PIPELINE_EVAL_SETS") or ""),
            model_cache=Path(env["AI_PIPELINE_MODEL_CACHE"]).expanduser().resolve()
            if env.get("AI_PIPELINE_MODEL_CACHE")
            else None,
            sensor_interval_s=parse_seconds("AI_PIPELINE_SENSOR_INTERVAL_S", env.get("AI_PIPELINE_SENSOR_INTERVAL_S")),
        )

    def __post_init__(self):
        names = [s.name for s in self.doc_sources]
        if len(set(names)) != len(names):
            raise ValueError(f"document source names must be unique: {names}")
        if self.sensor_interval_s is not None and self.sensor_interval_s < 1:
            raise ValueError(f"AI_PIPELINE_SENSOR_INTERVAL_S must be at least 1 second, not {self.sensor_interval_s}")

    @property
    def evaluation_sets(self) -> list[tuple[str, Path]]:
        """Every evaluation set the training data must not overlap: the golden question sets, then the declared."""
        golden = [(f"{s.name}_golden", s.golden) for s in self.doc_sources if s.golden and s.golden.is_file()]
        return [*golden, *self.eval_sets]

    def doc_source(self, name: str) -> DocSource:
        for source in self.doc_sources:
            if source.name == name:
                return source
        raise KeyError(f"no document source named {name!r}; configured: {[s.name for s in self.doc_sources]}")

    @property
    def models(self) -> Path:
        return self.model_cache or self.home / "models"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def online_features(self) -> Path:
        return self.home / "online_features.sqlite"

    @property
    def feedback(self) -> Path:
        return self.home / "feedback.sqlite"

    @property
    def releases(self) -> Path:
        return self.home / "releases"

    @property
    def chroma(self) -> Path:
        return self.home / "chroma"

    @property
    def lexical(self) -> Path:
        return self.home / "lexical"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
