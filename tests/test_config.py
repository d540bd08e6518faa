import pytest
import yaml

from al_core.cli.init import main as init_main
from al_core.config import DEFAULT_YAML, ConfigError, from_dict, load_config


def test_al_init_writes_a_valid_commented_file_and_refuses_to_overwrite(tmp_path):
    p = tmp_path / "proj" / "al.yaml"
    p.parent.mkdir()
    assert init_main([str(p)]) == 0
    text = p.read_text()
    changed = [(a, b) for a, b in zip(DEFAULT_YAML.splitlines(), text.splitlines(), strict=True) if a != b]
    assert changed == [
        (
            "name: my-project                  # shown in reports and `al status`",
            "name: proj                  # shown in reports and `al status`",
        )
    ], changed
    cfg = load_config(p)
    assert cfg.name == "proj"
    assert cfg.selection.seed_strategy == "centroid" and cfg.selection.query_strategy == "dropquery"
    assert cfg.evaluation.labels_from_ground_truth is False  # production default: hold-out labels from people
    assert cfg.db_path == tmp_path / "proj" / "data" / "warehouse.duckdb"  # relative to the file's folder
    assert init_main([str(p)]) == 1
    assert init_main([str(p), "--force"]) == 0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"selection": {"budget_per_roud": 3}}, "unknown key"),
        ({"selecton": {}}, "unknown section"),
        ({"selection": {"budget_per_round": "ten"}}, "expected an integer"),
        ({"selection": {"budget_per_round": 0}}, "at least 1"),
        ({"selection": {"budget_per_round": 20, "total_budget": 10}}, "total_budget"),
        ({"selection": {"answered_fraction": 1.5}}, "answered_fraction"),
        ({"classes": ["cat", "cat"]}, "duplicate"),
        ({"classes": ["cat", "skip"]}, "skip_label"),
        ({"evaluation": {"labels_from_ground_truth": "maybe"}}, "labels_from_ground_truth"),
    ],
)
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
    diffs = {(s, k) for s in default if isinstance(default[s], dict) for k in default[s] if demo[s][k] != default[s][k]}
    assert diffs == {
        ("evaluation", "labels_from_ground_truth"),
        ("sensor", "interval_s"),
        ("sensor", "ingest_before_round"),
        ("images", "root"),
        ("evaluation", "holdout"),
        ("cost", "per_label"),
        ("cost", "per_hour"),
        ("target", "value"),
    }
    assert demo["name"] == "demo" != default["name"]
    marked = [line for line in (ROOT / "al.yaml").read_text().splitlines() if "# DEMO" in line]
    assert len(marked) == len(diffs) + 1  # + the name


def test_template_equals_the_schema_defaults():
    """`al init`'s commented file and the built-in defaults cannot drift apart."""
    assert from_dict(yaml.safe_load(DEFAULT_YAML)) == from_dict({})


