"""`make demo` and `make ui` are quiet (issue 12, item 8): a job run in process prints the tool's own lines, warnings
and errors, Dagster's DEBUG events go to a log file; `make ui`'s terminal (al_assets.tools.console) shows the runs'
own lines, warnings and errors, no line more often than every 30 s (a real `make ui` console is checked by
tests/test_quickstart.py)."""

import re

import dagster as dg

from al_assets.tools.quiet_logs import quiet_job


@dg.op
def work(context):
    context.log.info("embedding: 3/6 images (50 %), 0 failures, 1.0 s, 3.0 images/s, about 1 s left")
    context.log.debug("a debug line of the step")
    context.log.warning("2 images could not be decoded")


@dg.job
def small_job():
    work()


def test_a_quiet_job_prints_the_tools_lines_and_logs_every_event_to_a_file(tmp_path, capsys):
    log_path = tmp_path / "logs" / "dagster-ingest.log"
    job, run_config = quiet_job(small_job, log_path, prefix="ingest")
    capsys.readouterr()
    assert job.execute_in_process(run_config=run_config, instance=dg.DagsterInstance.ephemeral()).success
    out = capsys.readouterr()
    lines = out.out.splitlines()
    stamp = r"\[ingest \d\d:\d\d:\d\d\] "
    assert len(lines) == 2, lines
    assert re.fullmatch(stamp + r"work: embedding: 3/6 images \(50 %\).*about 1 s left", lines[0]), lines
    assert re.fullmatch(stamp + "WARNING: work: 2 images could not be decoded", lines[1]), lines
    assert "STEP_START" not in out.out + out.err and "a debug line" not in out.out + out.err
    logged = log_path.read_text()
    for event in ("STEP_START", "STEP_SUCCESS", "RUN_SUCCESS", "a debug line of the step", "2 images could not"):
        assert event in logged, event


@dg.op
def broken(context):
    raise dg.Failure(description="images.root /nowhere does not exist: set it in al.yaml", allow_retries=False)


@dg.job
def broken_job():
    broken()


