"""The label history (al_core.catalogue.label_views, al_core.loop.label_history): several annotators per image,
the label policies, skips, adjudication, disagreements that are never dropped, time spent per label, and the
proposal honouring the adjudication queue. Store-level, no Dagster."""

import datetime as _dt
import json
import shutil

import numpy as np
import pytest

import al_core.loop as R
from al_core.catalogue import labels as labels_q
from al_core.catalogue import open_store
from al_core.catalogue import rounds as rounds_q
from al_core.catalogue.label_views import DEFAULT_POLICY
from al_core.config import from_dict
from al_core.config.schema import LABEL_POLICIES, LabelsConfig
from al_core.ingest.scan import scan
from tests.conftest import SAMPLE_ROOT

CLASSES = ["airplane", "cat", "frog", "ship"]
PER_CLASS = 6
CONFIG_ID = "fake-8d"


def _conf(**labels) -> dict:
    return {
        "images": {"root": "images"},
        "classes": CLASSES,
        "selection": {
            "seed_strategy": "random",
            "query_strategy": "margin",
            "budget_per_round": 6,
            "total_budget": 24,
            "answered_fraction": 1.0,
            "seed": 0,
        },
        "evaluation": {"holdout": 0, "labels_from_ground_truth": True},
        "labels": labels,
        "store": {"lock_timeout_s": 2},
    }


@pytest.fixture()
def make(tmp_path):
    """A project of 24 sample images, scanned, with fake 8-d embeddings that separate the classes."""
    n = [0]

    def _make(**labels):
        n[0] += 1
        tmp = tmp_path / f"proj{n[0]}"
        for c in CLASSES:
            (tmp / "images" / c).mkdir(parents=True)
            for f in sorted((SAMPLE_ROOT / c).iterdir())[:PER_CLASS]:
                shutil.copy(f, tmp / "images" / c / f.name)
        cfg = from_dict(_conf(**labels), base_dir=tmp)
        store = open_store(cfg)
        scan(store, root=cfg.image_root)
        truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
        ids = sorted(truth)
        vecs = np.random.default_rng(0).normal(0, 0.3, (len(ids), 8)).astype(np.float32)
        for k, iid in enumerate(ids):
            vecs[k, CLASSES.index(truth[iid])] += 3.0
        store.register_embedding_config(CONFIG_ID, {"backbone": "fake", "dim": 8})
        store.write_embeddings(CONFIG_ID, ids, vecs)
        return cfg, store, truth

    return _make


def deliver(cfg, store, round_, name, rows, header="image_id,label,annotator"):
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    p = cfg.inbox / name
    p.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return R.ingest_label_files(store, cfg, [p], round_=round_)


def seed(cfg, store):
    pool = R.load_pool(store, cfg, CONFIG_ID, CLASSES)
    return R.propose(store, cfg, 0, pool)


def next_round(cfg, store, r):
    """Close batch r-1, train probe r, propose batch r (what a round run does)."""
    R.close_round(store, r - 1, "answered")
    pool = R.load_pool(store, cfg, CONFIG_ID, CLASSES)
    probe, rec = R.train_probe(store, cfg, r, pool)
    return R.propose(store, cfg, r, pool, probe=probe, probe_id=rec.probe_id), pool


def image_label(store, iid):
    with store.connect(read_only=True) as con:
        return labels_q.image_label(con, iid)


def test_default_policy_is_the_schema_default():
    assert DEFAULT_POLICY == LabelsConfig().policy == "latest" and set(LABEL_POLICIES) == {
        "latest",
        "majority",
        "unanimous",
    }
    with pytest.raises(Exception, match="did you mean 'majority'"):
        from_dict({"labels": {"policy": "majorty"}})


