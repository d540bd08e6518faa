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
    for name, entry in data["strategies"].items():
        assert entry["status"] == "ok", entry
        assert entry["seconds"] >= 0
        assert entry["peak_rss_mb"] > 0
        assert entry["n_selected"] == 10
    assert data["n"] == 3000 and data["dim"] == 32 and data["budget"] == 10
    assert "probe_fit_seconds" in data["strategies"]["margin"]
