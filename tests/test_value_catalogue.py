"""What the labels bought, in the catalogue: costs per annotator and per round on a hand-built delivery set with
known lead times, the views of docs/sql.md, the total budget counting delivered labels, the migration, and the
stop rule stopping the loop when asked to."""

import datetime as _dt

import pytest

from al_core.catalogue import labels as labels_q
from al_core.catalogue import probes as probes_q
from al_core.catalogue import rounds as rounds_q
from al_core.catalogue import value as value_q
from al_core.catalogue.store import SCHEMA_VERSION, Store
from al_core.config import from_dict
from al_core.value.cost import cost_rate_rows

T0 = _dt.datetime(2026, 1, 1, 9, 0, 0)
T1 = T0 + _dt.timedelta(hours=1)
COST = {
    "currency": "EUR",
    "per_label": 0.5,
    "per_hour": 36.0,
    "overhead": 1.25,
    "role_per_hour": {"expert": 72.0},
    "annotator_roles": {"alice": "expert"},
}


def _deliver(con, file_id, received_at, round_, rows, first_label_id, times=None):
    """rows: (image_id, label, annotator, proposed); times: label_id -> (task_id, annotated_at, seconds,
    seconds_source) as a reader delivers them (Label Studio's lead_time, a seconds column)."""
    cols = {c: [] for c in labels_q.LABEL_ROW_COLUMNS}
    for k, (iid, label, annotator, proposed) in enumerate(rows):
        task, at, sec, src = (times or {}).get(first_label_id + k, (None, None, None, None))
        for c, v in (
            ("image_id", iid),
            ("label", label),
            ("is_skip", label == "skip"),
            ("proposed", proposed),
            ("file_sha256", file_id * 4),
            ("file_id", file_id),
            ("annotation_id", None),
            ("annotator", annotator),
            ("line", None),
            ("note", None),
            ("task_id", task),
            ("annotated_at", at),
            ("seconds", sec),
            ("seconds_source", src),
        ):
            cols[c].append(v)
    labels_q.insert_labels(con, cols, 0, len(rows), first_label_id, received_at, round_)


@pytest.fixture()
def deliveries(tmp_path):
    """Batch 0 (i1-i4) proposed at T0; alice answers i1, i2 and skips i3 10 minutes later (Label Studio lead
    times 30, 90, 20 s); bob answers i4 20 minutes later with no time (upper bound: 1,200 s); batch 1 (i5, i6)
    proposed at T1, alice answers it 5 minutes later (a seconds column: 40, 60 s); in the same delivery carol
    labels i9, never proposed, and bob relabels i2 (answering no batch), both with no time. Batch 2 (i7, i8)
    is open and unanswered."""
    cfg = from_dict({"cost": COST, "selection": {"total_budget": 10, "budget_per_round": 4}})
    store = Store(tmp_path / "w.duckdb")
    with store.transaction() as con:
        for r, at, ids in ((0, T0, ["i1", "i2", "i3", "i4"]), (1, T1, ["i5", "i6"]), (2, T1, ["i7", "i8"])):
            rounds_q.insert_round(
                con,
                round_=r,
                kind="seed" if r == 0 else "query",
                strategy="random",
                seed=r,
                budget=len(ids),
                requested_budget=4,
                config_id="c",
                probe_id=None,
                proposed_at=at,
                select_seconds=0.1,
                run_id=None,
                note=None,
            )
            rounds_q.insert_queries(con, r, "random", [(i, f"/img/{i}.jpg", None) for i in ids])
        rounds_q.close_round(con, 0, "answered", T1)
        rounds_q.close_round(con, 1, "answered", T1)
        _deliver(
            con,
            "f1",
            T0 + _dt.timedelta(minutes=10),
            1,
            [("i1", "cat", "alice", True), ("i2", "dog", "alice", True), ("i3", "skip", "alice", True)],
            1,
            {1: ("t1", T0, 30.0, "lead_time"), 2: ("t2", T0, 90.0, "lead_time"), 3: ("t3", T0, 20.0, "lead_time")},
        )
        _deliver(con, "f2", T0 + _dt.timedelta(minutes=20), 1, [("i4", "cat", "bob", True)], 4)
        _deliver(
            con,
            "f3",
            T1 + _dt.timedelta(minutes=5),
            2,
            [
                ("i5", "dog", "alice", True),
                ("i6", "cat", "alice", True),
                ("i9", "dog", "carol", False),
                ("i2", "cat", "bob", True),
            ],
            5,
            {5: (None, None, 40.0, "column"), 6: (None, None, 60.0, "column")},
        )
        value_q.put_cost_rates(con, cost_rate_rows(cfg.cost), T1)
    return cfg, store