@pytest.mark.parametrize(
    "data, message",
    [
        # silent coercion is gone: 2.9 is not 2, true is not 1, "yes" is not a boolean
        ({"selection": {"budget_per_round": 2.9}}, r"selection\.budget_per_round: expected an integer, got 2\.9"),
        ({"selection": {"budget_per_round": True}}, r"selection\.budget_per_round: expected an integer, got true"),
        ({"sensor": {"ingest_before_round": "yes"}}, r"sensor\.ingest_before_round: expected true or false, got 'yes'"),
        ({"sensor": {"ingest_before_round": "Y"}}, r"sensor\.ingest_before_round: expected true or false"),
        ({"sensor": {"ingest_before_round": 1}}, r"sensor\.ingest_before_round: expected true or false, got 1"),
        # positive finite numbers
        ({"store": {"lock_timeout_s": float("inf")}}, r"store\.lock_timeout_s: expected a finite number"),
        ({"store": {"lock_timeout_s": 0}}, r"store\.lock_timeout_s: must be greater than 0"),
        ({"sensor": {"settle_s": float("nan")}}, r"sensor\.settle_s: expected a finite number"),
        ({"selection": {"answered_fraction": 0}}, r"answered_fraction: must be greater than 0"),
        ({"sensor": {"interval_s": 0}}, r"sensor\.interval_s: must be at least 1"),
        # names from the registries, with "did you mean"
        (
            {"selection": {"query_strategy": "dropqeury"}},
            r"query_strategy: unknown value 'dropqeury'; did you mean "
            r"'dropquery'\?",
        ),
        ({"selection": {"seed_strategy": "margin"}}, r"seed_strategy: unknown value 'margin'"),
        ({"backbone": {"name": "dinov2_vitb"}}, r"backbone\.name: unknown value 'dinov2_vitb'; did you mean"),
        ({"selection": {"budget_per_roud": 3}}, r"unknown key 'budget_per_roud'; did you mean 'budget_per_round'\?"),
        ({"selecton": {}}, r"unknown section 'selecton'; did you mean 'selection'\?"),
        # class names
        ({"classes": ["cat", " dog"]}, r"classes\[1\]: ' dog' must be a non-empty name without surrounding spaces"),
        ({"classes": ["cat", ""]}, r"classes\[1\]"),
        ({"classes": "cat,dog"}, r"classes: expected a non-empty list"),
        # settings that only make sense together
        ({"paths": {"inbox": "x", "outbox": "x"}}, r"paths\.inbox .* and paths\.outbox .* must be separate folders"),
        ({"paths": {"inbox": "out/in", "outbox": "out"}}, r"must be separate folders"),
        ({"paths": {"inbox": "in", "outbox": "in/out"}}, r"must be separate folders"),
        (
            {"labels": {"image_url_template": "/x/{image}"}},
            r"image_url_template: unknown field \{image\}; did you mean",
        ),
        ({"labels": {"image_url_template": "/x/{path"}}, r"image_url_template: not a valid template"),
        ({"labels": {"image_url_template": "/x/{0}"}}, r"image_url_template: unknown field \{0\}"),
        ({"labels": {"image_url_template": "/x/{path.real}"}}, r"image_url_template: unknown field"),
        ({"schedule": {"retrain_cron": "every night"}}, r"schedule\.retrain_cron: .* expected 5 fields"),
        ({"schedule": {"retrain_cron": "61 3 * * *"}}, r"schedule\.retrain_cron: .* the minute field '61' is invalid"),
        ({"schedule": {"retrain_cron": "0 3 * * mon-foo"}}, r"the day of week field"),
        ({"labels": {"skip_label": " skip"}}, r"labels\.skip_label: ' skip' must be non-empty"),
        ({"images": "photos"}, r"images: expected a mapping of settings, got 'photos'"),
        # the cost model and the target (al_core.value)
        ({"cost": {"per_label": -1}}, r"cost\.per_label: must be at least 0"),
        ({"cost": {"overhead": 0.5}}, r"cost\.overhead: must be at least 1"),
        ({"cost": {"currency": ""}}, r"cost\.currency: '' must be non-empty"),
        ({"cost": {"role_per_hour": ["expert"]}}, r"cost\.role_per_hour: expected a mapping of names to numbers"),
        ({"cost": {"role_per_hour": {"expert": 0}}}, r"cost\.role_per_hour\.expert: expected a positive finite number"),
        ({"cost": {"role_per_label": {"crowd": float("inf")}}}, r"role_per_label\.crowd: expected a positive finite"),
        ({"cost": {"role_per_hour": {"expert": "80"}}}, r"expected a positive finite number, got '80'"),
        ({"cost": {"role_per_hour": {"expert": True}}}, r"expected a positive finite number, got true"),
        (
            {"cost": {"annotator_roles": {7: "crowd"}}},
            r"cost\.annotator_roles: the name 7 must be a non-empty string .*"
            r"quote it: \"7\"",
        ),
        ({"cost": {"annotator_roles": {"alice": ""}}}, r"annotator_roles\.alice: expected a non-empty name"),
        (
            {"cost": {"role_per_hour": {"expert": 80}, "annotator_roles": {"alice": "exprt"}}},
            r"cost\.annotator_roles\.alice: unknown role 'exprt'; did you mean 'expert'\?",
        ),
        ({"cost": {"annotator_roles": {"alice": "expert"}}}, r"unknown role 'expert' .*none yet"),
        (
            {"target": {"metric": "balanced_acc"}},
            r"target\.metric: unknown value 'balanced_acc'; did you mean "
            r"'balanced_accuracy'\?",
        ),
        ({"target": {"value": 1.5}}, r"target\.value: must be at most 1"),
        ({"target": {"value": 0}}, r"target\.value: must be greater than 0"),
        ({"selection": {"stop_kappa": 1.2}}, r"selection\.stop_kappa: must be at most 1"),
        ({"selection": {"stop_window": 0}}, r"selection\.stop_window: must be at least 1"),
        ({"selection": {"stop_when_stable": "yes"}}, r"selection\.stop_when_stable: expected true or false"),
    ],
)
def test_every_setting_is_checked_when_the_file_loads(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_valid_values_load_as_written():
    cfg = from_dict(
        {
            "selection": {"answered_fraction": 0.5, "budget_per_round": 3, "total_budget": 9},
            "store": {"lock_timeout_s": "1e-1"},  # YAML 1.1 reads 1e-1 (no dot) as a string
            "labels": {"image_url_template": "https://bucket/{name}?id={image_id}&p={path}"},
            "schedule": {"retrain_cron": "*/15 2-4,23 1 jan-mar,dec sun"},
            "classes": ["cat", "dog"],
        }
    )
    assert cfg.selection.answered_fraction == 0.5 and cfg.store_cfg.lock_timeout_s == 0.1
    assert cfg.classes == ("cat", "dog") and cfg.schedule.retrain_cron.startswith("*/15")
    cost = from_dict(
        {
            "cost": {
                "role_per_hour": {"expert": 80, "crowd": 12.5},
                "role_per_label": {"crowd": 0.1},
                "annotator_roles": {"bob": "crowd", "alice": "expert", "7": "crowd"},
            },
            "target": {"metric": "macro_f1", "value": 0.9},
            "selection": {"stop_when_stable": True},
        }
    )
    assert cost.cost.role_per_hour == (("crowd", 12.5), ("expert", 80.0))  # sorted name -> price pairs
    assert dict(cost.cost.annotator_roles) == {"7": "crowd", "alice": "expert", "bob": "crowd"}
    assert (cost.target.metric, cost.target.value, cost.selection.stop_when_stable) == ("macro_f1", 0.9, True)
    assert hash(cost) == hash(
        from_dict(
            {
                "cost": {
                    "role_per_hour": {"crowd": 12.5, "expert": 80},
                    "role_per_label": {"crowd": 0.1},
                    "annotator_roles": {"alice": "expert", "bob": "crowd", "7": "crowd"},
                },
                "target": {"metric": "macro_f1", "value": 0.9},
                "selection": {"stop_when_stable": True},
            }
        )
    )


CRON_CASES = [
    "0 3 * * *",
    "*/5 * * * *",
    "0 0 1 1 *",
    "0 12 * * mon-fri",
    "15,45 8-18/2 * * 1-5",
    "0 0 * * 7",
    "@daily",
    "@hourly",
    "60 * * * *",
    "0 24 * * *",
    "0 0 0 * *",
    "0 0 32 * *",
    "0 0 * 13 *",
    "* * * *",
    "0 0 * * 8",
    "*/0 * * * *",
    "5-1 * * * *",
    "a b c d e",
    "0 3 * * * *",
    "0 0 * jan-foo *",
    "1/5 * * * *",
    "0 0 L * *",
    "0 0 ? * *",
    "0 0 * * 1#2",
    "0 0 * * 5L",
    "0 0 * * 1#6",
    "@reboot",
    "0 0 * * SUN",
    "0 0 * JAN *",
    "0 0 * * 0-7",
    "5-1/2 * * * *",
    "0 0 1,15 * *",
    "-1 * * * *",
    "0 0 * * ?#1",
]


@pytest.mark.parametrize("expr", CRON_CASES)
def test_cron_check_agrees_with_dagster(expr):
    """The project file's cron check (no Dagster import) accepts exactly what Dagster's schedules accept."""
    from dagster._utils.schedules import is_valid_cron_string

    from al_core.config.validate import check_cron

    try:
        check_cron(expr, "schedule.retrain_cron")
        ours = True
    except ConfigError:
        ours = False
    assert ours == is_valid_cron_string(expr), expr


def test_yaml_error_names_line_and_column(tmp_path):
    bad = tmp_path / "al.yaml"
    bad.write_text("selection:\n  budget_per_round: 3\n   total_budget: [\n")
    with pytest.raises(ConfigError, match=r"al\.yaml:3:\d+: not valid YAML") as e:
        load_config(bad)
    assert "\n" not in str(e.value)


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "proj.yaml"
    p.write_text("selection:\n  query_strategy: marginn\n")
    with pytest.raises(
        ConfigError,
        match=r"proj\.yaml: selection\.query_strategy: unknown value 'marginn'; "
        r"did you mean 'margin'\?",
    ):
        load_config(p)


def test_al_init_for_a_flat_folder_and_for_class_folders(tmp_path, capsys):
    from tests.conftest import SAMPLE_ROOT

    flat = tmp_path / "photos"
    flat.mkdir()
    for f in sorted((SAMPLE_ROOT / "cat").iterdir())[:3]:
        (flat / f"IMG_{f.name}").write_bytes(f.read_bytes())
    p = tmp_path / "al.yaml"
    assert init_main([str(p), "--images", str(flat)]) == 2  # a flat folder needs its class names
    assert "--classes" in capsys.readouterr().err and not p.exists()
    assert init_main([str(p), "--images", str(flat), "--classes", "cat, dog,bird"]) == 0
    cfg = load_config(p)
    assert cfg.image_root == flat and cfg.classes == ("cat", "dog", "bird")
    assert yaml.safe_load(p.read_text())["images"]["root"] == "photos"  # relative to the project file
    assert "# " in p.read_text()  # the comments stay
    # class folders give the classes
    q = tmp_path / "q.yaml"
    assert init_main([str(q), "--images", str(SAMPLE_ROOT)]) == 0
    assert load_config(q).classes is None and load_config(q).image_root == SAMPLE_ROOT
    # mistakes: a missing folder, an empty one, an empty class name
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (
        ["--images", str(tmp_path / "nope")],
        ["--images", str(empty), "--classes", "a"],
        ["--images", str(flat), "--classes", "a,,b"],
    ):
        assert init_main([str(tmp_path / "x.yaml"), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x.yaml").exists()


def test_no_project_file_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AL_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"no project file: give --config PATH, set \$AL_CONFIG"):
        load_config()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"label_studio": {"url": "127.0.0.1:8080"}}, r"label_studio\.url: expected the server's address"),
        ({"label_studio": {"url": "ftp://host"}}, r"label_studio\.url: expected the server's address"),
        ({"label_studio": {"token_env": "my token"}}, r"label_studio\.token_env: expected the name of an environment"),
        ({"label_studio": {"pull_format": "XML"}}, r"label_studio\.pull_format"),
        ({"label_studio": {"push_on_proposal": "yes"}}, r"label_studio\.push_on_proposal: expected true or false"),
        # the inbox outside the document root: Label Studio would refuse the target storage
        (
            {
                "images": {"root": "project/images"},
                "paths": {"inbox": "elsewhere/inbox"},
                "label_studio": {"target_storage": True},
            },
            r"label_studio\.target_storage needs paths\.inbox",
        ),
    ],
)
def test_label_studio_settings_are_checked_at_load(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data, base_dir=tmp_path)


def test_label_studio_target_storage_under_the_document_root_loads(tmp_path):
    # the documented layout: images in project/images, the inbox in project/data/inbox, the document root project/
    cfg = from_dict(
        {"images": {"root": "images"}, "label_studio": {"target_storage": True, "url": "https://ls.example.org:8443"}},
        base_dir=tmp_path,
    )
    assert cfg.document_root == tmp_path and tmp_path in cfg.inbox.parents
    assert cfg.label_studio.token_env == "LABEL_STUDIO_API_KEY" and cfg.label_studio.pull_format == "JSON"
