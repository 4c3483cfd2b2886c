"""Shared fixtures. Under CI=true nothing that CI can provide may be skipped: it fails instead."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import psycopg2
import pytest
from psycopg2 import sql

from ai_pipeline.defs.resources import LANDING, LandingZone
from ai_pipeline.settings import Settings
from ai_pipeline_support import IN_CI
from ai_pipeline_support.postgres import PostgresUnavailable, pg_execute, postgres_database

# The ONNX embedding backends export the model once per machine for the suite's commands (subprocesses read this),
# rather than once per test's data root.
os.environ.setdefault("AI_PIPELINE_MODEL_CACHE", str(Path(tempfile.gettempdir()) / f"ai_pipeline_models_{os.getuid()}"))
# The same folder for the tests' own `Settings` that embed in this process.
MODEL_CACHE = Path(os.environ["AI_PIPELINE_MODEL_CACHE"])

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require(available: bool, reason: str) -> None:
    """Skips a test whose real dependency is missing on a developer's machine; fails it in CI."""
    if not available:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: this test must run)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require(SHARED_DATA.is_dir(), f"{SHARED_DATA} is not there (../shared exists on dev and CI machines only)")
    return SHARED_DATA


PG_DSN_CANDIDATES = [
    "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5",
    "host=127.0.0.1 port=5432 dbname=test user=root connect_timeout=5",
]


def execute_days(job: dg.JobDefinition, instance: dg.DagsterInstance, day: date, last: date | None = None, **kwargs):
    """One in-process run of `job` for `day`, or for `day`..`last` as one run of a backfill range (the range tags
    a backfill run carries). `kwargs` go to `execute_in_process`; errors are returned, not raised."""
    if last is None:
        return job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False, **kwargs)
    tags = {
        "dagster/asset_partition_range_start": day.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    return job.execute_in_process(tags=tags, instance=instance, raise_on_error=False, **kwargs)


def landing_zone(settings: Settings, settle_s: float = 0.0, max_file_bytes: int = 1 << 30) -> dict[str, LandingZone]:
    """Resources for `build_defs`: the landing zone under the settings' data root, files read as soon as they
    land unless `settle_s` says otherwise."""
    zone = LandingZone(root=str(settings.landing), settle_s=settle_s, max_file_mb=max_file_bytes / (1 << 20))
    return {LANDING: zone}


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A DSN for database `test` on the local server (AI_PIPELINE_TEST_PG_DSN overrides)."""
    override = os.environ.get("AI_PIPELINE_TEST_PG_DSN")
    failures = []
    for dsn in [override] if override else PG_DSN_CANDIDATES:
        try:
            psycopg2.connect(dsn).close()
            return dsn
        except psycopg2.Error as exc:
            failures.append(f"{dsn}: {str(exc).strip()}")
    require(False, f"PostgreSQL is not reachable ({'; '.join(failures)})")


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema in database `test`, dropped afterwards."""
    name = f"ops_test_{uuid.uuid4().hex[:12]}"
    pg_execute(pg_dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        pg_execute(pg_dsn, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


Responder = Callable[[str, dict[str, str], dict[str, str]], tuple[int, dict[str, str], str]]


@contextmanager
def http_server(respond: Responder) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (a thread of this process); GETs are answered by
    `respond(path, query, headers) -> (status, headers, body)`. Yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, headers, body = respond(parts.path, query, dict(self.headers))
            data = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout tests)
                pass

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    with _serving(Handler) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on 127.0.0.1 with `handler`, in a thread of this process; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


WEBHOOK_SECRET = "T000/B000/s3cr3t"  # in the webhook's path, as chat webhooks carry theirs


@pytest.fixture
def postgres_instance(monkeypatch) -> Iterator[str]:
    """The environment selects a PostgreSQL Dagster instance in a fresh database, as users do
    (AI_PIPELINE_INSTANCE=postgres and DAGSTER_PG_*); yields the database's name."""
    with ExitStack() as stack:
        try:
            env = stack.enter_context(postgres_database())
        except PostgresUnavailable as exc:
            require(False, str(exc))
        monkeypatch.setenv("AI_PIPELINE_INSTANCE", "postgres")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env["DAGSTER_PG_DB"]


@dataclass
class Webhook:
    url: str
    received: list[dict] = field(default_factory=list)


@contextmanager
def webhook(answer: Callable[[int], int] = lambda n: 200, delay_s: float = 0.0) -> Iterator[Webhook]:
    """A real HTTP server on 127.0.0.1 that records each POSTed JSON body and answers `answer(n)` to the n-th
    (from 0); `delay_s` holds every answer back (to make a client time out)."""
    hook = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = answer(len(hook.received))
            if status < 300:
                hook.received.append(body)
            time.sleep(delay_s)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no")
            except OSError:  # the client gave up
                pass

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    with _serving(Handler) as port:
        hook.url = f"http://127.0.0.1:{port}/hooks/{WEBHOOK_SECRET}"
        yield hook