# hand computed: cost = 1.25 * (0.5 unless a skip + price per hour * seconds / 3600), alice an expert at 72 / h
ALICE = [
    1.25 * (0.5 + 72 * 30 / 3600),
    1.25 * (0.5 + 72 * 90 / 3600),
    1.25 * (72 * 20 / 3600),
    1.25 * (0.5 + 72 * 40 / 3600),
    1.25 * (0.5 + 72 * 60 / 3600),
]
BOB = 1.25 * (0.5 + 36 * 1200 / 3600)
BOB_RELABEL = CAROL = 1.25 * 0.5  # no time: the per-label price only


def test_label_times_take_the_delivered_time_else_an_upper_bound(deliveries):
    _, store = deliveries
    rows = {
        r[0]: r[1:]
        for r in store.fetch("SELECT label_id, seconds, seconds_source, role, cost FROM label_times ORDER BY label_id")
    }
    assert rows[1][:3] == (30.0, "lead_time", "expert") and rows[3][:2] == (20.0, "lead_time")
    assert rows[4][:3] == (1200.0, "upper_bound", None)  # batch 0 proposed at T0, delivered 20 minutes later
    assert rows[5][:2] == (40.0, "column")
    assert rows[7][:2] == (None, None)  # never proposed: no bound
    assert rows[8][:2] == (None, None)  # a relabel of i2, a batch answered long before: no bound either
    costs = [rows[i][3] for i in (1, 2, 3, 5, 6)]
    assert costs == pytest.approx(ALICE) and rows[4][3] == pytest.approx(BOB) and rows[7][3] == pytest.approx(CAROL)
    assert rows[8][3] == pytest.approx(BOB_RELABEL)


def test_costs_add_up_per_round_and_cumulatively(deliveries):
    _, store = deliveries
    with store.connect(read_only=True, view=False) as con:
        table = {r["round"]: r for r in value_q.round_cost(con).to_dicts()}
        totals = value_q.cost_totals(con)
    r1, r2 = table[1], table[2]
    assert (r1["labels"], r1["skips"], r1["labels_upper_bound"], r1["labels_untimed"]) == (3, 1, 1, 0)
    assert r1["hours"] == pytest.approx((30 + 90 + 20 + 1200) / 3600)
    assert r1["cost"] == pytest.approx(sum(ALICE[:3]) + BOB)
    assert (r2["labels"], r2["skips"], r2["labels_untimed"]) == (4, 0, 2)
    assert r2["cost"] == pytest.approx(sum(ALICE[3:]) + CAROL + BOB_RELABEL)
    assert r2["hours"] == pytest.approx(100 / 3600)
    assert table[0]["cost"] == 0 and table[0]["labels"] == 0
    assert r2["labels_total"] == 7 and r2["skips_total"] == 1
    assert r2["cost_total"] == pytest.approx(sum(ALICE) + BOB + CAROL + BOB_RELABEL)
    assert r2["hours_total"] == pytest.approx(r1["hours"] + r2["hours"]) and r2["currency"] == "EUR"
    assert totals["cost"] == pytest.approx(r2["cost_total"]) and (totals["labels"], totals["skips"]) == (7, 1)


