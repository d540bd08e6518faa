"""Work run in a child process by tests/test_reliability.py, usually with $AL_FAULT set so it dies by SIGKILL.

    python -m tests.reliability_child COMMAND PROJECT_FILE

Commands:
  labels   ingest every label file of the inbox and inbox/eval/ into round 1 (al_core only, what `round_labels`
           does)
  round    the whole round-1 run in al_core (ingest, close batch 0, train, evaluate, propose batch 1)
  dagster  ask the inbox sensor for a run and execute it in process against $DAGSTER_HOME
  embed    embed the ok images that have no vector (flushes of EMBED_FLUSH_ROWS rows)
  scan     scan the image root
  hold     open the database read-only, print 'held' and sleep $HOLD_S seconds (an analyst's session)

It prints 'survived' when the command returns: a test expecting a kill then knows the
fault point was never reached.
"""

import os
import sys
import time

from al_core.catalogue import open_store


def round_job_of_the_project():
    """round_job of the project in $AL_CONFIG: a reconstructable job, so Dagster can re-execute a failed run
    from its failed step (tests/test_recovery.py), as its run retries do."""
    from al_assets.definitions import build_defs
    from al_core.config import load_config

    return build_defs(load_config(os.environ["AL_CONFIG"])).resolve_job_def("round_job")


def main(argv: list[str]) -> int:
    cmd, project = argv[0], argv[1]
    from al_core.config import load_config

    cfg = load_config(project)
    store = open_store(cfg)
    if cmd == "labels":
        from al_core.loop import ingest_label_files
        from al_core.loop.inbox import survey_inbox

        ingest_label_files(store, cfg, survey_inbox(cfg.inbox, 0).ready, round_=1, classes=cfg.class_names(store))
    elif cmd == "round":
        import al_core.loop as R

        classes = cfg.class_names(store)
        rep = R.ingest_label_files(store, cfg, R.list_inbox(cfg.inbox, 0), round_=1, classes=classes)
        assert rep.ready, rep.as_dict()
        R.close_round(store, 0, "answered")
        config_id = store.fetch("SELECT config_id FROM rounds WHERE round = 0")[0][0]
        pool = R.load_pool(store, cfg, config_id, classes)
        probe, rec = R.train_probe(store, cfg, 1, pool)
        R.evaluate(store, cfg, 1, pool, probe, rec.probe_id)
        R.propose(store, cfg, 1, pool, probe=probe, probe_id=rec.probe_id)
    elif cmd == "dagster":
        import dagster as dg

        from al_assets.definitions import build_defs
        from tests.loop_helpers import execute, run_requests

        defs = build_defs(cfg)
        with dg.DagsterInstance.get() as instance:
            result = run_requests(defs, instance)
            req = [r for r in result.run_requests if r.job_name == "round_job"][-1]
            print("run requested", req.run_key, flush=True)
            execute(defs, instance, req)
    elif cmd == "embed":
        import al_core.ingest.pipeline as ingest
        from al_core.models.backbones import load_backbone

        ingest.FLUSH_ROWS = int(os.environ.get("EMBED_FLUSH_ROWS", "8"))
        bb = load_backbone(cfg.backbone.name, image_size=cfg.backbone.image_size, device="cpu")
        ingest.embed_missing(store, bb, batch_size=4, num_workers=0)
    elif cmd == "scan":
        from al_core.ingest.scan import scan

        scan(store, cfg.image_root)
    elif cmd == "hold":
        import duckdb

        con = duckdb.connect(str(cfg.db_path), read_only=True)
        con.execute("SELECT count(*) FROM labels").fetchall()
        print("held", flush=True)
        time.sleep(float(os.environ.get("HOLD_S", "30")))
        con.close()
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    print("survived", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
