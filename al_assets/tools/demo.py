"""`make demo`: real labelling rounds end to end on the sample images.

1. The ingest job runs in this process (scan + embed the sample images with
   efficientnet_lite0) against the instance in $DAGSTER_HOME. The terminal shows
   the steps' own lines (progress with done/total, rate, time left), warnings
   and errors; every Dagster event goes to data_dir/dagster-ingest.log
   (al_assets.tools.quiet_logs), as the daemon's go to data_dir/dagster-daemon.log.
2. The Dagster daemon starts in the background (bound to nothing: it serves no
   port). Its inbox sensor proposes the seed pool (centroid), then, for every
   label file, runs a round: ingest, train the probe, evaluate, propose the next
   batch (dropquery). Exactly the production path.
3. This process plays the annotators: it answers each batch from the ground
   truth (`al simulate-annotator` does the same from the command line), a
   second, noisy annotator answering a share of each batch too (so the report
   has agreement figures), and prints a table row per round.
4. It waits until no run is queued, running or about to be retried (at most
   RUNS_SETTLE_TIMEOUT_S), then stops the daemon: a daemon stopped under a run
   leaves it "starting" for the next daemon's run monitoring (180 s).
5. It writes data/reports/report.html and says how to open the UI.

Re-running the demo starts over: the demo's own database (marked as such) is
removed first; a database that is not the demo's is never touched.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from al_assets.tools.quiet_logs import quiet_job
from al_core.catalogue import open_store
from al_core.files.processes import stop_group

DEMO_ROUNDS = 6  # rounds after the seed pool; each adds budget_per_round labels
SECOND_ANNOTATOR_SHARE = 0.4  # share of each batch a second annotator answers too (agreement in the report)
SECOND_ANNOTATOR_NOISE = 0.25  # and how often that second annotator is wrong
ROUND_TIMEOUT_S = 300  # a round that takes longer than this stops the demo with the daemon log's tail
STATUS_EVERY_S = 30.0  # a "still waiting" line at most this often, and never a silent minute
RUNS_SETTLE_TIMEOUT_S = 300  # the longest wait for runs still going before the daemon is stopped
INGEST_LOG_NAME = "dagster-ingest.log"  # in data_dir: every event of the in-process ingest run, DEBUG included


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


DEMO_MARKER = "demo"  # schema_info key: set to "true" in the demo's own database, the only one it removes


def _reset(cfg) -> None:
    from al_core.catalogue import info

    db = cfg.db_path
    if db.exists():
        try:
            with open_store(cfg, lock_timeout_s=5).connect(read_only=True, view=False) as con:
                marker = info.schema_info(con).get(DEMO_MARKER)
        except Exception as e:
            raise SystemExit(
                f"demo: {db} exists and cannot be read ({e}); move it away or run `make clean-data`"
            ) from None
        if marker != "true":
            raise SystemExit(
                f"demo: {db} holds a project that is not the demo's; not touching it. "
                "Set paths.data_dir elsewhere for the demo or move it away."
            )
        _say(f"removing the previous demo's state under {cfg.data_dir} (the Dagster home is kept)")
    for p in [db, Path(str(db) + ".wal"), cfg.vectors_dir, cfg.probes_dir, cfg.inbox, cfg.outbox, cfg.reports_dir]:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    with open_store(cfg).transaction() as con:
        info.set_info(con, DEMO_MARKER, "true")


def _evaluated_probe(store, round_: int) -> dict | None:
    """The latest probe of ``round_`` once it has metrics, else None."""
    from al_core.catalogue.probes import latest_probe_of_round

    with store.connect(read_only=True, view=False) as con:
        row = latest_probe_of_round(con, round_)
    return row if row is not None and row["n_eval"] is not None else None


def _round_done(store, round_: int, target: Path) -> bool:
    """Batch ``round_``'s CSV is in the outbox and (round >= 1) its probe is evaluated."""
    return target.exists() and (round_ == 0 or _evaluated_probe(store, round_) is not None)