@pytest.mark.parametrize(
    "policy, expected",
    [("latest", ("labelled", "frog")), ("majority", ("labelled", "cat")), ("unanimous", ("disputed", None))],
)
def test_several_annotators_all_kept_and_the_policy_decides(make, policy, expected):
    cfg, store, truth = make(policy=policy)
    b0 = seed(cfg, store)
    a, b = b0.image_ids[:2]
    # three annotators on image a (two say cat), two agreeing on b, one file per annotator
    deliver(cfg, store, 1, "ann1.csv", [(a, "cat", "ann1"), (b, "ship", "ann1")])
    deliver(cfg, store, 1, "ann2.csv", [(a, "cat", "ann2"), (b, "ship", "ann2")])
    rep = deliver(cfg, store, 1, "ann3.csv", [(a, "frog", "ann3")])
    assert store.fetch("SELECT count(*) FROM labels WHERE image_id = ?", [a]) == [(3,)]  # every answer kept
    got = image_label(store, a)
    assert (got["status"], got["label"], got["policy"], got["disagreement"]) == (*expected, policy, True)
    assert [(x["annotator"], x["label"]) for x in got["answers"]] == [
        ("ann1", "cat"),
        ("ann2", "cat"),
        ("ann3", "frog"),
    ]
    assert image_label(store, b)["label"] == "ship" and not image_label(store, b)["disagreement"]
    # the disagreement is in the SQL view, in the round's report, in round_summary and in the lineage
    with store.connect(read_only=True) as con:
        [dis] = labels_q.disagreements(con)
    assert dis["image_id"] == a and dis["classes"] == ["cat", "frog"] and dis["n_annotators"] == 3
    assert rep.labelling["disagreements"] == 1 and rep.labelling["new_disagreements"] == 1
    assert rep.labelling["disputed"] == (policy == "unanimous")
    assert store.fetch("SELECT disagreements_so_far FROM round_summary WHERE round = 1") == [(1,)]
    from al_core.cli.audit import format_lineage
    from al_core.reporting.audit import lineage

    text = format_lineage(lineage(store, a))
    assert "DISAGREEMENT" in text and "ann1 'cat'" in text and "ann3 'frog'" in text
    # the pool trains on the policy's label only
    pool = R.load_pool(store, cfg, CONFIG_ID, CLASSES)
    trained = dict(zip(pool.image_ids[pool.labeled], np.asarray(CLASSES)[pool.labels], strict=True))
    assert trained.get(a) == expected[1] and trained[b] == "ship"


def test_majority_tie_goes_to_the_latest_answer(make):
    cfg, store, _ = make(policy="majority")
    a = seed(cfg, store).image_ids[0]
    deliver(cfg, store, 1, "x.csv", [(a, "cat", "ann1"), (a, "frog", "ann2")])
    assert image_label(store, a)["label"] == "frog"  # one vote each: the later row
    deliver(cfg, store, 1, "y.csv", [(a, "cat", "ann3")])
    assert image_label(store, a)["label"] == "cat"


def test_an_annotators_later_answer_replaces_their_earlier_one(make):
    cfg, store, _ = make(policy="unanimous")
    a = seed(cfg, store).image_ids[0]
    deliver(cfg, store, 1, "first.csv", [(a, "cat", "ann1")])
    deliver(cfg, store, 1, "second.csv", [(a, "frog", "ann1"), (a, "frog", "ann2")])
    got = image_label(store, a)
    assert (got["status"], got["label"], got["disagreement"], got["n_answers"]) == ("labelled", "frog", False, 2)
    states = store.fetch(
        "SELECT label, state, superseded_because FROM answers WHERE image_id = ? ORDER BY label_id", [a]
    )
    assert states == [
        ("cat", "superseded", "a later answer by the same annotator"),
        ("frog", "current", None),
        ("frog", "current", None),
    ]
    # the same answer delivered again adds nothing
    rep = deliver(cfg, store, 1, "again.csv", [(a, "frog", "ann1")])
    assert rep.files[0].n_applied == 0 and rep.files[0].n_repeats == 1


