"""The catalogue: the DuckDB database and the vector part files beside it.

This package is the only owner of SQL text that touches the schema: the rest of
the project calls the named functions of its modules. ``open_store(cfg)`` is
the one way to get a ``Store`` for a project.

Importing this package is cheap (DuckDB is imported when a store is opened), so
command-line modules can import it at the top.
"""

_EXPORTS = ("DEFAULT_LOCK_TIMEOUT_S", "SchemaVersionError", "Store", "StoreError", "StoreLockedError", "now")
__all__ = [*_EXPORTS, "open_store"]


def open_store(cfg, *, lock_timeout_s: float | None = None):
    """The project's ``Store``: its database, its vectors location and its lock-retry window.

    ``lock_timeout_s`` overrides the project's ``store.lock_timeout_s`` (a sensor
    tick waits only briefly for the writer, for example).
    """
    from al_core.catalogue.store import Store

    timeout = cfg.store_cfg.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
    return Store(cfg.db_path, cfg.vectors_location, lock_timeout_s=timeout)


def __getattr__(name: str):
    if name in _EXPORTS:
        from al_core.catalogue import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
