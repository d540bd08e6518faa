"""The report's sections, one way for every page part (al_core.reporting.page, .quality, .value_page).

A section is a list of HTML parts, joined by the page with newlines: its heading, its muted intro
(or, for a section with nothing to show yet, the muted note that says so), then its body.
"""

from __future__ import annotations

import html
from collections.abc import Iterable


def escaped(v) -> str:
    """``v`` as HTML text ('' for None)."""
    return html.escape("" if v is None else str(v))


def note(text: str) -> str:
    """A muted paragraph; ``text`` is HTML (its caller escapes what it quotes)."""
    return f'<p class="muted">{text}</p>'


def section(title: str, intro: str | None = None, body: Iterable[str] = ()) -> list[str]:
    """A section's parts: ``<h2>title</h2>``, the muted ``intro`` when given, then ``body``. A section with
    nothing to show yet is ``section(title, "No ... yet.")``. ``title`` and ``intro`` are HTML."""
    return [f"<h2>{title}</h2>", *([] if intro is None else [note(intro)]), *body]
