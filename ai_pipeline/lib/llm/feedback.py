"""Feedback on chat replies: a small HTTP service that validates events and stores them durably, and the store.

    POST /feedback   a JSON object or a list of them:
                     {"conversation_id", "message_id", "rating": 1-5, "text"?, "user_id", "created_at"?, "feedback_id"?}
                     201 {"accepted": n, "already_stored": m, "feedback_ids": [...]}
                     422 {"errors": [{"index", "field", "message"}]}: nothing of the batch is stored
    GET  /health     200 {"ok": true, "stored": n}

Validation is the `Feedback` contract's, on the values as text (as the pipeline reads them back), so the service and
the pipeline decide alike. Without `created_at` the service stamps the time it received the event; without
`feedback_id` the id is a hash of conversation, message, user and time, so a client that retries the same event
(same time) stores it once. A new rating of the same reply is a new event: the datasets use each user's latest.

Stores: PostgreSQL (a table, created if absent) or an embedded SQLite file. Each keeps an arrival sequence number
(`seq`): the sensor's watermark for "how much feedback arrived since the last rebuild".
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
from pydantic import ValidationError

from ai_pipeline.lib.ingest.raw import SchemaReport, text_value, to_raw
from ai_pipeline.lib.llm.contracts import Feedback

SOURCE = "feedback_api"
COLUMNS = ("feedback_id", "conversation_id", "message_id", "rating", "text", "user_id", "created_at")
MAX_BODY = 1 << 20


def feedback_id(event: dict) -> str:
    key = "\x1f".join(str(event.get(k)) for k in ("conversation_id", "message_id", "user_id", "created_at"))
    return "fb-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def prepared(item: object, received_at: datetime) -> tuple[dict | None, list[dict]]:
    """An event as the store keeps it (every value as text) and the contract's objections, if any."""
    if not isinstance(item, dict):
        return None, [{"field": None, "message": f"a JSON {type(item).__name__}, not an object"}]
    event = {name: text_value(item.get(name)) for name in COLUMNS}
    event["created_at"] = event["created_at"] or received_at.isoformat().replace("+00:00", "Z")
    event["feedback_id"] = event["feedback_id"] or feedback_id(event)
    try:
        Feedback.model_validate(event)
    except ValidationError as exc:
        return None, [{"field": str(e["loc"][0]) if e["loc"] else None, "message": e["msg"]} for e in exc.errors()]
    return event, []


@dataclass(frozen=True)
class Arrivals:
    """Feedback stored after a watermark: how many events, the days they rate, the newest sequence number."""

    count: int
    days: list[date]
    last_seq: int


class SqliteFeedbackStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with closing(self._connect()) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, feedback_id TEXT "
                "NOT NULL UNIQUE, conversation_id TEXT, message_id TEXT, rating TEXT, text TEXT, user_id TEXT, "
                "created_at TEXT, day TEXT, received_at TEXT)"
            )

    @property
    def uri(self) -> str:
        return f"sqlite://{self.path}"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, events: Iterable[dict]) -> int:
        rows = [(*(e[c] for c in COLUMNS), _day(e["created_at"]), _now()) for e in events]
        with self._lock, closing(self._connect()) as conn, conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO feedback ({', '.join(COLUMNS)}, day, received_at) VALUES "
                f"({', '.join('?' * (len(COLUMNS) + 2))})",
                rows,
            )
            return conn.total_changes - before

    def count(self) -> int:
        with closing(self._connect()) as conn:
            return conn.execute("SELECT count(*) FROM feedback").fetchone()[0]

    def after(self, seq: int) -> Arrivals:
        with closing(self._connect()) as conn:
            count, last = conn.execute("SELECT count(*), max(seq) FROM feedback WHERE seq > ?", (seq,)).fetchone()
            days = [r[0] for r in conn.execute("SELECT DISTINCT day FROM feedback WHERE seq > ? ORDER BY day", (seq,))]
        return Arrivals(count, [date.fromisoformat(d) for d in days if d], last or seq)

    def read_day(self, day: date) -> list[dict]:
        with closing(self._connect()) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                f"SELECT seq, {', '.join(COLUMNS)} FROM feedback WHERE day = ? ORDER BY seq", (day.isoformat(),)
            ).fetchall()
        return [dict(r) for r in rows]


