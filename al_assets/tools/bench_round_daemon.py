"""`al bench round --via daemon`: label file landing to the next outbox CSV, through a real `dagster dev`.

The temporary project (al_assets.tools.bench_round: a real tiny image root, N
synthetic vectors) gets a fresh DAGSTER_HOME with the project's dagster.yaml,
and `dagster dev` is started on 127.0.0.1 with the project's workspace.yaml
(al_assets.tools.dev_server.DagsterDev: its own process group, stopped and
killed at the end, also on failure, Ctrl-C or SIGTERM). Nothing is launched by
hand: the inbox sensor proposes the seed batch; once its run has ended, the
label file answering it is written into the inbox (atomically: it lands whole,
at one instant), and ``outbox/round-0001.csv`` is polled for every POLL_S.

The split is read from the instance the daemon used (``DagsterInstance`` from
that DAGSTER_HOME): the sensor tick that requested the round (``dagster/tick``
tag; its start and end), the run record's creation, its RUN_ENQUEUED,
RUN_STARTING, "Started process for run" and RUN_START events (queue and launch,
run process start, code location load), each step's STEP_START and
STEP_SUCCESS, and the outbox file's rename (its ctime).
Whether an ingest run was requested before the round (the sensor's check,
al_core.ingest.freshness) comes from the runs of ``ingest_job`` created after
the landing and the round run's ``al/ingest_before`` / ``al/ingest_check`` tags.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from al_assets.tools.bench_round import answer_rows, label_csv, loadavg, make_store, step_times, write_project

__all__ = ["bench_daemon", "split", "timeline"]

POLL_S = 0.05  # outbox polling while the clock runs: one stat every 50 ms (the figure's resolution)
WAIT_POLL_S = 0.5  # other waits (the seed proposal, runs ending)
# the run's events read (Dagster 1.13 records no RUN_DEQUEUED: the queue's wait and the launch are one stage)
EVENTS = ("RUN_CREATED", "RUN_ENQUEUED", "RUN_STARTING", "PROCESS_STARTED", "RUN_START", "RUN_SUCCESS")
PROCESS_STARTED_MESSAGE = "Started process for run"  # the run worker's first event (dagster._grpc.impl)


class BenchError(RuntimeError):
    """The daemon did not do what the benchmark waits for in time; the message ends with its log's tail."""


def _wait(dev, predicate, deadline: float, what: str, poll_s: float = WAIT_POLL_S) -> float:
    """Poll ``predicate()`` until true (returns the time.time() it was seen) or fail with the log's tail."""
    while not predicate():
        if not dev.alive():
            raise BenchError(f"dagster dev exited while waiting for {what}:\n" + dev.log_tail())
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} in time; dagster dev log tail:\n" + dev.log_tail(4000))
        time.sleep(poll_s)
    return time.time()


def _in_flight(instance) -> int:
    from al_assets.runs import in_flight_runs

    return len(in_flight_runs(instance))


def _runs_of(instance, job: str, after: float) -> list:
    import dagster as dg

    return sorted(
        (r for r in instance.get_run_records(dg.RunsFilter(job_name=job)) if r.create_timestamp.timestamp() >= after),
        key=lambda r: r.create_timestamp,
    )


def _tick(instance, tick_id: str | None, after: float):
    """The inbox sensor's tick ``tick_id`` and how many of its ticks started after ``after`` before it."""
    from dagster._core.scheduler.instigation import InstigatorType

    from sensors.inbox import SENSOR_NAME

    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.name == SENSOR_NAME]
    if not states or tick_id is None:
        return None, None
    ticks = instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, after=after - 1)
    match = [t for t in ticks if str(t.tick_id) == str(tick_id)]
    if not match:
        return None, None
    return match[0], sum(1 for t in ticks if after <= t.timestamp < match[0].timestamp)


