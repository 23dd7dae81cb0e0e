"""
The metadata database, read directly: faster than the REST API, and it sees every column.

A deployment runs on a sqlite file in its home or on a throw-away PostgreSQL database
(:func:`postgres_database`); :class:`MetadataDatabase` reads either with one SQL text.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extras

from harness.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

#: What a read of the metadata database raises while Airflow migrates or holds a lock: try again.
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg2.Error)
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def pg_connect(url: str, connect_timeout: int = 5) -> Any:
    """A psycopg2 connection for a SQLAlchemy URL (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    parts = urlsplit(url)
    dsn = urlunsplit(parts._replace(scheme="postgresql"))
    return psycopg2.connect(dsn, connect_timeout=connect_timeout)


@contextlib.contextmanager
def postgres_database(server_url: str = POSTGRES_SERVER, prefix: str = "getimage_e2e") -> Iterator[str]:
    """
    A fresh, empty PostgreSQL database for one deployment; dropped afterwards. Yields its URL.

    ``server_url`` names a database to connect to for ``CREATE``/``DROP DATABASE`` (the server's
    ``postgres``). The drop uses ``WITH (FORCE)`` (PostgreSQL 13+): a process killed in a test may
    leave a session behind for a moment.

    :raises DatabaseUnavailable: when the server does not answer, so a test can skip and say why.
    """
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        admin = pg_connect(server_url)
    except psycopg2.OperationalError as exc:
        where = urlsplit(server_url).netloc.rpartition("@")[2]
        reason = " ".join(str(exc).split())
        raise DatabaseUnavailable(f"PostgreSQL not reachable at {where}: {reason}") from exc
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


class MetadataDatabase:
    """
    Read-only access to a deployment's metadata database, sqlite or PostgreSQL.

    :param url: the SQLAlchemy URL the deployment uses (``sqlite:///<file>`` or
        ``postgresql+psycopg2://...``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = urlsplit(url).scheme.split("+")[0]
        if self.kind not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {url!r}: sqlite or postgresql")
        self.sqlite_path = Path(urlsplit(url).path[1:]) if self.kind == "sqlite" else None

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """
        Rows as dicts, from one SQL text for both databases.

        ``?`` placeholders (turned into psycopg2's ``%s``), and a ``CAST(col AS TEXT)`` where a
        column is JSON on PostgreSQL but text on sqlite. Read-only, one short transaction and
        connection per call (a sampler reads from its own thread); Airflow runs sqlite in WAL
        mode, so this never blocks a writer.
        """
        if self.kind == "postgresql":
            with contextlib.closing(pg_connect(self.url)) as connection:
                connection.set_session(readonly=True, autocommit=True)
                with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                    cursor.execute(sql.replace("?", "%s"), tuple(params))
                    return [dict(row) for row in cursor.fetchall()]
        uri = f"file:{self.sqlite_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, tuple(params)).fetchall()]

    def containing(self, text: str) -> dict[str, int]:
        """
        Every table with a row holding ``text``: table -> rows.

        All columns, whatever their type: on PostgreSQL a row cast to text (``t::text``) shows
        text, JSON and numbers as they are and ``bytea`` as hex, so the hex of ``text`` is
        looked for too; on sqlite each value is compared as text or bytes.
        """
        found: dict[str, int] = {}
        if self.kind == "postgresql":
            tables = self.query(
                "SELECT quote_ident(table_name) AS name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
            for table in tables:
                name = table["name"]
                rows = self.query(
                    f"SELECT count(*) AS n FROM {name} AS t "  # table names from the catalogue
                    "WHERE strpos(t::text, ?) > 0 OR strpos(t::text, ?) > 0",
                    (text, text.encode().hex()),
                )
                if rows[0]["n"]:
                    found[table["name"]] = int(rows[0]["n"])
            return found
        needle = text.encode()
        for table in self.query("SELECT name FROM sqlite_master WHERE type = 'table'"):
            name = table["name"]
            hits = sum(
                any(
                    needle in (value if isinstance(value, bytes) else str(value).encode())
                    for value in row.values()
                    if value is not None
                )
                for row in self.query(f'SELECT * FROM "{name}"')  # table names from the catalogue
            )
            if hits:
                found[name] = hits
        return found

    def relation_sizes(self) -> dict[str, int]:
        """
        Bytes on disk of every table, its indexes and TOAST included (``pg_total_relation_size``):
        table -> bytes. PostgreSQL only: what a run adds to the metadata database is the change.

        Sizes grow in 8 KiB pages and keep dead rows (an updated or deleted row) until a vacuum
        frees them for reuse; they never shrink without ``VACUUM FULL``.
        """
        if self.kind != "postgresql":
            raise ValueError(f"relation sizes need PostgreSQL, this database is {self.kind}")
        rows = self.query(
            "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        )
        return {str(row["name"]): int(row["bytes"]) for row in rows}

    def run_row_bytes(self, dag_id: str, run_id: str) -> dict[str, dict[str, int]]:
        """
        The live rows one DAG run left, per table with ``dag_id`` and ``run_id`` columns:
        table -> ``{"rows", "bytes"}`` (``pg_column_size`` of each whole row). PostgreSQL only.

        Unlike :meth:`relation_sizes` it is blind to indexes, dead rows and rows of tables keyed
        otherwise (a trigger, deleted once it fired), and exact to the byte for the rest.
        """
        if self.kind != "postgresql":
            raise ValueError(f"row sizes need PostgreSQL, this database is {self.kind}")
        tables = self.query(
            "SELECT quote_ident(table_name) AS name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name IN ('dag_id', 'run_id') "
            "GROUP BY table_name HAVING count(*) = 2"
        )
        found: dict[str, dict[str, int]] = {}
        for table in tables:
            name = table["name"]
            rows = self.query(  # table names from the catalogue
                "SELECT count(*) AS n, coalesce(sum(pg_column_size(t.*)), 0) AS bytes "
                f"FROM {name} AS t WHERE t.dag_id = ? AND t.run_id = ?",
                (dag_id, run_id),
            )
            found[name.strip('"')] = {"rows": int(rows[0]["n"]), "bytes": int(rows[0]["bytes"])}
        return found
