"""al_core.files.atomic: publishing without replacing (replace=False) and under a fresh name (atomic_write_unique)."""

import os

import pytest

from al_core.files import atomic
from al_core.files.atomic import atomic_path, atomic_write_bytes, atomic_write_unique


def test_replace_false_never_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_bytes(p, b"first", replace=False)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(p, b"second", replace=False)
    with pytest.raises(FileExistsError), atomic_path(p, replace=False) as tmp:
        tmp.write_bytes(b"third")
    assert p.read_bytes() == b"first" and os.listdir(tmp_path) == ["a.txt"]
    atomic_write_bytes(p, b"fourth")  # the default replaces
    assert p.read_bytes() == b"fourth"


def test_replace_false_loses_the_race_to_a_file_created_meanwhile(tmp_path):
    p = tmp_path / "race.db"
    with pytest.raises(FileExistsError), atomic_path(p, mode=0o444, replace=False) as tmp:
        tmp.write_bytes(b"ours")
        p.write_bytes(b"theirs")  # another process got there first
    assert p.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["race.db"]


def test_replace_false_without_hard_links_still_refuses_an_existing_file(tmp_path, monkeypatch):
    def no_links(*a, **k):
        raise PermissionError("no hard links on this file system")

    monkeypatch.setattr(atomic.os, "link", no_links)
    p = tmp_path / "x"
    assert atomic_write_bytes(p, b"1", replace=False) == p and p.read_bytes() == b"1"
    with pytest.raises(FileExistsError):
        atomic_write_bytes(p, b"2", replace=False)
    assert p.read_bytes() == b"1" and os.listdir(tmp_path) == ["x"]


def test_atomic_write_unique_picks_the_next_free_name(tmp_path):
    target = tmp_path / "simulate-1.csv"
    written = [atomic_write_unique(target, f"run {i}".encode()) for i in range(3)]
    assert [p.name for p in written] == ["simulate-1.csv", "simulate-1-1.csv", "simulate-1-2.csv"]
    assert [p.read_bytes() for p in written] == [b"run 0", b"run 1", b"run 2"]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in written)  # no temporary left
    assert oct(os.stat(written[0]).st_mode & 0o777) == oct(atomic.DEFAULT_MODE)
