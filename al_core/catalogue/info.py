"""Named queries over the database's records about itself: ``schema_info`` (its id, markers) and ``asset_outputs``."""


def schema_info(con) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM schema_info").fetchall())


def database_id(con) -> str | None:
    """The id given to the database when it was created (None for one created before ids existed)."""
    row = con.execute("SELECT value FROM schema_info WHERE key = 'database_id'").fetchone()
    return None if row is None else row[0]


def set_info(con, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO schema_info (key, value) VALUES (?, ?)", [key, value])


def has_asset_output(con, asset_key: str) -> bool:
    """Whether any partition of ``asset_key`` has a stored value (the asset was materialised)."""
    return con.execute("SELECT 1 FROM asset_outputs WHERE asset_key = ? LIMIT 1", [asset_key]).fetchone() is not None
