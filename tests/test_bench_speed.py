"""`al bench probe` and `al bench skactiveml_compare` at a small size: they run, alternate the sides
and carry the documented keys."""

import json

import numpy as np
import pytest


@pytest.mark.slow  # fresh child processes (torch imports): about 30 s on the shared build machine
def test_bench_probe_small(tmp_path):
    from al_core.bench import probe as bench_probe

    out = tmp_path / "probe.json"
    assert bench_probe.main(["--sizes", "60x8x3", "--repeats", "2", "--warm", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    entry = data["sizes"]["60x8x3"]
    for side in ("al_core", "reference"):
        assert len(entry[side]) == 2
        for run in entry[side]:
            assert run["status"] == "ok" and run["epochs"] >= 1 and run["first_fit_seconds"] > 0
            assert run["import_seconds"] > 0 and len(run["warm_all"]) == 1 and run["load_1m_before"] >= 0
    assert set(entry["ratio"]) == {"first_fit_seconds", "warm_seconds", "ms_per_epoch", "import_seconds"}


def test_reference_fit_trains_the_specified_probe():
    """The benchmark's plain torch loop is a fair reference: same early stopping, similar loss."""
    from al_core.bench.probe import clustered, reference_fit
    from al_core.learn.probe import Probe

    x, y = clustered(300, 16, 4, seed=0)
    epochs = reference_fit(x, y, 4, seed=0)
    ours = Probe(4, seed=0).fit(x, y)
    assert 21 <= epochs <= 400 and 21 <= ours.n_epochs_ <= 400  # patience 20: at least 21 epochs
    assert (ours.predict(x) == y).mean() > 0.9


@pytest.mark.slow  # fresh child processes (torch and scikit-learn imports): about 30 s
def test_bench_skactiveml_compare_small(tmp_path):
    from al_core.bench import skactiveml_compare

    out = tmp_path / "sk.json"
    rc = skactiveml_compare.main(
        [
            "--synthetic",
            "16x4",
            "--n",
            "600",
            "--labeled",
            "40",
            "--budget",
            "5",
            "--repeats",
            "2",
            "--strategies",
            "margin",
            "--workdir",
            str(tmp_path / "w"),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    pair = data["pairs"]["margin@40"]
    assert pair["statuses"] == {"al_core": ["ok", "ok"], "skactiveml": ["ok", "ok"]}
    for side in ("al_core", "skactiveml"):
        for run in pair["runs"][side]:
            assert run["n_selected"] == 5 and run["overlap_labeled"] == 0 and run["import_seconds"] > 0
    assert pair["ratio"] == round(pair["skactiveml_seconds"] / pair["al_core_seconds"], 2)
    assert pair["al_core_seconds"] == round(float(np.median([r["seconds"] for r in pair["runs"]["al_core"]])), 3)