def _events(instance, run_id: str) -> tuple[dict[str, float], dict[str, dict]]:
    """(first time of each of EVENTS, PROCESS_STARTED: the run worker's "Started process for run" engine event;
    step key -> {"start", "end"}) from the run's event log."""
    records = list(instance.all_logs(run_id))
    first: dict[str, float] = {}
    for entry in records:
        ev = entry.dagster_event
        if ev is None:
            continue
        name = ev.event_type.name
        if name == "ENGINE_EVENT" and (entry.message or "").startswith(PROCESS_STARTED_MESSAGE):
            name = "PROCESS_STARTED"
        if name in EVENTS:
            first.setdefault(name, entry.timestamp)
    return first, step_times(records)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


RUN_POINTS = (
    ("RUN_CREATED", "run created"),  # the run record's creation time
    ("RUN_ENQUEUED", "run enqueued"),
    ("RUN_STARTING", "run launched"),
    ("PROCESS_STARTED", "run process started"),
    ("RUN_START", "run execution started"),
)


def timeline(landed: float, renamed: float, tick, ev: dict[str, float], steps: dict[str, dict]) -> list:
    """[stage, seconds] from the landing to the outbox rename, consecutive and adding up to the whole: the sensor
    tick that requested the round, the run's queue and launch events, every step started (and ended) before the
    rename. A record that is missing leaves its point out (the stage around it is then longer)."""
    points = [("label file landed", landed)]
    if tick is not None:
        points.append(("sensor tick started", tick.timestamp))
    points += [(label, ev[name]) for name, label in RUN_POINTS if name in ev]
    for key, v in sorted(steps.items(), key=lambda kv: kv[1].get("start", float("inf"))):
        if v.get("start", float("inf")) >= renamed:
            break
        points.append((f"step {key} started", v["start"]))
        if v.get("end", float("inf")) <= renamed:
            points.append((f"step {key} ended", v["end"]))
    points.append(("outbox CSV renamed", renamed))
    return [[f"{a} -> {b}", round(tb - ta, 3)] for (a, ta), (b, tb) in zip(points, points[1:])]


SPLIT = {  # timeline stage -> the split's name for it
    "label file landed -> sensor tick started": "settle and tick wait",
    "sensor tick started -> run created": "sensor tick (list, validate, ingest check) to run created",
    "run created -> run enqueued": "run created to enqueued (Dagster records the planned materialisations)",
    "run enqueued -> run launched": "queue and launch (the run queue's dequeue loop, then the launcher)",
    "run launched -> run process started": "run process start (a spawned interpreter, dagster imports)",
    "run process started -> run execution started": "code location load and run start",
}


def split(stages: list) -> dict:
    """The timeline summed into the benchmark's split (SPLIT's names; each step's time before the rename; the
    time between steps; ``other (A -> B)`` where a missing record merged two stages)."""
    out = dict.fromkeys(SPLIT.values(), 0.0)
    for stage, sec in stages:
        a, b = stage.split(" -> ")
        if stage in SPLIT:
            key = SPLIT[stage]
        elif a.startswith("step ") and a.endswith(" started"):
            key = a.removesuffix(" started") + (" (up to the rename)" if b == "outbox CSV renamed" else "")
        elif a == "run execution started" or a.endswith(" ended"):
            key = "between steps (run start to the first, and gaps)"
        else:  # a record was missing, so two stages are one
            key = f"other ({stage})"
        out[key] = round(out.get(key, 0.0) + sec, 3)
    return out


