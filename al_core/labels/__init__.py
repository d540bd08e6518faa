r"""Label files: read and validate what annotators deliver. Pure: never imports dagster, duckdb or torch.

``parse_label_file(path, classes=..., known_image_ids=...)`` reads one delivered
file and returns a ``ParsedLabels``. It never raises on bad content: every
problem becomes a ``LabelError`` naming its line (``None`` for the whole file),
the field, why and, in a Label Studio export, the task id and the annotation
id. **A file with any error is rejected whole**: its ``rows`` are then empty,
so nothing from it can be half-applied. A **warning** (an empty Label Studio
annotation, one annotator answering an image twice) does not reject the file:
it is listed in the file's report and the rest is applied. The sensor, the
ingesting run and ``al labels check`` all call this same function.

Every row is one **answer**: an annotator's class (or the skip label) for one
image, with its annotation id, Label Studio task id, annotation time and time
spent (``seconds``, ``seconds_source``) when the file carries them. Several
answers for one image are all kept (ANSWER_RULE); which of them make the
image's training label is the label history's business
(al_core.catalogue.label_views).

Formats (detected by content; the extension only names the format of an empty
file; ``limits.FORMATS``):

- **CSV** (``csv``): a header row naming the columns, comma-delimited, RFC 4180
  quoting. ``image_id`` and ``label`` are required; ``annotator``,
  ``annotation_id``, ``note`` and ``seconds`` (time spent, a number) are
  optional; any other column is an error.
- **JSON lines** (``jsonl``, first byte ``{``): one object per line with
  ``image_id`` and ``label`` (strings) and optionally ``annotator``,
  ``annotation_id``, ``note`` (strings or null) and ``seconds`` (a number or
  null). Other keys are errors.
- **Every export Label Studio 1.23 writes**: its JSON export (``label_studio``,
  an array of tasks), JSON_MIN (``label_studio_min``), CSV and TSV
  (``label_studio_csv``, ``label_studio_tsv``: recognised by Label Studio's own
  columns, read with its rules; a CSV of the project's columns stays strict),
  and a target storage's files (``label_studio_task``: one task;
  ``label_studio_annotation``: one annotation with its task). ``ls_tasks`` and
  ``ls_rows`` state the rules: a cancelled annotation (the *Skip* button) is a
  skip; an annotation without a choice is ignored with a warning; drafts are
  not answers; every other annotation is an answer.

Several rows of one annotator for one image in one file: the same label is
counted once (``n_duplicates``); different labels are all kept with a warning,
and only the later one (annotation time, else position) counts.

**Large CSV files** (at least POLARS_CSV_MIN_BYTES) are first tried by the
polars path (``csv_polars``): it accepts a file only when it is plain (no
double quote, NUL byte, lone carriage return, invalid UTF-8 or over-long
line, the header on line 1) and passes every check below without a warning,
and then returns exactly the rows the reference reader (``csv_reader``)
returns; any other file goes to the reference reader, which writes every
error. The polars path holds such a file whole once (at most MAX_FILE_BYTES).

Validation, all formats:

- ``image_id``: exactly 64 lowercase hex characters (the image's sha256). This
  also rejects path-like ids (``../x``, ``/etc/passwd``), absurdly long ids
  and SQL metacharacters; the id must also be known (``known_image_ids``).
- ``label``: one of ``classes`` or the skip label, case-sensitive, after
  trimming surrounding whitespace (the only normalisation: every value has its
  surrounding whitespace trimmed, nothing else). A skip-label row has
  ``is_skip=True``.
- JSON values where a string belongs must be strings: a number, boolean, list
  or object is rejected, never converted (Label Studio's integer ids are the
  format's own types and are written as decimal strings).
- ``seconds`` / ``lead_time``: a finite number of seconds, 0 or more.
- ``annotator`` / ``annotation_id`` / ``note`` are inert data: stored verbatim
  (``=cmd``, ``+1``, ``@x`` included), never evaluated, at most
  MAX_FIELD_CHARS characters. A ``=cmd`` label is simply not a class.
- Bytes: NUL bytes, invalid UTF-8 (reported with its byte offset), UTF-16
  files, lines over ``max_line_bytes`` (read with a bounded readline and
  skipped in READ_CHUNK pieces, never held whole), files over ``max_bytes``
  (refused before reading), Label Studio JSON files over
  MAX_JSON_DOCUMENT_BYTES (one JSON document, read whole: Label Studio may
  write it on one line, so the per-line limit does not apply to it), JSON
  nested deeper than MAX_JSON_DEPTH, duplicate keys in one JSON object.
- JSON strings holding a ``\u0000`` or a lone-surrogate escape are errors.
- An empty file, or one without data rows, is an error (a Label Studio file
  whose tasks hold only drafts or empty annotations is not: it is applied with
  nothing in it, and says why).

``sha256`` covers every byte of the file, a refused or skipped part included
(hashed in READ_CHUNK pieces). At most MAX_ERRORS_KEPT errors (and as many
warnings) are kept per file; further ones are only counted.

``write_error_report(parsed, dest)`` writes the report beside a file
(``.errors.json`` for a rejected one, ``.warnings.json`` for an accepted one
with warnings; atomically, through ``al_core.files.atomic``). The same report
(``error_report``) is what ``al labels check`` prints.

Modules, in import order (each imports only those above it):

- ``limits``: the limits above, each with its cost, and the column names.
- ``results``: ``LabelRow``, ``LabelError``, ``ParsedLabels``, ``ReadStats``
  and the ``ErrorCollector`` (keeps MAX_ERRORS_KEPT errors, counts the rest).
- ``rows``: ``RowValidator``, the checks every format shares (ids, labels,
  inert texts, seconds, one answer per annotator and image).
- ``reader``: the bounded ``LineReader`` and ``read_document`` (bytes, NUL,
  UTF-8, size limits, hashing).
- ``strict_json``: duplicate keys, nesting depth, strings never converted, the
  array walker.
- ``csv_reader``, ``jsonl_reader``: the project's own formats.
- ``label_studio``: the writers of Label Studio's labelling config and import
  tasks; ``ls_tasks`` (JSON export, target storage) and ``ls_rows`` (JSON_MIN,
  CSV, TSV): the readers of its exports.
- ``csv_polars``: the polars path for large plain CSV files (imports polars
  only when it runs).
- ``report``: ``error_report`` and ``write_error_report``.
- ``parse``: ``parse_label_file``, format detection and hashing.
"""

from al_core.labels.label_studio import CHOICES_NAME, label_studio_config, label_studio_tasks, task_key
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
from al_core.labels.ls_tasks import ANSWER_RULE
from al_core.labels.parse import parse_label_file
from al_core.labels.report import error_report, write_error_report
from al_core.labels.results import LabelError, LabelRow, ParsedLabels, preview

__all__ = [
    "ANSWER_RULE",
    "CHOICES_NAME",
    "CSV_COLUMNS",
    "CSV_REQUIRED",
    "FORMATS",
    "IMAGE_ID_LEN",
    "JSONL_KEYS",
    "MAX_ERRORS_KEPT",
    "MAX_FIELD_CHARS",
    "MAX_FILE_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_DOCUMENT_BYTES",
    "MAX_LINE_BYTES",
    "MAX_REPORT_ERRORS",
    "PREVIEW_CHARS",
    "READ_CHUNK",
    "LabelError",
    "LabelRow",
    "ParsedLabels",
    "error_report",
    "label_studio_config",
    "label_studio_tasks",
    "parse_label_file",
    "preview",
    "task_key",
    "write_error_report",
]
