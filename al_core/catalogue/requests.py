"""Named queries over ``requests``: work asked for by the command line, launched by the inbox sensor as runs."""

REQUEST_KINDS = ("close_round", "retry_file")


def add_request(con, request_id: str, kind: str, arg: str | None, created_at) -> None:
    if kind not in REQUEST_KINDS:
        raise ValueError(f"unknown request kind {kind!r}; one of {REQUEST_KINDS}")
    con.execute(
        "INSERT INTO requests (request_id, kind, arg, created_at) VALUES (?, ?, ?, ?)",
        [request_id, kind, arg, created_at],
    )


def open_requests(con) -> list[tuple[str, str, str | None]]:
    """(request_id, kind, arg) of every request not done yet, oldest first."""
    return con.execute(
        "SELECT request_id, kind, arg FROM requests WHERE done_at IS NULL ORDER BY created_at"
    ).fetchall()


def request_arg(con, request_id: str) -> str | None:
    """The request's argument (``close_round``: the batch open when it was asked); None when unknown or empty."""
    row = con.execute("SELECT arg FROM requests WHERE request_id = ?", [request_id]).fetchone()
    return None if row is None else row[0]


def finish_request(con, request_id: str, done_at, run_id: str | None) -> None:
    con.execute("UPDATE requests SET done_at = ?, run_id = ? WHERE request_id = ?", [done_at, run_id, request_id])
