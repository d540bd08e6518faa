"""The class list over a project's life (issue 12, item 11): a class added mid-project is used from the next round;
a labelled class renamed is refused until `al labels relabel OLD NEW` maps its labels, recorded in the history."""

import json

import numpy as np
import pytest
import yaml

from al_core.cli.exit_codes import Exit
from al_core.config import load_config
from tests.value_helpers import CLASSES, CONFIG_ID, make_project, run_loop


def _set_classes(cfg, classes):
    with open(cfg.source_file) as f:
        conf = yaml.safe_load(f)
    conf["classes"] = list(classes)
    with open(cfg.source_file, "w") as f:
        yaml.safe_dump(conf, f)
    return load_config(cfg.source_file)


def _round(store, cfg, r, *, rename=None):
    """Answer batch r - 1 (ground truth, ``rename`` applied to the delivered class names), ingest, train, evaluate,
    propose: round r. Returns (probe record, metrics)."""
    from al_core.loop import evaluate_round, ingest_round_labels, propose_round, train_round_probe
    from al_core.loop.annotator import answer_round

    path = answer_round(cfg, r - 1)
    if rename:
        lines = path.read_text().splitlines()
        path.write_text(
            "\n".join([lines[0]] + [",".join(rename.get(x, x) for x in ln.split(",")) for ln in lines[1:]]) + "\n"
        )
    res = ingest_round_labels(store, cfg, r, [path])
    files = res.report.files
    assert [f.status for f in files] == ["accepted"], [(f.status, f.reason) for f in files]
    rec = train_round_probe(store, cfg, r, CONFIG_ID, batch=res.as_dict())
    m = evaluate_round(store, cfg, r, CONFIG_ID, rec.probe_id)
    propose_round(store, cfg, r, CONFIG_ID, rec.probe_id)
    return rec, m


def _labels_cli(capsys, *argv):
    from al_core.cli.labels import main

    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# each test runs two rounds of a project (4-7 s): make test runs them, make test-fast does not
pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path):
    cfg, store = make_project(tmp_path, per_class=12, holdout=16, budget=6, total=200)
    run_loop(cfg, store, 2, skip=0.0)
    return cfg, store


def test_a_class_added_after_round_2_is_a_new_output_with_n_a_metrics(project, tmp_path):
    from al_core.loop.evaluation import per_class_summary
    from al_core.loop.train import load_probe
    from al_core.reporting.report import write_report

    cfg, store = project
    ((k_before,),) = store.fetch("SELECT DISTINCT n_classes FROM probes")
    assert k_before == len(CLASSES)
    cfg = _set_classes(cfg, [*CLASSES, "truck"])
    rec, m = _round(store, cfg, 3)

    assert rec.n_classes == len(CLASSES) + 1
    probe = load_probe(store, rec.probe_id)
    features = store.load_embeddings(CONFIG_ID).features[:3]
    assert probe.predict_proba(features).shape == (3, len(CLASSES) + 1)  # the probe got the new output
    ((recorded,),) = store.fetch("SELECT classes FROM probes WHERE probe_id = ?", [rec.probe_id])
    assert json.loads(recorded) == [*CLASSES, "truck"]  # the round records the class list it used
    old = store.fetch("SELECT classes FROM probes WHERE round < 3")
    assert {tuple(json.loads(c)) for (c,) in old} == {CLASSES}  # earlier rounds keep theirs

    counts = m["per_class_n_eval"]
    assert counts["truck"] == 0 and all(counts[c] > 0 for c in CLASSES) and sum(counts.values()) == m["n_eval"]
    assert m["per_class_recall"]["truck"] is None
    assert all(0.0 <= m["per_class_recall"][c] <= 1.0 for c in CLASSES)
    summary = per_class_summary(m)
    assert summary["truck"] == "n/a (no evaluation image)"
    assert summary["cat"].endswith(f" on {counts['cat']} evaluation images")
    ((stored,),) = store.fetch("SELECT per_class_n_eval FROM metrics WHERE probe_id = ?", [rec.probe_id])
    assert json.loads(stored) == counts
    # macro F1 counts the classes labelled or predicted: the new class, neither, does not pull it down as a 0
    cm = np.array(m["confusion"])
    assert cm.shape == (5, 5) and cm[4].sum() == 0
    tp, true, predicted = np.diag(cm).astype(float), cm.sum(axis=1), cm.sum(axis=0)
    in_play = (true > 0) | (predicted > 0)
    assert m["macro_f1"] == pytest.approx(float((2 * tp[in_play] / (true + predicted)[in_play]).mean()))

    html = write_report(store, cfg, tmp_path / "report.html").read_text()
    assert "<th>evaluation images</th>" in html
    assert '<td class="l">truck</td><td>0</td><td>n/a (no evaluation image)</td>' in html
    assert f'<td class="l">cat</td><td>{counts["cat"]}</td>' in html


