"""Limits of the label-file readers, each with what it costs, and the column vocabulary of the formats."""

MAX_FILE_BYTES = 256 << 20  # 256 MiB: largest label file read at all (~2.5 M CSV rows; ~300 B of memory per kept row)
MAX_LINE_BYTES = 1 << 20  # 1 MiB: longest line read into memory (CSV / JSON lines); longer ones are skipped unread
MAX_JSON_DOCUMENT_BYTES = 64 << 20  # 64 MiB: a Label Studio export is read whole (~2x in memory: bytes, then text)
MAX_JSON_DEPTH = 32  # nesting levels allowed in JSON (a Label Studio export needs 7); deeper is an error
MAX_FIELD_CHARS = 4096  # 4 KiB per annotator / annotation_id / note: stored verbatim in DuckDB
MAX_ERRORS_KEPT = 10_000  # errors kept in memory per file (~4 MB); further ones are only counted
MAX_REPORT_ERRORS = 1_000  # errors listed in an .errors.json report (~250 KB); the rest are counted
PREVIEW_CHARS = 80  # characters of a bad value quoted in an error (repr-escaped)
READ_CHUNK = 1 << 20  # 1 MiB: piece size when hashing a refused file or skipping an over-long line

# The formats parse_label_file reads (ParsedLabels.format, label_files.format): the project's own CSV and JSON
# lines, and every export Label Studio 1.23 writes (docs/labelling-loop.md, "Formats").
FORMATS = (
    "csv",
    "jsonl",
    "label_studio",
    "label_studio_min",
    "label_studio_csv",
    "label_studio_tsv",
    "label_studio_task",
    "label_studio_annotation",
)
CSV_COLUMNS = ("image_id", "label", "annotator", "annotation_id", "note", "seconds")
CSV_REQUIRED = ("image_id", "label")
JSONL_KEYS = CSV_COLUMNS
IMAGE_ID_LEN = 64
