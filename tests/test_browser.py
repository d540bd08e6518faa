"""The Dagster UI in a real browser: after a round, `eval_metrics` shows its learning curve inline (a small SVG)
and its detailed picture in the markdown dialog.

Debian's chromium (`make chromium`) driven by Playwright (never Playwright's own
browser download). The test fails, it does not skip, when the browser cannot
start. Screenshots are kept under test-artifacts/browser/.
"""

import os
import re
import shutil

import dagster as dg

from al_core.catalogue import open_store
from al_core.config import load_config
from tests.conftest import ROOT
from tests.dagster_helpers import DagsterDev, ingest_and_seed_in_process, new_dagster_home
from tests.loop_helpers import answer_batch, execute, make_project, run_requests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LAUNCH_TIMEOUT_MS = 60_000  # chromium start
NAV_TIMEOUT_MS = 60_000  # page loads
UI_TIMEOUT_MS = 30_000  # one element to appear
ARTIFACTS = ROOT / "test-artifacts" / "browser"
LOOP_ASSETS = ("seed_pool", "round_labels", "probe", "eval_metrics", "query_set")
PNG_URI = "data:image/png;base64,"
SVG_URI = "data:image/svg+xml;base64,"


def _prepare_round_1(tmp_path):
    """A small project with round 1 done in process: eval_metrics partition 1 carries its learning curve."""
    cfg_path = make_project(tmp_path, per_class=10, holdout=8)
    cfg = load_config(cfg_path)
    home = new_dagster_home(tmp_path)

    def round_1(defs, instance):
        answer_batch(cfg, open_store(cfg), 0)
        result = run_requests(defs, instance)
        reqs = [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])
        assert [(r.job_name, r.partition_key) for r in reqs] == [("round_job", "1")], reqs
        assert execute(defs, instance, reqs[0]).success

    ingest_and_seed_in_process(cfg, cfg_path, home, then=round_1)
    assert open_store(cfg).fetch("SELECT count(*) FROM metrics WHERE round = 1") == [(1,)]
    return cfg_path, home


def _launch_chromium(pw):
    """Debian's chromium; any failure here fails the test (CI must run it: `make chromium` installs it)."""
    try:
        return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS)
    except Exception as e:
        raise AssertionError(f"chromium could not start ({CHROMIUM}; `make chromium` installs it): {e}") from e


def _check_ui(page, base, shot):
    from playwright.sync_api import expect

    # 1. the asset graph of the round loop: its group's lineage page shows every loop asset
    page.goto(f"{base}/asset-groups", timeout=NAV_TIMEOUT_MS)
    expect(page.get_by_text("labelling_loop", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.goto(f"{base}/locations/al_assets.definitions/asset-groups/labelling_loop", timeout=NAV_TIMEOUT_MS)
    for name in LOOP_ASSETS:
        node = page.get_by_text(name, exact=True)
        expect(node, f"asset {name} not in the graph").to_be_visible(timeout=UI_TIMEOUT_MS)
    # the nodes' live data (partitions, latest event) has arrived
    expect(page.get_by_text(re.compile(r"^Loading")), "asset graph still loading").to_have_count(
        0, timeout=UI_TIMEOUT_MS
    )
    shot("01-asset-graph")

    # 2. eval_metrics: select it in the graph, open it in the catalogue, then partition 1
    page.get_by_text("eval_metrics", exact=True).click()
    page.get_by_role("link", name="View in Asset Catalog").click(timeout=UI_TIMEOUT_MS)
    page.wait_for_url("**/assets/eval_metrics**", timeout=UI_TIMEOUT_MS)
    page.get_by_role("tab", name="Partitions").click(timeout=UI_TIMEOUT_MS)
    page.get_by_title("1", exact=True).first.click(timeout=UI_TIMEOUT_MS)
    page.wait_for_url("**partition=1**", timeout=UI_TIMEOUT_MS)
    row = page.get_by_role("row").filter(has=page.get_by_text("learning_curve", exact=True))
    expect(row, "no learning_curve metadata row").to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("row").filter(has=page.get_by_text("round", exact=True))).to_contain_text("1")
    expect(page.get_by_role("row").filter(has=page.get_by_text("cost_so_far", exact=True))).to_contain_text(
        "no prices set"
    )  # the test project has no cost: section
    shot("02-eval_metrics-partition-1")

    # 3. the learning curve is in the metadata table itself, no click: a loaded SVG data URI image
    img = row.get_by_role("img", name="learning curve")
    expect(img, "no inline learning-curve image").to_be_visible(timeout=UI_TIMEOUT_MS)
    _assert_loaded(page, img, SVG_URI, shot("03-learning-curve-inline"))

    # 4. the detailed curve (labels and cost) renders in the markdown dialog: a loaded PNG data URI image
    detail = page.get_by_role("row").filter(has=page.get_by_text("learning_curve_detail", exact=True))
    detail.get_by_text("Show Markdown").click(timeout=UI_TIMEOUT_MS)
    dialog = page.get_by_role("dialog")
    expect(dialog, "no markdown dialog").to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(dialog).to_contain_text("learning_curve_detail")
    img = dialog.get_by_role("img", name="learning curve against labels and cost")
    expect(img, "no learning-curve image").to_be_visible(timeout=UI_TIMEOUT_MS)
    path = shot("04-learning-curve-detail")
    _assert_loaded(page, img, PNG_URI, path)
    return path


def _assert_loaded(page, img, uri_prefix: str, path: str) -> None:
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle(), timeout=UI_TIMEOUT_MS)
    src, width, height = img.evaluate("e => [e.getAttribute('src'), e.naturalWidth, e.naturalHeight]")
    assert src.startswith(uri_prefix), f"image src is {src[:60]!r}; see {path}"
    assert width > 0 and height > 0, f"image not decoded ({width}x{height}); see {path}"


def test_ui_shows_learning_curve_of_eval_metrics(tmp_path):
    from playwright.sync_api import sync_playwright

    # fail (never skip) at once when the browser is missing, before the minute of set-up
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium"
    cfg_path, home = _prepare_round_1(tmp_path)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with DagsterDev(home, cfg_path, tmp_path / "dagster-dev.log") as dev, sync_playwright() as pw:
        base = dev.base
        browser = _launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.set_default_navigation_timeout(NAV_TIMEOUT_MS)

            def shot(name: str) -> str:
                p = ARTIFACTS / f"{name}.png"
                try:
                    page.screenshot(path=str(p), timeout=UI_TIMEOUT_MS, animations="disabled")
                except Exception as e:
                    return f"{p} (screenshot failed: {e})"
                return str(p)

            try:
                _check_ui(page, base, shot)
            except Exception as e:
                raise AssertionError(
                    f"{e}\nscreenshot at failure: {shot('failure')}\ndagster dev log tail:\n{dev.log_tail(2000)}"
                ) from e
        finally:
            browser.close()