def test_unanimous_disagreement_is_queued_for_adjudication_and_resolved_there(make):
    cfg, store, truth = make(policy="unanimous")
    b0 = seed(cfg, store)
    a = b0.image_ids[0]
    other = [(i, truth[i], "ann1") for i in b0.image_ids[1:]]
    rep = deliver(cfg, store, 1, "r1.csv", [(a, "cat", "ann1"), (a, "frog", "ann2"), *other])
    assert rep.ready and rep.answered == rep.proposed == 6  # the disputed image is answered: the loop goes on
    assert rep.labelling["batch"]["disputed"] == 1 and rep.labelling["adjudication_queued"] == 1
    assert image_label(store, a)["status"] == "disputed" and image_label(store, a)["label"] is None
    with store.connect(read_only=True) as con:
        assert labels_q.adjudication_queue(con) == [a]
    b1, _ = next_round(cfg, store, 1)
    assert b1.image_ids[0] == a and b1.n_adjudication == 1  # proposed again first
    row = store.fetch("SELECT rank, strategy, score FROM queries WHERE round = 1 AND image_id = ?", [a])
    assert row == [(1, "adjudication", None)]
    with store.connect(read_only=True) as con:
        assert labels_q.adjudication_queue(con) == []  # in an open batch now
        assert rounds_q.proposal_problems(con, 1)["already_labelled_or_skipped"] == 0  # the asset check passes
    lines = (cfg.outbox / "round-0001.csv").read_text().splitlines()
    assert lines[1].split(",")[4] == "adjudication"
    tasks = json.loads((cfg.outbox / "round-0001.label-studio.json").read_text())
    assert tasks[0]["data"]["strategy"] == "adjudication"
    # the adjudicator's answer to the new batch decides; the earlier answers stay in the history
    deliver(cfg, store, 2, "r2.csv", [(a, "frog", "judge")])
    got = image_label(store, a)
    assert (got["status"], got["label"], got["answers_round"]) == ("labelled", "frog", 1)
    assert store.fetch(
        "SELECT state, superseded_because FROM answers WHERE image_id = ? AND annotator = 'ann1'", [a]
    ) == [("superseded", "the image was proposed again and answered")]
    with store.connect(read_only=True) as con:
        [dis] = labels_q.disagreements(con, a)
    assert dis["answers_round"] == 0 and not dis["is_current"] and dis["resolution"] == "proposed again and answered"


def test_skips_are_answers_and_may_come_back(make):
    for again in (False, True):
        cfg, store, truth = make(propose_skipped_again=again)
        b0 = seed(cfg, store)
        skipped, missing = b0.image_ids[0], b0.image_ids[1]
        rows = [(skipped, "skip", "ann1")] + [(i, truth[i], "ann1") for i in b0.image_ids[2:]]
        rep = deliver(cfg, store, 1, "r1.csv", rows)
        assert (rep.answered, rep.proposed) == (5, 6) and not rep.ready  # the skip counts, one is missing
        batch = rep.labelling["batch"]
        assert batch["skipped"] == 1 and [m["image_id"] for m in batch["unanswered"]] == [missing]
        assert image_label(store, skipped)["status"] == "skipped"
        R.close_round(store, 0, "manual")
        pool = R.load_pool(store, cfg, CONFIG_ID, CLASSES)
        cands = {str(pool.image_ids[i]) for i in pool.candidates}
        assert missing in cands  # never answered, its batch closed: a candidate again
        assert (skipped in cands) is again
        assert skipped not in set(pool.image_ids[pool.labeled])


def test_time_spent_per_label(make):
    cfg, store, truth = make()
    b0 = seed(cfg, store)
    a, b, c, d = b0.image_ids[:4]
    deliver(cfg, store, 1, "timed.csv", [(a, truth[a], "ann1", "12.5")], header="image_id,label,annotator,seconds")
    deliver(cfg, store, 1, "plain.csv", [(b, truth[b], "ann1")])
    deliver(cfg, store, 1, "pair.csv", [(c, truth[c], "ann1"), (d, truth[d], "ann1")])
    never = next(i for i in sorted(truth) if i not in b0.image_ids)
    deliver(cfg, store, 1, "never.csv", [(never, truth[never], "ann1")])
    got = dict((r[0], r[1:]) for r in store.fetch("SELECT image_id, seconds, seconds_source FROM labels"))
    assert got[a] == (12.5, "column")
    proposed_at, received_at = store.fetch(
        "SELECT r.proposed_at, l.received_at FROM labels l, rounds r WHERE r.round = 0 AND l.image_id = ?", [b]
    )[0]
    assert got[b] == (pytest.approx((received_at - proposed_at).total_seconds()), "upper_bound")
    assert got[b][0] >= 0 and got[never] == (None, None)  # never proposed: no bound
    pair_at = store.fetch("SELECT received_at FROM labels WHERE image_id = ?", [c])[0][0]
    share = (pair_at - proposed_at).total_seconds() / 2  # one delivery's two answers share its interval
    assert got[c] == got[d] == (pytest.approx(share), "upper_bound")
    assert store.fetch("SELECT seconds FROM label_times WHERE image_id = ?", [c])[0][0] == pytest.approx(share)


