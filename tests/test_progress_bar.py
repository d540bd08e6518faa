"""Long work shows how far it is (issue 12, item 8): `al ingest` draws a tqdm progress bar when stderr is a
terminal (a pseudo terminal here) and writes progress lines in a pipe; the bar's line carries done/total, rate and
time left."""

import fcntl
import io
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

from al_core.cli.progress import BAR_REFRESH_S, LINE_EVERY_S, TerminalProgress
from al_core.ingest.embed import Progress
from tests.conftest import ROOT, SAMPLE_ROOT

AL = Path(sys.executable).with_name("al")
BAR = re.compile(r"embedding: +(\d+)%\|[^|]*\| (\d+)/(\d+), ([^\r\n]*)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_reports_move_one_bar_and_the_last_is_a_line():
    term = FakeTerminal()
    shown = TerminalProgress(term)
    assert shown.tty and shown.interval_s == BAR_REFRESH_S
    shown.say("embedding 120 images with efficientnet_lite0")
    shown.embedding(Progress(images=30, failures=0, elapsed_s=3.0, images_per_s=10.0, total=120))
    shown.embedding(Progress(images=60, failures=2, elapsed_s=6.0, images_per_s=10.0, total=120))
    shown.say("a line while the bar is drawn")
    shown.embedding(Progress(images=118, failures=2, elapsed_s=11.8, images_per_s=10.0, total=120, done=True))
    out = term.getvalue()
    assert "\r" in out  # redrawn in place
    bars = BAR.findall(out)
    assert ("25", "30", "120", "10.0 images/s, about 9 s left") in bars, bars
    assert ("52", "62", "120", "10.0 images/s, 2 failures, about 6 s left") in bars, bars
    assert bars[-1][:3] == ("100", "120", "120") and "left" not in bars[-1][3]
    lines = [ln.strip() for ln in re.split(r"[\r\n]", ANSI.sub("", out)) if ln.strip()]
    assert "a line while the bar is drawn" in lines and lines[0] == "embedding 120 images with efficientnet_lite0"
    assert lines[-1] == "done: 118/120 images (100 %), 2 failures, 11.8 s, 10.0 images/s"
    assert shown.bar is None


def test_in_a_pipe_every_report_is_a_line():
    out = io.StringIO()
    shown = TerminalProgress(out)
    assert not shown.tty and shown.interval_s == LINE_EVERY_S
    shown.embedding(Progress(images=30, failures=0, elapsed_s=3.0, images_per_s=10.0, total=120))
    shown.embedding(Progress(images=120, failures=0, elapsed_s=12.0, images_per_s=10.0, total=120, done=True))
    assert out.getvalue().splitlines() == [
        "embedding: 30/120 images (25 %), 0 failures, 3.0 s, 10.0 images/s, about 9 s left",
        "done: 120/120 images (100 %), 0 failures, 12.0 s, 10.0 images/s",
    ]
    assert "\r" not in out.getvalue() and "%|" not in out.getvalue()


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for c in ("cat", "ship"):
        for f in sorted((SAMPLE_ROOT / c).iterdir())[:6]:
            shutil.copy(f, root / f"{c}_{f.name}")
    conf = {
        "images": {"root": "photos"},
        "classes": ["cat", "ship"],
        "backbone": {"name": "efficientnet_lite0", "image_size": 64, "batch_size": 4},
    }
    (tmp_path / "al.yaml").write_text(yaml.safe_dump(conf))
    return tmp_path / "al.yaml"


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


def _ingest_on_a_terminal(cfg: Path) -> tuple[int, str, str]:
    """`al ingest` with its stderr on a pseudo terminal: (exit status, what the terminal showed, stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    proc = subprocess.Popen(
        [str(AL), "ingest", "--config", str(cfg)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, shown.decode("utf-8", "replace"), out.decode()


@pytest.mark.slow  # two al ingest processes (15-35 s): make test runs it, make test-fast does not
def test_al_ingest_draws_a_bar_on_a_terminal_and_writes_lines_in_a_pipe(tmp_path):
    cfg = _project(tmp_path)
    rc, term, out = _ingest_on_a_terminal(cfg)
    assert rc == 0, term + out
    bars = BAR.findall(term)
    assert bars and bars[-1][:3] == ("100", "12", "12") and "images/s" in bars[-1][3], term
    assert "\r" in term and "done: 12/12 images (100 %)" in term
    assert "images          12 distinct" in out  # the summary on stdout, untouched

    # the same in a pipe (a log file, a Dagster run's output): lines only, no bar
    shutil.rmtree(tmp_path / "data")
    res = subprocess.run(
        [str(AL), "ingest", "--config", str(cfg)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert not BAR.search(res.stderr) and "\r" not in res.stderr and "%|" not in res.stderr, res.stderr
    assert re.search(r"^done: 12/12 images \(100 %\), 0 failures, [\d.]+ s, [\d.]+ images/s$", res.stderr, re.M)
    assert "images          12 distinct" in res.stdout
