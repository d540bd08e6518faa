"""How a command says how far its long work is: a tqdm progress bar on a terminal, lines otherwise.

``TerminalProgress(file)`` takes the command's lines (``say``) and the embedding's reports (``embedding``, an
``al_core.ingest.embed.Progress``: done/total, rate, time left). When ``file`` (stderr by default) is a terminal,
the reports move one bar (``embedding:  40%|####      | 480/1200, 12.0 images/s, about 1 min 0 s left``),
redrawn at each report (``interval_s``: every BAR_REFRESH_S), and lines are written above it; in a pipe or a log
file every report is one line, at most every LINE_EVERY_S. The final report is a line in both cases, so a log
keeps the totals.
"""

import io
import os
import sys

from al_core.cli.common import print_safe, terminal_safe
from al_core.ingest.embed import Progress, format_duration

BAR_REFRESH_S = 0.5  # a bar redraw at most this often: one short write to the terminal each
LINE_EVERY_S = 5.0  # a progress line at most this often when the output is no terminal (a pipe, a log file)
COLUMNS_FALLBACK = 80  # the bar's width when the terminal does not say its own (an unsized pseudo terminal)
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"  # tqdm writes ", " before postfix


def _columns(file) -> int:
    """The terminal's width, COLUMNS_FALLBACK when it reports none (tqdm would draw a 0-column bar)."""
    try:
        cols = os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        cols = 0
    return cols or COLUMNS_FALLBACK


class TerminalProgress:
    """A bar on a terminal, lines elsewhere (see the module docstring)."""

    def __init__(self, file=None):
        self.file = sys.stderr if file is None else file
        isatty = getattr(self.file, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.bar = None

    @property
    def interval_s(self) -> float:
        """How often the embedding should report: often enough for a smooth bar, rarely for lines."""
        return BAR_REFRESH_S if self.tty else LINE_EVERY_S

    def say(self, msg: str) -> None:
        """One line (above the bar while one is drawn)."""
        if self.bar is not None:
            self.bar.write(terminal_safe(msg, keep_newlines=True), file=self.file)
        else:
            print_safe(msg, file=self.file, flush=True)

    def embedding(self, p: Progress) -> None:
        """One report of the embedding stream."""
        if not self.tty or not p.total:
            if p.done:
                self.close()
            self.say(str(p))
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=p.total,
                desc="embedding",
                unit="images",
                file=self.file,
                bar_format=BAR_FORMAT,
                mininterval=0,  # the reports come every interval_s already: each one is drawn
                miniters=1,
                ncols=_columns(self.file),
                leave=True,
            )
        left = p.seconds_left
        rate = f"{p.images_per_s:.1f} images/s"
        failed = f", {p.failures} failures" if p.failures else ""
        eta = "" if p.done or left is None else f", about {format_duration(left)} left"
        self.bar.set_postfix_str(rate + failed + eta, refresh=False)
        self.bar.update(p.images + p.failures - self.bar.n)
        if p.done:
            self.close()
            self.say(str(p))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
