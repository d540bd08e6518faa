"""`al bench select` at a small size: runs, and the JSON carries the documented keys."""

import json

import pytest

from al_core.bench import select as bench_select


@pytest.mark.slow  # make test-fast stays under 2 minutes; make test runs it
def test_bench_select_small(tmp_path, capsys):
    out = tmp_path / "select.json"
    rc = bench_select.main(
        [
            "--n",
            "3000",
            "--dim",
            "32",
            "--classes",
            "5",
            "--budget",
            "10",
            "--labeled",
            "100",
            "--strategies",
            "margin,random",
            "--timeout",
            "120",
            "--json",
            str(out),
        ]
    )
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
    # both data sets by default; the first is also under "strategies"
    assert data["strategies_by_data"].keys() == {"easy", "hard"}
    assert data["strategies_by_data"]["easy"] == data["strategies"]
    for entries in data["strategies_by_data"].values():
        for name, entry in entries.items():
            assert entry["status"] == "ok", entry
            # the floor: the strategy's reads and products at the rates measured around it
            for m in (entry["measured_before"], entry["measured_after"]):
                assert m["read_seconds"] > 0 and m["gflops"] > 0
            assert entry["work"]["reads"] == 1 and entry["work"]["gflop"] == (
                0 if name == "random" else round(2 * 3000 * 32 * 5 / 1e9, 2)
            )
            assert entry["floor_seconds"] > 0
            assert entry["seconds_per_floor"] == round(entry["seconds"] / entry["floor_seconds"], 2)


@pytest.mark.slow  # make test-fast stays under 2 minutes; make test runs it
def test_bench_select_hard_data_reaches_dropquery_s_kmeans(tmp_path):
    """On the hard data set most rows become dropquery candidates: its k-means runs on most of the
    pool, is recorded, and counts in the floor; on the easy set it runs on fewer rows, if at all."""
    out = tmp_path / "select.json"
    rc = bench_select.main(
        [
            "--n",
            "4000",
            "--dim",
            "32",
            "--classes",
            "10",
            "--budget",
            "10",
            "--labeled",
            "100",
            "--strategies",
            "dropquery",
            "--timeout",
            "120",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    easy, hard = (data["strategies_by_data"][d]["dropquery"] for d in ("easy", "hard"))
    (call,) = hard["kmeans_calls"]
    assert call["k"] == 10 and call["n"] > 2000 and call["n_iter"] >= 1  # k-means on most of the pool
    assert all(c["n"] < call["n"] for c in easy["kmeans_calls"])
    assert hard["work"]["reads"] == round(1 + call["n"] / 4000, 3)
    assert hard["work"]["gflop"] > easy["work"]["gflop"] > 0


def test_bench_probcover_approx_small(tmp_path, capsys):
    """The agreement benchmark at a small size: exact and approximate both run;
    coverage is measured on every row and behaves as coverage must."""
    import al_core.learn.strategies.probcover as pc
    from al_core.bench import probcover_approx

    defaults = (pc.PROBCOVER_SAMPLE_ROWS, pc.PURITY_SAMPLE_ROWS)
    out = tmp_path / "pc.json"
    rc = probcover_approx.main(
        [
            "--n",
            "3000",
            "--dim",
            "32",
            "--classes",
            "5",
            "--budget",
            "10",
            "--labeled",
            "30",
            "--exact",
            "--graph-sample-rows",
            "1500",
            "--purity-sample-rows",
            "500",
            "--purity-rows",
            "400",
            "--workdir",
            str(tmp_path / "w"),
            "--json",
            str(out),
        ]
    )
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