def _start_daemon(log_path: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("dagster-daemon")
    with open(log_path, "w") as log:  # the daemon writes to its own copy of the descriptor
        return subprocess.Popen(
            [str(exe), "run", "-w", "workspace.yaml"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ),
        )


def wait_for_runs(instance, timeout_s: float = RUNS_SETTLE_TIMEOUT_S, poll_s: float = 0.5) -> bool:
    """Wait until ``instance`` has no run in flight (al_assets.runs); False when ``timeout_s`` passed first."""
    from al_assets.runs import in_flight_runs

    deadline, last = time.monotonic() + timeout_s, time.monotonic()
    while runs := in_flight_runs(instance):
        if time.monotonic() > deadline:
            _say(f"{len(runs)} run(s) still going after {timeout_s:.0f} s; stopping the daemon anyway")
            return False
        if time.monotonic() - last > STATUS_EVERY_S:
            last = time.monotonic()
            _say(f"  ... waiting for {len(runs)} run(s) to finish before stopping the daemon")
        time.sleep(poll_s)
    return True


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def main() -> int:
    import dagster as dg

    from al_assets.definitions import defs
    from al_core.config import load_config
    from al_core.loop.annotator import answer_round, second_opinion
    from al_core.loop.outbox import batch_csv
    from al_core.reporting.report import write_report

    t_start = time.monotonic()
    cfg = load_config()
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("demo: DAGSTER_HOME is not set (run it through `make demo`)")
    _say(f"project file {cfg.source_file or '(built-in defaults)'}; images {cfg.image_root}; data {cfg.data_dir}")
    _reset(cfg)

    ingest_log = cfg.data_dir / INGEST_LOG_NAME
    _say(
        "step 1/5: ingest_job (scan + embed the sample images with "
        f"{cfg.backbone.name} at {cfg.backbone.image_size} px); progress every few seconds, "
        f"every Dagster event in {ingest_log}"
    )
    job, run_config = quiet_job(defs.resolve_job_def("ingest_job"), ingest_log, prefix="ingest")
    with dg.DagsterInstance.get() as instance:
        res = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
    if not res.success:
        _say(f"the ingest job failed; see the lines above and {ingest_log}")
        return 1
    emb = open_store(cfg).get_asset_output("embeddings", "")
    _say(f"embedded {emb['n_total']} images ({emb['images_per_s']:.0f} images/s), config {emb['config_id']}")

    log_path = cfg.data_dir / "dagster-daemon.log"
    _say(f"step 2/5: starting the Dagster daemon (sensor every {cfg.sensor.interval_s} s; log {log_path})")
    daemon = _start_daemon(log_path)
    store = open_store(cfg)
    rows = []
    try:
        for r in range(0, DEMO_ROUNDS + 1):
            target = batch_csv(cfg.outbox, r)
            what = "seed pool (centroid)" if r == 0 else f"round {r}: ingest, train, evaluate, propose"
            _say(f"waiting for {what}")
            deadline = time.monotonic() + ROUND_TIMEOUT_S
            last = time.monotonic()
            while not _round_done(store, r, target):
                if daemon.poll() is not None:
                    _say("the daemon stopped:\n" + _tail(log_path))
                    return 1
                if time.monotonic() > deadline:
                    _say(f"no {target.name} after {ROUND_TIMEOUT_S} s; daemon log tail:\n" + _tail(log_path))
                    return 1
                if time.monotonic() - last > STATUS_EVERY_S:
                    last = time.monotonic()
                    _say(f"  ... still waiting for {target.name} ({time.monotonic() - t_start:.0f} s since start)")
                time.sleep(0.5)
            if r >= 1:
                m = _evaluated_probe(store, r)
                if m:
                    rows.append((r, m["n_labels"], m["accuracy"], m["balanced_accuracy"], m["macro_f1"]))
                    _print_table(rows)
            if r < DEMO_ROUNDS:
                second_opinion(cfg, r, share=SECOND_ANNOTATOR_SHARE, noise=SECOND_ANNOTATOR_NOISE)
                p = answer_round(cfg, r)
                _say(f"simulated annotators delivered {p.name} answering batch {r}")
    finally:
        if daemon.poll() is None:
            _say("step 3/5: waiting for the last run to finish, then stopping the daemon")
            with dg.DagsterInstance.get() as instance:
                wait_for_runs(instance)
        _stop(daemon)

    _say("step 4/5: writing the report")
    report = write_report(store, cfg)
    _say(f"step 5/5: done in {time.monotonic() - t_start:.0f} s")
    print(f"""
Report:           {report}   (one offline HTML file: learning curve, confusion matrix, latest batch,
                  suspected label errors, class balance, agreement between the two annotators, duplicates)
Suspects:         .venv/bin/al labels suspects
Rounds as JSON:   .venv/bin/al rounds --json
Lineage:          .venv/bin/al lineage <image_id>
The Dagster UI:   make ui    (http://127.0.0.1:3000: assets, runs, eval_metrics with the learning curve)

Labelling your own photos: docs/quickstart.md, from `.venv/bin/al init my-project/al.yaml --images
my-project/photos --classes a,b,c`, `al ingest` and `AL_CONFIG=my-project/al.yaml make ui` to round 3. Each
batch appears in the outbox (CSV, review gallery, Label Studio import file); deliver label files into the
inbox (check one first with `.venv/bin/al labels check FILE`); the next round starts by itself.
""")
    return 0


def _print_table(rows) -> None:
    print("\n  round  labels  accuracy  balanced_acc  macro_f1")
    for r, n, acc, bacc, f1 in rows:
        print(f"  {r:>5}  {n:>6}  {acc:>8.3f}  {bacc:>12.3f}  {f1:>8.3f}")
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
