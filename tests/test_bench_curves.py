"""`al bench curves`: a run, a resumed run that adds seeds, and the markdown table."""

import json

import numpy as np

from al_core.bench import curves


def _features(path):
    rng = np.random.default_rng(0)
    centres = 4 * rng.standard_normal((3, 8))
    y, yt = rng.integers(0, 3, 240), rng.integers(0, 3, 90)
    np.savez(
        path,
        train_features=(centres[y] + rng.standard_normal((240, 8))).astype(np.float32),
        train_targets=y,
        test_features=(centres[yt] + rng.standard_normal((90, 8))).astype(np.float32),
        test_targets=yt,
    )


def test_curves_resume_adds_only_the_missing_seeds_and_tables(tmp_path, capsys):
    feats, out = tmp_path / "f.npz", tmp_path / "c.json"
    _features(feats)
    base = ["--features", str(feats), "--rounds", "3", "--runs", "random@random,margin@centroid", "--json", str(out)]
    assert curves.main(base + ["--seeds", "1"]) == 0
    first = json.loads(out.read_text())
    acc1 = first["strategies"]["margin@centroid"]["per_seed"]["1"]["accuracy"]
    assert first["n_labeled"] == [3, 6, 9] and len(acc1) == 3
    capsys.readouterr()
    assert curves.main(base + ["--seeds", "2", "--resume"]) == 0
    log = capsys.readouterr().out
    assert "margin@centroid seed 1: complete" in log and "margin@centroid seed 10 round 2" in log
    assert "margin@centroid seed 1 round" not in log  # seed 1 was kept, not run again
    second = json.loads(out.read_text())
    m = second["strategies"]["margin@centroid"]
    assert m["seeds_done"] == [1, 10] and m["per_seed"]["1"]["accuracy"] == acc1
    both = np.array([m["per_seed"][s]["accuracy"] for s in ("1", "10")])
    assert np.allclose(m["mean"], both.mean(0), atol=1e-5) and len(second["commands"]) == 2
    table = curves.markdown_table([str(out)])
    rows = [line for line in table.splitlines() if line.startswith("| margin@centroid")]
    assert len(rows) == 1 and "| 1,10 |" in rows[0]
    assert f"{100 * m['auc']:.1f} |" in rows[0]
