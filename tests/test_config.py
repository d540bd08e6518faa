import pytest
import yaml

from al_core.config import DEFAULT_YAML, ConfigError, from_dict, load_config
from al_core.cli.init import main as init_main


def test_al_init_writes_a_valid_commented_file_and_refuses_to_overwrite(tmp_path):
    p = tmp_path / "al.yaml"
    assert init_main([str(p)]) == 0
    text = p.read_text()
    assert text == DEFAULT_YAML and "# " in text
    cfg = load_config(p)
    assert cfg.selection.seed_strategy == "centroid" and cfg.selection.query_strategy == "dropquery"
    assert cfg.evaluation.labels_from_ground_truth is False  # production default: hold-out labels from people
    assert cfg.db_path == tmp_path / "data" / "warehouse.duckdb"  # relative to the file's folder
    assert init_main([str(p)]) == 1
    assert init_main([str(p), "--force"]) == 0


@pytest.mark.parametrize("data, message", [
    ({"selection": {"budget_per_roud": 3}}, "unknown key"),
    ({"selecton": {}}, "unknown section"),
    ({"selection": {"budget_per_round": "ten"}}, "expected int"),
    ({"selection": {"budget_per_round": 0}}, "at least 1"),
    ({"selection": {"budget_per_round": 20, "total_budget": 10}}, "total_budget"),
    ({"selection": {"answered_fraction": 1.5}}, "answered_fraction"),
    ({"classes": ["cat", "cat"]}, "duplicate"),
    ({"classes": ["cat", "skip"]}, "skip_label"),
    ({"evaluation": {"labels_from_ground_truth": "maybe"}}, "labels_from_ground_truth"),
])
def test_bad_project_files_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("selection: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_repository_demo_file_differs_from_defaults_only_where_marked():
    from tests.conftest import ROOT

    demo = yaml.safe_load((ROOT / "al.yaml").read_text())
    default = yaml.safe_load(DEFAULT_YAML)
    diffs = {(s, k) for s in default if isinstance(default[s], dict)
             for k in default[s] if demo[s][k] != default[s][k]}
    assert diffs == {("evaluation", "labels_from_ground_truth"), ("sensor", "interval_s"),
                     ("sensor", "ingest_before_round")}
    marked = [line for line in (ROOT / "al.yaml").read_text().splitlines() if "# DEMO" in line]
    assert len(marked) == len(diffs)
