r"""Label files: read and validate what annotators deliver. Pure: never imports dagster, duckdb or torch.

``parse_label_file(path, classes=..., known_image_ids=...)`` reads one delivered
file and returns a ``ParsedLabels``. It never raises on bad content: every
problem becomes a ``LabelError`` naming its line (``None`` for the whole file),
the field and why. **A file with any error is rejected whole**: its ``rows``
are then empty, so nothing from it can be half-applied. The sensor, the
ingesting run and ``al labels check`` all call this same function.

Formats (detected by content; the extension only names the format of an empty
file):

- **CSV** (first non-blank byte is neither ``[`` nor ``{``): a header row naming
  the columns, comma-delimited, RFC 4180 quoting. ``image_id`` and ``label`` are
  required; ``annotator``, ``annotation_id`` and ``note`` are optional; any other
  column is an error.
- **JSON lines** (first byte ``{``): one object per line with ``image_id`` and
  ``label`` (strings) and optionally ``annotator``, ``annotation_id``, ``note``
  (strings or null). Other keys are errors.
- **Label Studio JSON export** (first byte ``[``): an array of tasks, each with
  ``data.image_id`` and ``annotations`` ``[{id, was_cancelled, result: [{type:
  "choices", value: {choices: [label]}}], completed_by, created_at,
  updated_at}]``. A cancelled annotation (``was_cancelled: true``, what Label
  Studio's *Skip* button writes) is ignored and counted in ``n_cancelled``; a
  task whose annotations are all cancelled (or that has none) yields no row.
  A ``textarea`` result, if any, becomes the row's note. Only JSON exports are
  read (not JSON-MIN or Label Studio's CSV).

  **Several non-cancelled annotations on one task** (RESOLUTION_RULE): the
  most recently updated annotation wins, i.e. the maximum of
  (``updated_at``, else ``created_at``; then the annotation ``id``). An
  annotation with neither time counts as older than any dated one; equal
  times go to the higher id. Every such resolution is recorded in
  ``ParsedLabels.decisions`` (task id, image id, chosen annotation and label,
  the others and their labels). Every non-cancelled annotation's label must be
  valid, the overridden ones included.

**Large CSV files** (at least POLARS_CSV_MIN_BYTES) are first tried by the
polars path (``csv_polars``): it accepts a file only when it is plain (no
double quote, NUL byte, lone carriage return, invalid UTF-8 or over-long
line, the header on line 1) and passes every check below, and then returns
exactly the rows the reference reader (``csv_reader``) returns; any other
file goes to the reference reader, which writes every error. The polars path
holds such a file whole once (at most MAX_FILE_BYTES).

Validation, all formats:

- ``image_id``: exactly 64 lowercase hex characters (the image's sha256). This
  also rejects path-like ids (``../x``, ``/etc/passwd``), absurdly long ids
  and SQL metacharacters; the id must also be known (``known_image_ids``).
- ``label``: one of ``classes`` or the skip label, case-sensitive, after
  trimming surrounding whitespace (the only normalisation: every value has its
  surrounding whitespace trimmed, nothing else). A skip-label row has
  ``is_skip=True``.
- One image with two different labels in one file is an error; the same label
  twice is accepted and counted once (the first row is kept).
- JSON values where a string belongs must be strings: a number, boolean, list
  or object is rejected, never converted (Label Studio's integer annotation id
  and ``completed_by`` user id are the format's own types and are written as
  decimal strings).
- ``annotator`` / ``annotation_id`` / ``note`` are inert data: stored verbatim
  (``=cmd``, ``+1``, ``@x`` included), never evaluated, at most
  MAX_FIELD_CHARS characters. A ``=cmd`` label is simply not a class.
- Bytes: NUL bytes, invalid UTF-8 (reported with its byte offset), UTF-16
  files, lines over ``max_line_bytes`` (read with a bounded readline and
  skipped in READ_CHUNK pieces, never held whole), files over ``max_bytes``
  (refused before reading), Label Studio exports over MAX_JSON_DOCUMENT_BYTES
  (one JSON document, read whole: Label Studio may write it on one line, so
  the per-line limit does not apply to it), JSON nested deeper than
  MAX_JSON_DEPTH, duplicate keys in one JSON object.
- JSON strings holding a ``\u0000`` or a lone-surrogate escape are errors.
- An empty file, or one without data rows, is an error.

``sha256`` covers every byte of the file, a refused or skipped part included
(hashed in READ_CHUNK pieces). At most MAX_ERRORS_KEPT errors are kept per
file; further ones are only counted (``errors_dropped``; ``n_errors`` is the
total).

``write_error_report(parsed, dest)`` writes the ``.errors.json`` report beside a
rejected file (atomically, through ``al_core.files.atomic``). The same report
(``error_report``) is what ``al labels check`` prints.

Modules, in import order (each imports only those above it):

- ``limits``: the limits above, each with its cost, and the column names.
- ``results``: ``LabelRow``, ``LabelError``, ``ParsedLabels`` and the
  ``ErrorCollector`` (keeps MAX_ERRORS_KEPT errors, counts the rest).
- ``rows``: ``RowValidator``, the checks every format shares (ids, labels,
  inert texts, one label per image).
- ``reader``: the bounded ``LineReader`` and ``read_document`` (bytes, NUL,
  UTF-8, size limits, hashing).
- ``strict_json``: duplicate keys, nesting depth, strings never converted.
- ``csv_reader``, ``jsonl_reader``, ``label_studio``: one reader per format;
  ``label_studio`` also writes Label Studio's labelling config and import tasks.
- ``csv_polars``: the polars path for large plain CSV files (imports polars
  only when it runs).
- ``report``: ``error_report`` and ``write_error_report``.
- ``parse``: ``parse_label_file``, format detection and hashing.
"""

from al_core.labels.label_studio import RESOLUTION_RULE, label_studio_config, label_studio_tasks
from al_core.labels.limits import (
    CSV_COLUMNS,
    CSV_REQUIRED,
    FORMATS,
    IMAGE_ID_LEN,
    JSONL_KEYS,
    MAX_ERRORS_KEPT,
    MAX_FIELD_CHARS,
    MAX_FILE_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_DOCUMENT_BYTES,
    MAX_LINE_BYTES,
    MAX_REPORT_ERRORS,
    PREVIEW_CHARS,
    READ_CHUNK,
)
from al_core.labels.parse import parse_label_file
from al_core.labels.report import error_report, write_error_report
from al_core.labels.results import LabelError, LabelRow, ParsedLabels, preview

__all__ = [
    "CSV_COLUMNS", "CSV_REQUIRED", "FORMATS", "IMAGE_ID_LEN", "JSONL_KEYS", "MAX_ERRORS_KEPT", "MAX_FIELD_CHARS",
    "MAX_FILE_BYTES", "MAX_JSON_DEPTH", "MAX_JSON_DOCUMENT_BYTES", "MAX_LINE_BYTES", "MAX_REPORT_ERRORS",
    "PREVIEW_CHARS", "READ_CHUNK", "RESOLUTION_RULE", "LabelError", "LabelRow", "ParsedLabels", "error_report",
    "label_studio_config", "label_studio_tasks", "parse_label_file", "preview", "write_error_report",
]
