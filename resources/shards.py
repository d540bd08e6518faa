"""Resources of the scale-out path (docs/scale-out.md).

- ``ShardJsonIOManager``: op outputs of ``embed_shards_job`` (the plan, each
  shard's summary) as JSON files in the vectors location, through fsspec, so a
  worker on another machine reads them without DuckDB and without pickle. The
  stock filesystem IO manager pickles into $DAGSTER_HOME; ``StoreJsonIOManager``
  writes DuckDB, which a worker must never do.
- ``dask_executor``: dagster-dask's executor, imported only when a run uses it
  (importing dagster_dask pulls in dask.dataframe and pandas: ~3-5 s at every
  code-location load otherwise). Same config as dagster-dask's, limited to an
  existing scheduler or a local cluster.
"""

import dagster as dg

from resources.store import StoreResource

IO_DIR = "_dagster_io"


class ShardJsonIOManager(dg.ConfigurableIOManager):
    """JSON values under ``<vectors>/_dagster_io/<run_id>/<step>/<output>.json`` (fsspec)."""

    store: dg.ResourceDependency[StoreResource]

    @staticmethod
    def _rel(identifier) -> str:
        return IO_DIR + "/" + "/".join(str(p).replace("/", "_") for p in identifier) + ".json"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        if not isinstance(obj, dict | list):
            raise TypeError(f"{context.step_key}: outputs must be JSON-able dicts or lists, got {type(obj).__name__}")
        self.store.get().vectors_loc.put_json(self._rel(context.get_identifier()), obj)

    def load_input(self, context: dg.InputContext):
        return self.store.get().vectors_loc.read_json(self._rel(context.upstream_output.get_identifier()))


@dg.executor(
    name="dask",
    requirements=dg.multiple_process_executor_requirements(),
    config_schema={
        "cluster": dg.Field(
            dg.Selector(
                {
                    "existing": dg.Field(
                        {"address": dg.StringSource}, description="Connect to an existing scheduler (tcp://host:port)."
                    ),
                    "local": dg.Field(
                        dg.Permissive(),
                        is_required=False,
                        description="Start a distributed.LocalCluster for the run (its parameters).",
                    ),
                }
            )
        )
    },
)
def dask_executor(init_context):
    """dagster-dask's DaskExecutor: each step is a Dask task; a step with the tag
    ``dagster-dask/resource_requirements`` only runs on a worker that has those resources."""
    from dagster_dask.executor import DaskExecutor

    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return DaskExecutor(cluster_type, cluster_configuration)