def test_costs_add_up_per_annotator(deliveries):
    _, store = deliveries
    with store.connect(read_only=True, view=False) as con:
        table = {r["annotator"]: r for r in value_q.annotator_value(con).to_dicts()}
    alice, bob, carol = table["alice"], table["bob"], table["carol"]
    assert (alice["labels"], alice["skips"], alice["role"]) == (4, 1, "expert")
    assert alice["share_skipped"] == pytest.approx(0.2) and alice["median_seconds"] == 40.0
    assert alice["hours"] == pytest.approx(240 / 3600) and alice["cost"] == pytest.approx(sum(ALICE))
    assert alice["seconds_sources"] == "column, lead_time"
    assert (bob["labels"], bob["median_seconds"], bob["seconds_sources"]) == (2, 1200.0, "upper_bound")
    assert bob["cost"] == pytest.approx(BOB + BOB_RELABEL) and bob["labels_untimed"] == 1
    assert (carol["labels"], carol["median_seconds"], carol["labels_untimed"]) == (1, None, 1)
    assert sum(r["cost"] for r in table.values()) == pytest.approx(sum(ALICE) + BOB + CAROL + BOB_RELABEL)


def test_round_value_joins_intervals_gain_cost_per_point_and_kappa(deliveries):
    cfg, store = deliveries
    with store.transaction() as con:
        for pid, r, n in (("p1", 1, 3), ("p2", 2, 6)):
            probes_q.insert_probe(
                con,
                probe_id=pid,
                round_=r,
                version=1,
                trigger="round",
                path="/x",
                sha256="x",
                config_id="c",
                n_labels=n,
                n_classes=2,
                seed=r,
                train_seconds=0.1,
                trained_at=T1,
                run_id=None,
            )
        base = {
            "metric": "accuracy",
            "method": "wilson",
            "n_eval": 20,
            "resamples": None,
            "seed": 1,
            "n_paired": 20,
            "computed_at": T1,
        }
        value_q.put_intervals(
            con,
            "p1",
            [
                {
                    **base,
                    "probe_id": "p1",
                    "round": 1,
                    "value": 0.5,
                    "low": 0.3,
                    "high": 0.7,
                    "prev_probe_id": None,
                    "gain": None,
                    "gain_low": None,
                    "gain_high": None,
                }
            ],
        )
        value_q.put_intervals(
            con,
            "p2",
            [
                {
                    **base,
                    "probe_id": "p2",
                    "round": 2,
                    "value": 0.6,
                    "low": 0.39,
                    "high": 0.78,
                    "prev_probe_id": "p1",
                    "gain": 0.1,
                    "gain_low": -0.05,
                    "gain_high": 0.25,
                }
            ],
        )
        value_q.put_stability(con, probe_id="p2", round_=2, prev_probe_id="p1", kappa=0.8, n_stop=30, computed_at=T1)
    with store.connect(read_only=True, view=False) as con:
        rows = value_q.round_value(con, "accuracy").to_dicts()
    assert [(r["round"], r["probe_n_labels"], r["value"]) for r in rows] == [(1, 3, 0.5), (2, 6, 0.6)]
    assert rows[1]["cost_per_point"] == pytest.approx((sum(ALICE[3:]) + CAROL + BOB_RELABEL) / (100 * 0.1))
    assert rows[0]["cost_per_point"] is None and rows[1]["kappa"] == 0.8
    from al_core.value.summary import value_summary

    s = value_summary(store, cfg)
    assert s["now"]["value"] == 0.6 and (s["labels"], s["skips"]) == (7, 1)
    assert s["cost"] == pytest.approx(sum(ALICE) + BOB + CAROL + BOB_RELABEL)
    assert s["cost_per_point"]["value"] == pytest.approx(rows[1]["cost_per_point"])
    assert s["curve"]["status"] == "not enough rounds yet" and s["projection"]["status"] == "no target set"
    with_target = value_summary(store, from_dict({"cost": COST, "target": {"value": 0.9}}))
    assert with_target["projection"]["status"] == "not enough rounds yet"


def test_total_budget_counts_delivered_labels_and_waiting_images_not_skips(deliveries):
    from al_core.loop.proposal import _budget
    from al_core.loop.state import loop_state, stop_reason

    cfg, store = deliveries
    with store.connect(read_only=True, view=False) as con:
        assert rounds_q.budget_used(con) == (7, 1, 2)  # a relabel counts; i7 and i8 wait in the open batch 2
        st = loop_state(con, cfg)
        assert (st.labels_delivered, st.skips_delivered, st.budget_spent, st.stop_reason) == (7, 1, False, None)
        assert st.n_proposed_total == 8  # images proposed: the old count, kept for reference
    assert _budget(cfg, 7 + 2, 100) == (1, 4, "budget clamped from 4 to 1 (total budget ran out)")
    tight = from_dict({"cost": COST, "selection": {"total_budget": 9, "budget_per_round": 4}})
    with store.connect(read_only=True, view=False) as con:
        assert loop_state(con, tight).budget_spent and stop_reason(con, tight) == "total budget spent"


