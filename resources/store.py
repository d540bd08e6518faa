"""Dagster resources over the al_core store, and an IO manager that keeps asset
values (small JSON summaries that carry lineage between assets) in DuckDB.

No pickle: the stock filesystem IO manager pickles outputs; this one stores
JSON in the `asset_outputs` table, in one transaction per output.
"""

import dagster as dg

from al_core.catalogue.store import DEFAULT_LOCK_TIMEOUT_S, Store


class StoreResource(dg.ConfigurableResource):
    """The DuckDB catalogue and its vector folder."""

    db_path: str = "data/warehouse.duckdb"
    vectors_dir: str | None = None
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S

    def get(self) -> Store:
        return Store(self.db_path, self.vectors_dir, lock_timeout_s=self.lock_timeout_s)


class StoreJsonIOManager(dg.ConfigurableIOManager):
    """Asset values as JSON rows of the store (`asset_outputs`), keyed by asset and partition."""

    store: dg.ResourceDependency[StoreResource]

    @staticmethod
    def _key(asset_key: dg.AssetKey) -> str:
        return "/".join(asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        if not isinstance(obj, dict):
            raise TypeError(f"{self._key(context.asset_key)} must return a JSON-able dict, got {type(obj).__name__}")
        partition = context.partition_key if context.has_asset_partitions else ""
        self.store.get().put_asset_output(self._key(context.asset_key), partition, context.run_id, obj)

    def load_input(self, context: dg.InputContext):
        partition = context.asset_partition_key if context.has_asset_partitions else ""
        return self.store.get().get_asset_output(self._key(context.asset_key), partition)
