"""Named queries of the ``requests`` table: work the command line asks for, which the inbox sensor launches
as runs (docs/architecture.md), and the open batch a ``close_round`` request closes."""

from __future__ import annotations

import uuid

from al_core.catalogue.store import now

REQUEST_KINDS = ("close_round", "retry_file")


def open_round(con) -> int | None:
    """The open batch (the highest round whose status is 'open'), or None when every batch is closed."""
    row = con.execute("SELECT max(round) FROM rounds WHERE status = 'open'").fetchone()
    return None if row[0] is None else int(row[0])


def add_request(con, kind: str, arg: str) -> str:
    """Record a request of ``kind`` (REQUEST_KINDS) with its argument; return its new request id."""
    if kind not in REQUEST_KINDS:
        raise ValueError(f"unknown request kind {kind!r}; known: {', '.join(REQUEST_KINDS)}")
    request_id = uuid.uuid4().hex
    con.execute("INSERT INTO requests (request_id, kind, arg, created_at) VALUES (?, ?, ?, ?)",
                [request_id, kind, str(arg), now()])
    return request_id
