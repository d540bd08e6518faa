"""The manager's page holds the catalogue's numbers: the report's first screen, parsed from the HTML, against the
SQL views of docs/sql.md; the same numbers in `al status` and in the metadata of ``eval_metrics``."""

import base64
import json
import re
from html.parser import HTMLParser

import duckdb
import pytest

from al_core.value.stopping import first_firing
from tests.value_helpers import make_project, run_loop


class _Numbers(HTMLParser):
    """data-key -> data-value of the elements inside the first <section id="manager">, and where it ends."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}
        self.depth = 0
        self.section_closed_at = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id") == "manager":
            self.depth = 1
        elif self.depth and tag == "section":
            self.depth += 1
        if self.depth and "data-key" in a:
            self.values[a["data-key"]] = a.get("data-value", "")

    def handle_endtag(self, tag):
        if self.depth and tag == "section":
            self.depth -= 1
            if self.depth == 0 and self.section_closed_at is None:
                self.section_closed_at = self.getpos()


def _num(v: str):
    return None if v == "" else float(v)


# the module's fixture simulates a whole project (about 11 s): make test runs it, make test-fast does not
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("value-report")
    cfg, store = make_project(tmp)
    run_loop(cfg, store, 7, skip=0.15)
    return cfg, store


def test_the_first_screen_holds_the_numbers_of_the_sql_views(project):
    from al_core.reporting.report import write_report

    cfg, store = project
    text = write_report(store, cfg).read_text(encoding="utf-8")
    assert text.index('id="manager"') < text.index("<h2>Summary</h2>")  # the manager's page comes first
    p = _Numbers()
    p.feed(text)
    v = p.values
    con = duckdb.connect(str(store.db_path), read_only=True)
    try:
        rv = con.execute(
            "SELECT round, probe_n_labels, value, low, high, cost, cost_total, labels_total, skips_total,"
            " hours_total FROM round_value WHERE metric = 'accuracy' ORDER BY round"
        ).fetchall()
        last_cost = con.execute(
            "SELECT labels_total, skips_total, cost_total, hours_total FROM round_cost ORDER BY round DESC LIMIT 1"
        ).fetchone()
        waiting = con.execute("""SELECT count(*) FROM queries q JOIN rounds r USING (round)
                                 WHERE r.status = 'open' AND q.image_id NOT IN (SELECT image_id FROM current_labels)
                              """).fetchone()[0]
        delivered = con.execute("SELECT count(*) FILTER (WHERE NOT is_skip) FROM labels").fetchone()[0]
        kappas = [k for (k,) in con.execute("SELECT kappa FROM probe_stability ORDER BY round").fetchall()]
    finally:
        con.close()
    rnd, n, value, low, high, *_ = rv[-1]
    assert len(rv) == 7
    assert _num(v["metric_now"]) == pytest.approx(value) and _num(v["metric_low"]) == pytest.approx(low)
    assert _num(v["metric_high"]) == pytest.approx(high)
    assert int(v["round_now"]) == rnd and int(v["training_labels"]) == n
    assert int(v["labels"]) == last_cost[0] == delivered and int(v["skips"]) == last_cost[1]
    assert _num(v["cost"]) == pytest.approx(last_cost[2]) and _num(v["hours"]) == pytest.approx(last_cost[3])
    assert int(v["budget_left"]) == cfg.selection.total_budget - delivered - waiting
    gain = rv[-1][2] - rv[-4][2]  # the last three rounds
    cost = sum(r[5] for r in rv[-3:])
    assert _num(v["cost_per_point"]) == (pytest.approx(cost / (100 * gain)) if gain > 0 else None)
    fired = first_firing(kappas, cfg.selection.stop_kappa, cfg.selection.stop_window)
    assert int(v["stop"]) == int(fired is not None)
    assert v["more_labels"] != "" or "not reachable" in text or "not enough" in text
    assert p.section_closed_at is not None


def test_status_and_eval_metrics_metadata_carry_the_same_numbers(project, capsys):
    from al_core.cli.status import main
    from al_core.reporting.value_metadata import INLINE_MD_MAX_CHARS, value_metadata
    from al_core.value.summary import value_summary

    cfg, store = project
    s = value_summary(store, cfg)
    assert main(["--config", cfg.source_file, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["value"]
    assert out["summary"]["cost"] == pytest.approx(s["cost"]) and out["summary"]["labels"] == s["labels"]
    assert out["summary"]["projection"] == s["projection"]
    assert main(["--config", cfg.source_file]) == 0
    text = capsys.readouterr().out
    assert "what the labels bought" in text and f"{s['cost']:,.2f} EUR" in text and "projection" in text

    md = value_metadata(store, cfg)
    assert {kind for kind, _ in md.values()} == {"md", "text"}  # nothing numeric: the UI plots only the metrics
    kind, curve = md["learning_curve"]
    assert kind == "md" and len(curve) <= INLINE_MD_MAX_CHARS < 1000  # shown inline by the UI
    svg = base64.b64decode(re.fullmatch(r"!\[learning curve\]\(data:image/svg\+xml;base64,(.+)\)", curve).group(1))
    from xml.etree import ElementTree

    root = ElementTree.fromstring(svg)
    assert root.tag.endswith("svg") and len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    assert md["learning_curve_detail"][1].startswith("![learning curve against labels and cost](data:image/png")
    assert md["cost_so_far"] == ("text", f"{s['cost']:,.2f} EUR")
    assert md["metric_now"][1].startswith(f"Accuracy {100 * s['now']['value']:.1f} %")