def bench_daemon(args: argparse.Namespace, tmp: Path) -> dict:
    import dagster as dg

    from al_assets.tools.dev_server import DagsterDev, new_dagster_home
    from al_core.files.atomic import atomic_write_text
    from al_core.loop.outbox import batch_csv

    sensor = {"interval_s": args.interval_s}
    if args.settle_s is not None:
        sensor["settle_s"] = args.settle_s
    cfg = write_project(tmp, args, sensor)
    t = time.perf_counter()
    make_store(cfg, args.n, args.dim, args.classes, 0)
    store_s = time.perf_counter() - t
    print(f"synthetic store of {args.n} x {args.dim} in {store_s:.1f} s", file=sys.stderr)
    home = new_dagster_home(tmp)
    deadline = time.monotonic() + args.timeout_s
    t_start = time.time()
    with DagsterDev(home, tmp / "al.yaml", tmp / "dagster-dev.log", start_timeout_s=args.timeout_s) as dev:
        t_up = time.time()
        instance = dg.DagsterInstance.from_config(str(home))
        seed_at = _wait(dev, batch_csv(cfg.outbox, 0).exists, deadline, "seed proposal (outbox/round-0000.csv)")
        _wait(dev, lambda: _in_flight(instance) == 0, deadline, "end of the seed run")
        rows = answer_rows(cfg, 0)
        cfg.inbox.mkdir(parents=True, exist_ok=True)
        load_before = loadavg()
        atomic_write_text(cfg.inbox / "labels-round-0000.csv", label_csv(rows))
        landed = time.time()
        out = batch_csv(cfg.outbox, 1)
        seen = _wait(dev, out.exists, deadline, "next proposal (outbox/round-0001.csv)", POLL_S)
        renamed = os.stat(out).st_ctime
        load_at_rename = loadavg()
        _wait(dev, lambda: _in_flight(instance) == 0, deadline, "end of the round run")
        rounds, ingests = _runs_of(instance, "round_job", landed), _runs_of(instance, "ingest_job", landed)
        if not rounds:
            raise BenchError("no round_job run after the landing; dagster dev log tail:\n" + dev.log_tail(4000))
        run = rounds[0]
        tags = run.dagster_run.tags
        tick, skipped_ticks = _tick(instance, tags.get("dagster/tick"), landed)
        ev, steps = _events(instance, run.dagster_run.run_id)
        ev["RUN_CREATED"] = run.create_timestamp.timestamp()
        stages = timeline(landed, renamed, tick, ev, steps)
        whole_run = (ev.get("RUN_SUCCESS") or time.time()) - ev["RUN_ENQUEUED"]
    return {
        "via": "daemon",
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "budget": args.budget,
        "strategy": args.strategy,
        "sensor_interval_s": cfg.sensor.interval_s,
        "sensor_settle_s": cfg.sensor.settle_s,
        "landing_to_outbox_rename_s": round(renamed - landed, 3),
        "landing_to_outbox_seen_s": round(seen - landed, 3),
        "tick_start_to_outbox_rename_s": _r(renamed - tick.timestamp if tick else None),
        "split_s": split(stages),
        "timeline_s": stages,
        "sensor_tick_s": _r(tick.end_timestamp - tick.timestamp if tick and tick.end_timestamp else None),
        "steps_s": {k: _r(v["end"] - v["start"]) for k, v in steps.items() if "end" in v},
        "steps_after_the_rename": [k for k, v in steps.items() if v.get("start", 0) >= renamed],
        "round_run_total_s": round(whole_run, 3),
        "round_run_status": run.dagster_run.status.value,
        "ticks_between_landing_and_request": skipped_ticks,
        "ingest_runs_after_landing": len(ingests),
        "ingest_before": tags.get("al/ingest_before"),
        "ingest_check": tags.get("al/ingest_check"),
        "ingest_check_s": float(tags["al/ingest_check_s"]) if "al/ingest_check_s" in tags else None,
        "proposed": sum(1 for _ in open(out, encoding="utf-8")) - 1,
        "setup_s": {
            "synthetic_store": round(store_s, 3),
            "dagster_dev_up": round(t_up - t_start, 3),
            "up_to_seed_proposal": round(seed_at - t_up, 3),
        },
        "loadavg_before": load_before,
        "loadavg_at_rename": load_at_rename,
        "loadavg_after": loadavg(),
    }
