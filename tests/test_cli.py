"""The `al` command line: one exit-code table (al_core.cli.exit_codes.Exit) and a one-line message for a
user's mistake, never a traceback."""

import pytest

from al_core import cli
from al_core.cli.exit_codes import Exit

BROKEN_YAML = "selection: [unclosed\n"


@pytest.fixture()
def project_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AL_CONFIG", raising=False)
    (tmp_path / "bad.yaml").write_text(BROKEN_YAML)
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["rounds"],
        ["export"],
        ["snapshot"],
        ["round", "next"],
        ["ingest", "--no-embed"],
        ["simulate"],
        ["simulate-annotator"],
    ],
)
def test_a_broken_project_file_is_a_usage_error_with_one_message(project_dir, capsys, argv):
    assert cli.main([*argv, "--config", "bad.yaml"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "not valid YAML" in err and "Traceback" not in err
    assert not (project_dir / "data").exists()  # nothing created


def test_unknown_commands_are_usage_errors(capsys):
    assert cli.main(["frobnicate"]) == Exit.USAGE
    assert cli.main(["bench", "nope"]) == Exit.USAGE
    assert cli.main(["--help"]) == Exit.OK
    capsys.readouterr()


def test_round_next_without_a_database_fails_and_creates_none(project_dir, capsys):
    assert cli.main(["round", "next"]) == Exit.USAGE  # no project file at all: not the built-in defaults
    assert "no project file" in capsys.readouterr().err
    assert cli.main(["init", "--images", str(project_dir)]) == Exit.USAGE  # no images there
    capsys.readouterr()
    (project_dir / "al.yaml").write_text("name: fresh\n")
    for argv in (
        ["round", "next"],
        ["status"],
        ["rounds"],
        ["export"],
        ["lineage", "0" * 64],
        ["labels", "retract", "0" * 12],
        ["labels", "retry", "0" * 12],
        ["simulate"],
    ):
        assert cli.main(argv) == Exit.FAILED, argv
        err = capsys.readouterr().err
        assert "no database" in err and "al ingest" in err and "Traceback" not in err, (argv, err)
        assert err.splitlines()[0].endswith("project 'fresh' from " + str(project_dir / "al.yaml") + " (./al.yaml)")
    assert not (project_dir / "data").exists()


def test_the_demo_file_is_named_when_used_without_asking(tmp_path, monkeypatch, capsys):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("AL_CONFIG", raising=False)
    cli.main(["status"])
    first = capsys.readouterr().err.splitlines()[0]
    assert "project 'demo'" in first and "this is the demo's project file: set $AL_CONFIG or --config" in first
    cli.main(["status", "--config", str(ROOT / "al.yaml")])
    assert "demo's project file" not in capsys.readouterr().err.splitlines()[0]  # asked for by name: no warning


def test_ctrl_c_is_exit_130_without_traceback(monkeypatch, capsys):
    import al_core.cli.status as status

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(status, "main", interrupted)
    assert cli.main(["status"]) == Exit.INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err