def test_label_studio_ids_resolve_to_emails_and_a_later_file_fixes_earlier_rows(make):
    cfg, store, truth = make()
    a = seed(cfg, store).image_ids[0]

    def ls(name, by):
        task = {
            "id": 1,
            "data": {"image_id": a},
            "annotations": [
                {
                    "id": 5,
                    "completed_by": by,
                    "created_at": "2026-01-01T00:00:00Z",
                    "updated_at": "2026-01-01T00:00:00Z",
                    "lead_time": 3.0,
                    "was_cancelled": False,
                    "result": [{"type": "choices", "value": {"choices": [truth[a]]}}],
                }
            ],
        }
        (cfg.inbox / name).write_text(json.dumps([task]))
        return R.ingest_label_files(store, cfg, [cfg.inbox / name], round_=1)

    cfg.inbox.mkdir(parents=True, exist_ok=True)
    ls("ids.json", 7)
    assert store.fetch("SELECT annotator, seconds, seconds_source, task_id, annotated_at FROM answers") == [
        ("7", 3.0, "lead_time", "1", _dt.datetime(2026, 1, 1))
    ]
    rep = ls("emails.json", {"id": 7, "email": "eve@example.org"})
    # the same annotation through a file that names the user: the email is learnt, nothing is doubled
    assert rep.files[0].n_applied == 0 and rep.files[0].n_repeats == 1
    assert store.fetch("SELECT annotator, annotator_as_delivered FROM answers") == [("eve@example.org", "7")]
    with store.connect(read_only=True) as con:
        assert labels_q.annotator_emails(con) == {"7": "eve@example.org"}


def test_proposal_writes_prelabels_and_urls_under_the_document_root(make):
    cfg, store, truth = make()
    b0 = seed(cfg, store)
    deliver(cfg, store, 1, "r1.csv", [(i, truth[i], "ann1") for i in b0.image_ids])
    b1, _ = next_round(cfg, store, 1)
    rows = store.fetch("SELECT image_id, predicted, predicted_score FROM queries WHERE round = 1 ORDER BY rank")
    assert len(rows) == 6 and all(p in CLASSES and 0 < s <= 1 for _, p, s in rows)
    tasks = json.loads((cfg.outbox / "round-0001.label-studio.json").read_text())
    probe_id = store.fetch("SELECT probe_id FROM rounds WHERE round = 1")[0][0]
    for t, (iid, predicted, score) in zip(tasks, rows, strict=True):
        assert t["data"]["image_id"] == iid and t["data"]["task_key"] == f"round-0001/{iid}"
        assert t["data"]["image"] == "/data/local-files/?d=" + t["data"]["path"]
        assert t["data"]["path"].startswith("images/")  # relative to images.root's parent
        [pred] = t["predictions"]
        assert (pred["model_version"], pred["score"]) == (probe_id, pytest.approx(score))
        assert pred["result"][0]["value"]["choices"] == [predicted]
    seed_tasks = json.loads((cfg.outbox / "round-0000.label-studio.json").read_text())
    assert all("predictions" not in t for t in seed_tasks)  # no probe for the seed pool
    # the outbox written again from the catalogue (repair) is the same
    (cfg.outbox / "round-0001.csv").unlink()
    before = (cfg.outbox / "round-0001.label-studio.json").read_text()
    assert R.repair_outbox(store, cfg, CLASSES) == [str(cfg.outbox / "round-0001.csv")]
    assert (cfg.outbox / "round-0001.label-studio.json").read_text() == before