def test_version_2_database_with_labels_migrates_to_the_value_views(tmp_path, monkeypatch):
    import al_core.catalogue.store as S

    db = tmp_path / "old.duckdb"
    monkeypatch.setattr(S, "SCHEMA_VERSION", 2)
    with Store(db).transaction() as con:  # a labels row as version 2 wrote it (no time columns)
        con.execute(
            "INSERT INTO labels (label_id, image_id, label, is_skip, proposed, file_sha256, file_id, "
            "annotator, received_at, round) VALUES (1, 'i1', 'cat', false, false, 'f1f1', 'f1', 'alice', ?, 1)",
            [T0],
        )
    monkeypatch.undo()
    with Store(db).connect() as con:
        cols = {r[0] for r in con.execute("DESCRIBE labels").fetchall()}
        assert {"task_id", "annotated_at", "seconds", "seconds_source"} <= cols
        assert con.execute("SELECT label, seconds, cost FROM label_times").fetchall() == [("cat", None, None)]
        from al_core.catalogue.value_schema import VALUE_MIGRATION

        for ddl in VALUE_MIGRATION[:4]:  # the time columns may come from another migration too: idempotent
            con.execute(ddl)
    assert Store(db).schema_version() == SCHEMA_VERSION


# ----------------------------------------------------------------------------- the loop, in process
@pytest.mark.slow  # make test-fast stays under 2 minutes; make test runs it
def test_stop_when_stable_stops_the_loop_where_the_rule_fires(tmp_path):
    from al_core.loop.state import loop_state, pending_work
    from tests.value_helpers import make_project, run_loop

    cfg, store = make_project(
        tmp_path, extra={"selection": {"stop_when_stable": True, "stop_kappa": 0.3, "stop_window": 2}}
    )
    ms = run_loop(cfg, store, 8)
    kappas = store.fetch("SELECT round, kappa FROM probe_stability ORDER BY round")
    fired = next(
        r
        for i, (r, k) in enumerate(kappas)
        if i >= 1 and k >= 0.3 and kappas[i - 1][1] is not None and kappas[i - 1][1] >= 0.3
    )
    assert [m["round"] for m in ms][-1] == fired and ms[-1]["proposed"] is None
    assert all(m["proposed"] is not None for m in ms[:-1])
    with store.connect(read_only=True, view=False) as con:
        st = loop_state(con, cfg)
        assert st.stop_reason == "predictions stable" and not st.budget_spent
        assert pending_work(con, cfg) is None  # nothing owed: the loop stopped on purpose


def test_the_proposal_records_the_stop_rule_when_it_runs_before_the_evaluation(tmp_path):
    from al_core.loop import ingest_round_labels, propose_round, propose_seed, train_round_probe
    from al_core.loop.annotator import answer_round
    from tests.value_helpers import CONFIG_ID, make_project

    cfg, store = make_project(tmp_path, extra={"selection": {"stop_when_stable": True}})
    propose_seed(store, cfg, CONFIG_ID)
    res = ingest_round_labels(store, cfg, 1, [answer_round(cfg, 0)])
    rec = train_round_probe(store, cfg, 1, CONFIG_ID, batch=res.as_dict())
    assert propose_round(store, cfg, 1, CONFIG_ID, rec.probe_id) is not None
    assert store.fetch("SELECT probe_id, kappa, n_stop FROM probe_stability") == [(rec.probe_id, None, 0)]
    assert store.fetch("SELECT count(*) FROM stop_set") == [(116,)]  # 160 images - 40 held out - 4 answered
    assert store.fetch("SELECT count(*) FROM probe_predictions WHERE subset = 'stop'") == [(116,)]
