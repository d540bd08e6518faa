"""`al bench select` at a small size: runs, and the JSON carries the documented keys."""

import json

from al_core.bench import select as bench_select


def test_bench_select_small(tmp_path, capsys):
    out = tmp_path / "select.json"
    rc = bench_select.main([
        "--n", "3000", "--dim", "32", "--classes", "5", "--budget", "10", "--labeled", "100",
        "--strategies", "margin,random", "--timeout", "120", "--json", str(out),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["strategies"].keys() == data["strategies"].keys() == {"margin", "random"}
    for entry in data["strategies"].values():
        assert entry["status"] == "ok", entry
        assert 0 < entry["seconds"] < 120, entry  # measured, and within the run's --timeout
        assert entry["peak_rss_mb"] > 0
        assert entry["n_selected"] == 10
    assert data["n"] == 3000 and data["dim"] == 32 and data["budget"] == 10
    assert "probe_fit_seconds" in data["strategies"]["margin"]


def test_bench_probcover_approx_small(tmp_path, capsys):
    """The agreement benchmark at a small size: exact and approximate both run;
    coverage is measured on every row and behaves as coverage must."""
    import al_core.learn.strategies.probcover as pc
    from al_core.bench import probcover_approx

    defaults = (pc.PROBCOVER_SAMPLE_ROWS, pc.PURITY_SAMPLE_ROWS)
    out = tmp_path / "pc.json"
    rc = probcover_approx.main([
        "--n", "3000", "--dim", "32", "--classes", "5", "--budget", "10", "--labeled", "30", "--exact",
        "--graph-sample-rows", "1500", "--purity-sample-rows", "500", "--purity-rows", "400",
        "--workdir", str(tmp_path / "w"), "--json", str(out),
    ])
    assert rc == 0
    # the sample sizes are the strategy's parameters: the module's defaults are left alone
    assert defaults == (pc.PROBCOVER_SAMPLE_ROWS, pc.PURITY_SAMPLE_ROWS)
    data = json.loads(out.read_text())
    assert data["graph_sample_rows"] == 1500 and data["purity_sample_rows"] == 500
    assert json.loads(capsys.readouterr().out)["coverage"] == data["coverage"]
    runs = data["runs"]
    assert runs["approximate"]["approximate"] is True and runs["approximate"]["graph_rows"] == 1500
    assert runs["exact"]["approximate"] is False and runs["exact"]["graph_rows"] == 3000
    cov = data["coverage"]
    # adding picks never uncovers a row; the exact greedy covers at least what random picks do here
    assert cov["labelled_only"] <= min(cov["approximate"], cov["exact"], cov["random"])
    assert cov["exact"] >= cov["random"]
    assert 0 <= data["picks_in_common_with_exact"] <= 10
    assert 0.0 <= data["independent_purity_at_approx_delta"]["purity"] <= 1.0