class PostgresFeedbackStore:
    def __init__(self, dsn: str, table: str = "public.llm_feedback"):
        from psycopg2 import sql

        from ai_pipeline.lib.ingest.ops_db import split_table_name

        self.dsn, self.table = dsn, table
        schema, name = split_table_name(table)
        self._table = sql.Identifier(schema, name)
        with closing(self._connect()) as conn, conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (seq BIGSERIAL PRIMARY KEY, feedback_id TEXT NOT NULL UNIQUE, "
                    "conversation_id TEXT, message_id TEXT, rating TEXT, text TEXT, user_id TEXT, created_at TEXT, "
                    "day DATE, received_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ).format(self._table)
            )

    @property
    def uri(self) -> str:
        from ai_pipeline.lib.ingest.ops_db import table_uri

        return table_uri(self.dsn, self.table)

    def _connect(self):
        import psycopg2

        return psycopg2.connect(self.dsn)

    def add(self, events: Iterable[dict]) -> int:
        from psycopg2 import sql

        rows = [(*(e[c] for c in COLUMNS), _day(e["created_at"])) for e in events]
        statement = sql.SQL("INSERT INTO {} ({}, day) VALUES ({}) ON CONFLICT (feedback_id) DO NOTHING").format(
            self._table,
            sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS),
            sql.SQL(", ").join(sql.Placeholder() * (len(COLUMNS) + 1)),
        )
        added = 0
        with closing(self._connect()) as conn, conn, conn.cursor() as cur:
            for row in rows:
                cur.execute(statement, row)
                added += cur.rowcount
        return added

    def count(self) -> int:
        from psycopg2 import sql

        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(self._table))
            return cur.fetchone()[0]

    def after(self, seq: int) -> Arrivals:
        from psycopg2 import sql

        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*), max(seq) FROM {} WHERE seq > %s").format(self._table), (seq,))
            count, last = cur.fetchone()
            cur.execute(sql.SQL("SELECT DISTINCT day FROM {} WHERE seq > %s ORDER BY day").format(self._table), (seq,))
            days = [r[0] for r in cur.fetchall() if r[0] is not None]
        return Arrivals(count, days, last or seq)

    def read_day(self, day: date) -> list[dict]:
        from psycopg2 import sql

        query = sql.SQL("SELECT seq, {} FROM {} WHERE day = %s ORDER BY seq").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), self._table
        )
        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(query, (day,))
            return [dict(zip(["seq", *COLUMNS], row, strict=True)) for row in cur.fetchall()]


FeedbackStore = SqliteFeedbackStore | PostgresFeedbackStore


def _day(created_at: str) -> str | None:
    """The UTC day an event belongs to; None when its time does not parse (the contract then quarantines it)."""
    try:
        moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date().isoformat()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def read_raw(store: FeedbackStore, day: date, *, ingested_at: datetime) -> tuple[pl.DataFrame, SchemaReport]:
    """The day's stored feedback as a raw frame (every value as text, the arrival sequence as the offset)."""
    rows = store.read_day(day)
    frame = pl.DataFrame({c: [r[c] for r in rows] for c in COLUMNS}, schema=dict.fromkeys(COLUMNS, pl.String))
    return to_raw(
        frame,
        Feedback,
        partition_day=day,
        source=SOURCE,
        uri=store.uri,
        ingested_at=ingested_at,
        offsets=[int(r["seq"]) for r in rows],
        raw_json=[json.dumps({c: r[c] for c in COLUMNS}, ensure_ascii=False) for r in rows],
    )


def window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


class _Handler(BaseHTTPRequestHandler):
    store: FeedbackStore

    def _answer(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        """Quiet: a service for tests and laptops; the store is the record."""

    def do_GET(self) -> None:
        if self.path != "/health":
            self._answer(HTTPStatus.NOT_FOUND, {"errors": [{"message": f"no such path {self.path}"}]})
            return
        self._answer(HTTPStatus.OK, {"ok": True, "stored": self.store.count()})

    def do_POST(self) -> None:
        if self.path != "/feedback":
            self._answer(HTTPStatus.NOT_FOUND, {"errors": [{"message": f"no such path {self.path}"}]})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"errors": [{"message": f"over {MAX_BODY} bytes"}]})
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._answer(HTTPStatus.BAD_REQUEST, {"errors": [{"message": f"not JSON: {exc}"}]})
            return
        items = payload if isinstance(payload, list) else [payload]
        received_at = datetime.now(UTC)
        events, errors = [], []
        for index, item in enumerate(items):
            event, problems = prepared(item, received_at)
            errors += [{"index": index, **p} for p in problems]
            events.append(event)
        if errors or not items:
            errors = errors or [{"index": None, "field": None, "message": "no feedback in the request"}]
            self._answer(HTTPStatus.UNPROCESSABLE_ENTITY, {"errors": errors})
            return
        added = self.store.add(events)
        self._answer(
            HTTPStatus.CREATED,
            {
                "accepted": added,
                "already_stored": len(events) - added,
                "feedback_ids": [e["feedback_id"] for e in events],
            },
        )


def server(store: FeedbackStore, host: str = "127.0.0.1", port: int = 8087) -> ThreadingHTTPServer:
    """The feedback service, bound but not yet serving (`serve_forever`, `shutdown`)."""
    handler = type("FeedbackHandler", (_Handler,), {"store": store})
    return ThreadingHTTPServer((host, port), handler)
