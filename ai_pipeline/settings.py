"""Where data lives and which sources are configured: read once from the environment.

Secrets (database DSNs, API tokens) come only from the environment, never from files in the repo.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Settings:
    home: Path = DEFAULT_HOME
    start_date: date = date.fromisoformat(DEFAULT_START_DATE)
    # Operational PostgreSQL source (a libpq DSN); absent means the source contributes nothing.
    ops_dsn: str | None = None
    ops_table: str = "public.user_events"
    # HTTP events API; absent means the source contributes nothing.
    api_url: str | None = None
    api_token: str | None = field(default=None, repr=False)
    api_timeout_s: float = 10.0
    # Online feature store: "embedded" (SQLite under the data root) or "postgres" (online_dsn).
    online_store: str = "embedded"
    online_dsn: str | None = field(default=None, repr=False)
    online_table: str = "public.online_user_features"
    # Document collections: the project's own docs, plus AI_PIPELINE_DOC_SOURCES.
    doc_sources: tuple[DocSource, ...] = (PROJECT_DOCS,)
    # ChromaDB: a `chroma run` server URL; absent means an embedded PersistentClient under the data root.
    chroma_url: str | None = None
    # Failure alerts: a webhook that receives JSON (its URL may hold a secret); absent means no alerts are posted.
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_timeout_s: float = 10.0
    # The Dagster UI, for links in alerts.
    ui_url: str = "http://127.0.0.1:3000"
    # Landing files: how long a file must stay unchanged before it is read (unless its folder holds `_SUCCESS`),
    # and the most bytes one file may hold once decompressed.
    landing_settle_s: float = 30.0
    max_file_bytes: int = 1 << 30
    # More landing source declarations (`<name>/defs.yaml` each) besides the built-in ones.
    sources_dir: Path | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            home=Path(env.get("AI_PIPELINE_HOME") or DEFAULT_HOME).resolve(),
            start_date=date.fromisoformat(env.get("AI_PIPELINE_START_DATE") or DEFAULT_START_DATE),
            ops_dsn=env.get("AI_PIPELINE_OPS_DSN") or None,
            ops_table=env.get("AI_PIPELINE_OPS_TABLE") or "public.user_events",
            api_url=env.get("AI_PIPELINE_API_URL") or None,
            api_token=env.get("AI_PIPELINE_API_TOKEN") or None,
            api_timeout_s=float(env.get("AI_PIPELINE_API_TIMEOUT_S") or 10.0),
            online_store=env.get("AI_PIPELINE_ONLINE_STORE") or "embedded",
            online_dsn=env.get("AI_PIPELINE_ONLINE_DSN") or None,
            online_table=env.get("AI_PIPELINE_ONLINE_TABLE") or "public.online_user_features",
            doc_sources=(PROJECT_DOCS, *parse_doc_sources(env.get("AI_PIPELINE_DOC_SOURCES") or "")),
            chroma_url=env.get("AI_PIPELINE_CHROMA_URL") or None,
            alert_webhook_url=env.get("AI_PIPELINE_ALERT_WEBHOOK_URL") or None,
            alert_timeout_s=float(env.get("AI_PIPELINE_ALERT_TIMEOUT_S") or 10.0),
            ui_url=env.get("AI_PIPELINE_UI_URL") or "http://127.0.0.1:3000",
            landing_settle_s=float(env.get("AI_PIPELINE_LANDING_SETTLE_S") or 30.0),
            max_file_bytes=int(float(env.get("AI_PIPELINE_MAX_FILE_MB") or 1024) * (1 << 20)),
            sources_dir=Path(env["AI_PIPELINE_SOURCES_DIR"]).expanduser().resolve()
            if env.get("AI_PIPELINE_SOURCES_DIR")
            else None,
        )

    def __post_init__(self):
        if self.online_store not in ("embedded", "postgres"):
            raise ValueError(f"AI_PIPELINE_ONLINE_STORE must be 'embedded' or 'postgres', not {self.online_store!r}")
        names = [s.name for s in self.doc_sources]
        if len(set(names)) != len(names):
            raise ValueError(f"document source names must be unique: {names}")
        if self.online_store == "postgres" and not self.online_dsn:
            raise ValueError("AI_PIPELINE_ONLINE_STORE=postgres needs AI_PIPELINE_ONLINE_DSN (a libpq DSN)")

    def doc_source(self, name: str) -> DocSource:
        for source in self.doc_sources:
            if source.name == name:
                return source
        raise KeyError(f"no document source named {name!r}; configured: {[s.name for s in self.doc_sources]}")

    def vector_collection(self, name: str):
        """The Chroma collection of a document source: a `chroma run` server if configured, else embedded."""
        from ai_pipeline.lib import embedding, vector_store

        client = (
            vector_store.open_client(url=self.chroma_url)
            if self.chroma_url
            else vector_store.open_client(path=self.chroma)
        )
        return vector_store.open_collection(client, name, model=embedding.MODEL_NAME, dimension=embedding.DIMENSION)

    def online_store_client(self):
        from ai_pipeline.lib.online_store import PostgresOnlineStore, SqliteOnlineStore

        if self.online_store == "postgres":
            return PostgresOnlineStore(self.online_dsn, self.online_table)
        return SqliteOnlineStore(self.home / "online_features.sqlite")

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def chroma(self) -> Path:
        return self.home / "chroma"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
