"""The polars path for large CSV label files (al_core.labels.csv_polars) against the reference reader.

tests/test_labels.py runs every one of its cases with both readers; here, the
polars path is checked to accept plain files itself (with the reference rows)
and to hand every other file back to the reference reader.
"""

import hashlib

import pytest

import al_core.labels as L
from al_core.labels import ParsedLabels
from tests.test_labels import CAT, CLASSES, DOG, KNOWN, SHIP, UNKNOWN, csv_text, jl, parse


def _fast(tmp_path, content: bytes, **kw):
    """(what read_csv_fast returns, its RowValidator, the hash it computed) for one file."""
    from al_core.labels.csv_polars import read_csv_fast
    from al_core.labels.results import ErrorCollector
    from al_core.labels.rows import RowValidator

    f = tmp_path / "fast.csv"
    f.write_bytes(content)
    rows = RowValidator(kw.get("classes", CLASSES), KNOWN, "skip", ErrorCollector())
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        n = read_csv_fast(
            fh, h, rows, kw.get("max_line_bytes", L.MAX_LINE_BYTES), kw.get("max_bytes", L.MAX_FILE_BYTES)
        )
    assert rows.errs.count == 0  # the polars path never writes an error: the reference reader does
    return n, rows, h.hexdigest()


def _both(tmp_path, content: bytes, monkeypatch, **kw) -> tuple[ParsedLabels, ParsedLabels]:
    ref = parse(tmp_path, content, **kw)
    monkeypatch.setattr(L.csv_polars, "POLARS_CSV_MIN_BYTES", 0)
    fast = parse(tmp_path, content, **kw)
    monkeypatch.setattr(L.csv_polars, "POLARS_CSV_MIN_BYTES", 1 << 62)
    return ref, fast


PLAIN_CSV = [
    csv_text([(CAT[0], "cat", "alice"), (DOG[0], "dog", "bob"), (SHIP[0], "skip", "")]).encode(),
    # BOM, CRLF, columns in any order, surrounding whitespace (a no-break space included), blank lines
    b"\xef\xbb\xbf"
    + (
        f"note , label,annotation_id,image_id\r\n\r\n  ,\xa0dog\u3000,,  {DOG[0]}  \r\n\r\n, ,,\r\nn,cat,7,{CAT[0]}"
    ).encode(),
    # NaN-like values stay strings; the same label twice is counted once; a last line without a newline
    csv_text(
        [(CAT[0], "cat", "NaN"), (DOG[0], "dog", "null"), (CAT[0], "cat", "NA"), (SHIP[1], "ship", "None")]
    ).encode()[:-1],
    csv_text(
        [(CAT[0], "cat", "=cmd|' /C calc'!A0"), (DOG[1], "dog", "+1"), (SHIP[2], "ship", "@x")],
        header=("image_id", "label", "note"),
    ).encode(),
]


@pytest.mark.parametrize("content", PLAIN_CSV)
def test_polars_path_accepts_plain_files_with_the_reference_rows(tmp_path, monkeypatch, content):
    n, rows, sha = _fast(tmp_path, content)
    assert n is not None  # accepted by the polars path itself, not handed back
    ref, fast = _both(tmp_path, content, monkeypatch)
    assert ref.ok and fast == ref and fast.sha256 == sha == hashlib.sha256(content).hexdigest()
    assert tuple(rows.rows) == ref.rows and n == ref.n_records and rows.n_duplicates == ref.n_duplicates


NOT_PLAIN_CSV = [
    ("quoted", f'image_id,label,note\n{CAT[0]},cat,"a, b"\n'.encode()),
    ("quoted newline", f'image_id,label,note\n{CAT[0]},cat,"two\nlines"\n{DOG[0]},dog,x\n'.encode()),
    ("NUL", f"image_id,label\n{CAT[0]},c\x00at\n".encode()),
    ("bad UTF-8", f"image_id,label,annotator\n{CAT[0]},cat,al".encode() + b"\xff\xfeice\n"),
    ("bad UTF-8 at the end", f"image_id,label,annotator\n{CAT[0]},cat,al".encode() + b"\xc3"),
    ("bare CR", f"image_id,label\r{CAT[0]},cat\r".encode()),
    ("CR inside", f"image_id,label,note\n{CAT[0]},cat,a\rb\n".encode()),
    ("long line", f"image_id,label,note\n{CAT[0]},cat,{'x' * 500}\n".encode()),
    ("blank line first", f"\nimage_id,label\n{CAT[0]},cat\n".encode()),
    ("BOM on line 2", f"image_id,label\n\ufeff{CAT[0]},cat\n".encode()),
    ("no header", f"{CAT[0]},cat\n".encode()),
    ("unknown column", f"image_id,label,score\n{CAT[0]},cat,1\n".encode()),
    ("header only", b"image_id,label\n"),
    ("too few cells", f"image_id,label,note\n{CAT[0]},cat\n".encode()),
    ("too many cells", f"image_id,label\n{CAT[0]},cat,x\n".encode()),
    ("uppercase id", f"image_id,label\n{CAT[0].upper()},cat\n".encode()),
    ("path id", b"image_id,label\n../../etc/passwd,cat\n"),
    ("unknown id", f"image_id,label\n{UNKNOWN},cat\n".encode()),
    ("label case", f"image_id,label\n{CAT[0]},Cat\n".encode()),
    ("NaN label", f"image_id,label\n{CAT[0]},NaN\n".encode()),
    ("missing label", f"image_id,label\n{CAT[0]}, \n".encode()),
    ("two labels", f"image_id,label\n{CAT[0]},cat\n{DOG[0]},dog\n{CAT[0]},dog\n".encode()),
    ("long note", f"image_id,label,note\n{CAT[0]},cat,{'n' * (L.MAX_FIELD_CHARS + 1)}\n".encode()),
]