def test_a_renamed_class_is_refused_until_relabel_maps_it_and_lineage_shows_it(project, capsys):
    from al_core.cli.audit import lineage_main
    from al_core.loop import ClassListChanged, ValidationUnavailable, train_round_probe, validation_inputs
    from al_core.loop.pool import load_project_pool

    cfg, store = project
    n_cat = store.fetch("SELECT count(*) FROM labels WHERE label = 'cat'")[0][0]
    n_rows = store.fetch("SELECT count(*) FROM labels")[0][0]
    assert n_cat > 0
    renamed = [c if c != "cat" else "kitty" for c in CLASSES]
    cfg = _set_classes(cfg, renamed)
    expected = "`al labels relabel cat kitty`"  # the one listed class without labels: the rename is guessed

    with pytest.raises(ClassListChanged) as e:  # the sensor, the round run and `al labels check`
        validation_inputs(cfg, store)
    msg = str(e.value)
    assert isinstance(e.value, ValidationUnavailable) and "\n" not in msg
    assert msg.startswith("class 'cat' has labels (") and "no longer in the project file's `classes`" in msg
    assert msg.endswith(expected)
    with pytest.raises(ClassListChanged, match=expected):  # the probe's step
        load_project_pool(store, cfg, CONFIG_ID)
    with pytest.raises(ClassListChanged, match=expected):
        train_round_probe(store, cfg, 3, CONFIG_ID, trigger="manual")
    check_file = cfg.inbox / "check.csv"
    iid = store.fetch("SELECT image_id FROM image_labels WHERE label = 'bird' LIMIT 1")[0][0]
    check_file.parent.mkdir(parents=True, exist_ok=True)
    check_file.write_text(f"image_id,label\n{iid},bird\n")
    rc, out, err = _labels_cli(capsys, "check", str(check_file), "--config", cfg.source_file)
    assert rc == Exit.USAGE and expected in err and "Traceback" not in err + out
    check_file.unlink()
    assert store.fetch("SELECT count(*) FROM probes WHERE round >= 3")[0][0] == 0  # nothing trained meanwhile

    # relabel refuses an unknown OLD and a NEW outside the class list, changing nothing
    for old, new, why in (
        ("dog", "kitty", "no label uses class 'dog'"),
        ("cat", "tiger", "'tiger' is not in the project file's `classes`"),
    ):
        rc, out, err = _labels_cli(capsys, "relabel", old, new, "--config", cfg.source_file)
        assert rc == Exit.FAILED and why in err and "Traceback" not in err + out, (rc, out, err)
    assert store.fetch("SELECT count(*) FROM class_relabels")[0][0] == 0

    n_eval_cat = store.fetch("SELECT count(*) FROM eval_set WHERE label = 'cat'")[0][0]
    assert n_eval_cat > 0
    rc, out, err = _labels_cli(capsys, "relabel", "cat", "kitty", "--config", cfg.source_file)
    assert rc == Exit.OK, err
    assert f"{n_cat} label(s) and {n_eval_cat} evaluation label(s) mapped" in out
    # the history keeps what was delivered: no labels row changed or deleted, the mapping is recorded
    assert store.fetch("SELECT count(*), count(*) FILTER (WHERE label = 'cat') FROM labels") == [(n_rows, n_cat)]
    assert store.fetch("SELECT old, new, n_labels, n_eval FROM class_relabels") == [("cat", "kitty", n_cat, n_eval_cat)]
    assert store.fetch("SELECT count(*) FROM relabelled_rows WHERE eval_image_id IS NOT NULL AND old = 'cat'") == [
        (n_eval_cat,)
    ]
    assert store.fetch("SELECT count(*) FROM image_labels WHERE label = 'cat'") == [(0,)]
    assert store.fetch("SELECT count(*) FROM eval_set WHERE label IN ('cat', 'kitty')") == [(n_eval_cat,)]
    assert store.fetch("SELECT count(*) FROM eval_set WHERE label = 'cat'") == [(0,)]
    assert store.fetch("SELECT count(*) FROM image_labels WHERE label = 'kitty'")[0][0] > 0
    validation_inputs(cfg, store)  # accepted now

    rec, m = _round(store, cfg, 3, rename={"cat": "kitty"})  # the round runs, the annotators use the new name
    pool = load_project_pool(store, cfg, CONFIG_ID)
    assert rec.n_classes == len(CLASSES) and pool.classes == tuple(renamed)
    trained = {int(i) for (i,) in store.fetch("SELECT label_id FROM probe_labels WHERE probe_id = ?", [rec.probe_id])}
    cat_rows = {int(i) for (i,) in store.fetch("SELECT label_id FROM labels WHERE label = 'cat'")}
    assert cat_rows and cat_rows <= trained  # the relabelled labels train the probe as 'kitty'
    assert m["per_class_n_eval"]["kitty"] == n_eval_cat and m["per_class_recall"]["kitty"] is not None

    # lineage shows the relabel
    image, label_id = store.fetch(
        "SELECT image_id, min(label_id) FROM labels WHERE label = 'cat' GROUP BY 1 ORDER BY 1 LIMIT 1"
    )[0]
    capsys.readouterr()
    assert lineage_main([image, "--config", cfg.source_file]) == 0
    text = capsys.readouterr().out
    assert f"label #{label_id:<6} 'kitty'" in text
    assert "RELABEL       'cat' -> 'kitty' at " in text and f"#{label_id}" in text.split("RELABEL", 1)[1]
    assert lineage_main([image, "--json", "--config", cfg.source_file]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [(r["old"], r["new"], label_id in r["label_ids"]) for r in d["relabels"]] == [("cat", "kitty", True)]
