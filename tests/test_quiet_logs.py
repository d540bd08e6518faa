"""`make demo` is quiet (issue 12, item 8): a job run in process prints the tool's own lines, warnings and errors;
Dagster's DEBUG events go to a log file."""

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
