"""Fresh databases on the local PostgreSQL server (127.0.0.1:5432, trust authentication)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql

ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=5"


class PostgresUnavailable(RuntimeError):
    """The local server does not answer."""


def pg_execute(dsn: str, statement) -> None:
    """One statement in autocommit mode (CREATE/DROP DATABASE cannot run in a transaction)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextmanager
def postgres_database() -> Iterator[dict[str, str]]:
    """A fresh database on the local server for a Dagster instance, dropped afterwards; yields its DAGSTER_PG_*
    variables (what the top-level dagster.yaml reads). Raises PostgresUnavailable if the server does not answer."""
    try:
        pg_execute(ADMIN_DSN, "select 1")
    except psycopg2.OperationalError as exc:
        raise PostgresUnavailable(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}") from exc
    name = f"ai_pipeline_test_{uuid.uuid4().hex[:12]}"
    pg_execute(ADMIN_DSN, sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": "5432",
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": name,
        }
    finally:
        pg_execute(ADMIN_DSN, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