def test_a_failed_step_is_one_error_line_naming_the_fix(tmp_path, capsys):
    job, run_config = quiet_job(broken_job, tmp_path / "dagster.log", prefix="ingest")
    capsys.readouterr()
    res = job.execute_in_process(run_config=run_config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not res.success
    out = capsys.readouterr().out
    errors = [ln for ln in out.splitlines() if "ERROR: " in ln]
    assert errors and all("images.root /nowhere does not exist: set it in al.yaml" in ln for ln in errors), out
    assert "Traceback" not in out and "Stack Trace" not in out


def test_the_demo_runs_the_real_ingest_job_with_these_loggers(tmp_path):
    from al_assets.definitions import defs

    job, run_config = quiet_job(defs.resolve_job_def("ingest_job"), tmp_path / "dagster-ingest.log")
    assert set(job.loggers) == {"al_terminal", "al_file"}  # Dagster's console logger is gone
    dg.validate_run_config(job, run_config)


# ------------------------------------------------------------------ `make ui`'s terminal (al_assets.tools.console)
RUN_ID = "26c5b28d-d65d-4645-af61-b1181c8215ea"


def _at(clock_s: float) -> str:
    return f"2026-12-02 03:41:{clock_s:02.0f} +0000"


def test_make_ui_shows_the_runs_own_lines_warnings_and_errors_not_dagsters_chatter():
    from al_assets.tools.console import LineFilter, RepeatGate

    shown = LineFilter(RepeatGate())
    lines = {
        f"{_at(1)} - dagster - DEBUG - round_job - {RUN_ID} - 4242 - round_labels - STEP_START - Started": False,
        f"{_at(2)} - dagster - INFO - round_job - {RUN_ID} - round_labels - answered (10/10): training": True,
        f"{_at(3)} - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: inbox_sensor": False,
        "  a continuation of a hidden line": False,
        f"{_at(4)} - dagster.daemon.MonitoringDaemon - WARNING - run {RUN_ID} has not started": True,
        f"{_at(5)} - dagster - ERROR - round_job - {RUN_ID} - 4242 - round_labels - STEP_FAILURE - boom": True,
        "Traceback (most recent call last):": True,
        '  File "x.py", line 1, in <module>': True,
        f"{_at(6)} - dagster-webserver - INFO - Serving dagster-webserver on http://127.0.0.1:3000": False,
        "a tool's own print": True,
    }
    for line, expected in lines.items():
        assert (shown(line) is not None) == expected, line
    # Dagster's warnings nobody can act on, and the steps a waiting round skips: in the log only
    for noise in (
        f"{_at(10)} - dagster.code_server - WARNING - No heartbeat received in 20 seconds, shutting down",
        f"{_at(11)} - dagster - INFO - round_job - {RUN_ID} - query_set - Skipping step query_set due to skipped "
        "dependencies: ['label_quality.result'].",
    ):
        assert shown(noise) is None, noise
    # shortened as the tool's own lines look; a sensor tick's own line too
    assert shown(f"{_at(12)} - dagster - INFO - __repository__ - inbox_sensor - inbox: b.csv (a31b) valid") == (
        "[inbox_sensor 03:41:12] inbox: b.csv (a31b) valid"
    )
    assert shown(f"{_at(7)} - dagster - INFO - round_job - {RUN_ID} - query_set - proposed 10") == (
        "[round_job 03:41:07] query_set: proposed 10"
    )
    assert shown(f"{_at(8)} - dagster - ERROR - round_job - {RUN_ID} - 4242 - round_labels - STEP_FAILURE - x") == (
        "[round_job 03:41:08] ERROR: round_labels: STEP_FAILURE - x"
    )
    assert shown(f"{_at(9)} - dagster.daemon.SensorDaemon - WARNING - slow tick") == (
        "[dagster.daemon.SensorDaemon 03:41:09] WARNING: slow tick"
    )


def test_make_ui_shows_a_repeated_line_at_most_every_30_s_and_says_how_many_it_held_back():
    from al_assets.tools.console import REPEAT_EVERY_S, RepeatGate

    now = [0.0]
    gate = RepeatGate(clock=lambda: now[0])
    warn = "dagster.daemon.SensorDaemon - WARNING - inbox_sensor: tick took 12 s"
    assert REPEAT_EVERY_S == 30.0
    assert gate(f"{_at(0)} - {warn}") is not None
    for t in (5, 10, 29):
        now[0] = t
        assert gate(f"{_at(t)} - {warn}") is None  # the same line, another time stamp
    now[0] = 29.5
    assert gate(f"{_at(29)} - dagster.daemon.SensorDaemon - WARNING - inbox_sensor: tick took 13 s") is not None
    now[0] = 31
    again = gate(f"{_at(31)} - {warn}")
    assert again.endswith("(3 more like it in the last 31 s: see the log)"), again
    # run ids and process ids do not make a line new
    now[0] = 40
    assert gate(f"[round 03:41:40] WARNING: run {RUN_ID} - 4242 - waits") is not None
    now[0] = 41
    assert gate(f"[round 03:41:41] WARNING: run {RUN_ID.replace('2', '3')} - 4343 - waits") is None


def test_repeated_too_often_finds_a_line_every_5_s():
    from tests.dagster_helpers import repeated_too_often

    every_5 = [(t, f"{_at(t)} - dagster.daemon - WARNING - still waiting") for t in range(0, 60, 5)]
    assert repeated_too_often(every_5, 30) == ["5.0 s apart: dagster.daemon - WARNING - still waiting"]
    every_30 = [(t, f"{_at(t % 60)} - dagster.daemon - WARNING - still waiting") for t in range(0, 120, 30)]
    assert repeated_too_often(every_30 + [(1, "  frame"), (2, "  frame")], 30) == []
