"""Named queries over ``asset_outputs``: the JSON value of each Dagster asset (and partition)."""

import json


def put(con, asset_key: str, partition_key: str, run_id: str | None, value: dict, created_at) -> None:
    """Store (or replace) an asset's value as canonical JSON."""
    con.execute(
        "INSERT OR REPLACE INTO asset_outputs (asset_key, partition_key, run_id, value, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [asset_key, partition_key, run_id, json.dumps(value, sort_keys=True, default=str), created_at],
    )


def get(con, asset_key: str, partition_key: str) -> dict:
    """An asset's value; KeyError when it has not been materialised."""
    row = con.execute(
        "SELECT value FROM asset_outputs WHERE asset_key = ? AND partition_key = ?", [asset_key, partition_key]
    ).fetchone()
    if row is None:
        raise KeyError(f"asset {asset_key} (partition {partition_key or '-'}) has not been materialised")
    return json.loads(row[0])