def test_blind_labelling_writes_no_prelabels(make, tmp_path):
    cfg, store, truth = make()
    cfg = from_dict({**_conf(), "label_studio": {"prelabels": False}}, base_dir=cfg.base_dir)
    b0 = seed(cfg, store)
    deliver(cfg, store, 1, "r1.csv", [(i, truth[i], "ann1") for i in b0.image_ids])
    next_round(cfg, store, 1)
    tasks = json.loads((cfg.outbox / "round-0001.label-studio.json").read_text())
    assert tasks and all("predictions" not in t for t in tasks)
    assert store.fetch("SELECT count(*) FROM queries WHERE round = 1 AND predicted IS NOT NULL") == [(0,)]


def test_images_outside_the_document_root_are_proposed_with_a_warning(make, tmp_path):
    cfg, store, _ = make()
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(Exception, match="must contain images.root"):
        from_dict({**_conf(), "label_studio": {"document_root": str(elsewhere)}}, base_dir=cfg.base_dir)
    # images.root moved to another folder, the catalogue's images still where they were: outside the document root
    moved = from_dict({**_conf(), "images": {"root": str(elsewhere / "images")}}, base_dir=cfg.base_dir)
    assert moved.document_root == elsewhere
    b0 = seed(moved, store)  # the batch and its CSV never depend on Label Studio: proposed, and it says why
    assert len(b0.image_ids) == 6 and "6 image(s) outside label_studio.document_root" in b0.warnings[0]
    tasks = json.loads((moved.outbox / "round-0000.label-studio.json").read_text())
    files = {str(p) for p in cfg.image_root.rglob("*")}
    assert all("/" + t["data"]["path"] in files for t in tasks)  # relative to /


def test_round_summary_counts_equal_the_label_definition_as_of_each_round(make):
    # round_summary sums the changes of each image's state; image_labels_at(r) evaluates round r alone: the same
    cfg, store, truth = make(policy="unanimous")
    b0 = seed(cfg, store)
    a, b, c = b0.image_ids[:3]
    deliver(
        cfg,
        store,
        1,
        "r1.csv",
        [
            (a, "cat", "ann1"),
            (a, "frog", "ann2"),
            (b, "skip", "ann1"),
            *[(i, truth[i], "ann1") for i in b0.image_ids[2:]],
        ],
    )
    next_round(cfg, store, 1)
    other = next(x for x in CLASSES if x != truth[c])  # ann2 disagrees with ann1 on c, answers b (ann1 skipped)
    bad = deliver(cfg, store, 2, "r2.csv", [(c, other, "ann2"), (b, "cat", "ann2")])
    with store.transaction() as con:  # what `al labels retract` records: from round 3 on
        con.execute(
            "INSERT INTO retractions (file_sha256, retracted_at, reason, effective_round) VALUES (?, now(), 'x', 3)",
            [bad.files[0].sha256],
        )
    next_round(cfg, store, 2)
    deliver(cfg, store, 3, "r3.csv", [(a, "frog", "judge")])
    rows = store.fetch(
        "SELECT round, labels_so_far, skips_so_far, disputed_so_far, disagreements_so_far "
        "FROM round_summary ORDER BY round"
    )
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    for r, *counts in rows:
        direct = store.fetch(
            """SELECT count(*) FILTER (WHERE status = 'labelled'), count(*) FILTER (WHERE status = 'skipped'),
                      count(*) FILTER (WHERE status = 'disputed'), count(*) FILTER (WHERE disagreement)
               FROM image_labels_at(?)""",
            [r],
        )[0]
        assert tuple(counts) == direct, r
    # round 1: a disputed, b skipped; round 2: c disputed too, b labelled; round 3: the round-2 file retracted
    # (c and b as in round 1) and a adjudicated
    assert rows[1][1:] == (4, 1, 1, 1) and rows[2][1:] == (4, 0, 2, 2) and rows[3][1:] == (5, 1, 0, 0)
