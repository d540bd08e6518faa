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


@pytest.mark.parametrize("argv", [["status"], ["rounds"], ["export"], ["snapshot"], ["round", "next"],
                                  ["ingest", "--no-embed"], ["simulate"], ["simulate-annotator"]])
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
    assert cli.main(["round", "next"]) == Exit.FAILED
    assert "no database" in capsys.readouterr().err
    assert not (project_dir / "data").exists()
    assert cli.main(["status"]) == Exit.FAILED
    assert "no database" in capsys.readouterr().err


def test_ctrl_c_is_exit_130_without_traceback(monkeypatch, capsys):
    import al_core.cli.status as status

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(status, "main", interrupted)
    assert cli.main(["status"]) == Exit.INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err