@pytest.mark.parametrize("why, content", NOT_PLAIN_CSV, ids=[w for w, _ in NOT_PLAIN_CSV])
def test_polars_path_hands_everything_else_to_the_reference_reader(tmp_path, monkeypatch, why, content):
    n, rows, _ = _fast(tmp_path, content, max_line_bytes=200)
    assert n is None and rows.rows == [] and rows.n_duplicates == 0
    ref, fast = _both(tmp_path, content, monkeypatch, max_line_bytes=200)
    assert fast == ref  # the same errors, lines and messages: the reference reader wrote them


def test_polars_path_trims_what_str_strip_trims():
    assert set(L.csv_polars.WHITESPACE) == {c for c in map(chr, range(0x110000)) if c.isspace()}
    assert len(L.csv_polars.WHITESPACE) == len(set(L.csv_polars.WHITESPACE))


def test_polars_path_trims_cells_never_class_names(tmp_path, monkeypatch):
    # a class whose name has surrounding whitespace can never match a trimmed cell, raw or not
    content = f"image_id,label\n{CAT[0]}, cat\n".encode()
    n, _, _ = _fast(tmp_path, content, classes=(" cat", "dog"))
    assert n is None
    ref, fast = _both(tmp_path, content, monkeypatch, classes=(" cat", "dog"))
    assert not ref.ok and fast == ref and "not a class" in ref.errors[0].message


def test_polars_path_threshold_is_the_file_size(tmp_path, monkeypatch):
    calls = []
    real = L.csv_polars.read_csv_fast
    monkeypatch.setattr(L.csv_polars, "read_csv_fast", lambda *a: calls.append(1) or real(*a))
    content = PLAIN_CSV[0]
    monkeypatch.setattr(L.csv_polars, "POLARS_CSV_MIN_BYTES", len(content) + 1)
    assert parse(tmp_path, content).ok and calls == []
    monkeypatch.setattr(L.csv_polars, "POLARS_CSV_MIN_BYTES", len(content))
    assert parse(tmp_path, content).ok and calls == [1]
    assert parse(tmp_path, jl({"image_id": CAT[0], "label": "cat"}) * 50, name="x.jsonl").ok and calls == [1]


def test_bench_labels_csv_runs_both_readers(tmp_path, capsys):
    import json

    from al_core.bench import labels_csv

    out = tmp_path / "r.json"
    assert labels_csv.main(["--rows", "3000", "--repeat", "1", "--workdir", str(tmp_path), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["same_rows"] and res["all_ok"] and res["file_bytes"] == (tmp_path / "labels-3000.csv").stat().st_size
    assert set(res) >= {"reference", "polars", "loadavg_start", "loadavg_end", "speedup_wall", "speedup_cpu"}
    assert res["polars"]["import_s"] > 0 and res["reference"]["import_s"] == 0
    assert json.loads(capsys.readouterr().out) == res


def test_polars_path_agrees_with_the_reference_on_random_files(tmp_path, monkeypatch):
    import random

    rnd = random.Random(7)
    good = (
        sorted(KNOWN)[:6] + [" " + DOG[0], "\xa0" + SHIP[0]],
        ["cat", "dog", "skip", " cat ", "\xa0dog"],
        ["", "alice", " bob ", "NaN", "null", "=1+2", "\xa0", "x y"],
    )
    bad = (
        good[0] + [CAT[0].upper(), UNKNOWN, "", "../x", CAT[1][:63], CAT[2] + "\u3000", "\x1c" + DOG[1]],
        good[1] + ["Cat", "", "NaN", "kitten", "cat\x1f"],
        good[2] + ["n" * (L.MAX_FIELD_CHARS + 1), "\u2028z"],
    )
    headers = [
        ["image_id", "label"],
        ["label", "image_id", "annotator"],
        ["image_id", "label", "note", "annotation_id"],
        [" image_id", "label "],
    ]
    real = L.csv_polars.read_csv_fast
    answers = []
    monkeypatch.setattr(L.csv_polars, "read_csv_fast", lambda *a: answers.append(real(*a)) or answers[-1])
    for _ in range(150):
        header = rnd.choice(headers)
        ids, labels, texts = good if rnd.random() < 0.7 else bad
        lines = [",".join(header)]
        for _ in range(rnd.randint(0, 6)):
            if rnd.random() < 0.1:
                lines.append(rnd.choice(["", "  ", ",", " , "]))
                continue
            cells = [
                rnd.choice(ids if n.strip() == "image_id" else labels if n.strip() == "label" else texts)
                for n in header
            ]
            if rnd.random() < 0.03:
                cells.append("extra")
            elif rnd.random() < 0.03:
                cells.pop()
            lines.append(",".join(cells))
        eol = rnd.choice(["\n", "\r\n"])
        content = (b"\xef\xbb\xbf" if rnd.random() < 0.2 else b"") + (
            eol.join(lines) + (eol if rnd.random() < 0.8 else "")
        ).encode()
        ref, fast = _both(tmp_path, content, monkeypatch)
        assert fast == ref, content
    accepted = sum(a is not None for a in answers)
    assert 20 <= accepted < len(answers) == 150  # both ways out of the polars path were taken, often
