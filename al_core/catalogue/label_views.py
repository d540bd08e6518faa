"""Schema version 4: every annotation kept with its annotator, time and time spent; the label policy as SQL.

``MIGRATION_4`` is the DDL of that version (al_core.catalogue.store.MIGRATIONS[4]); docs/sql.md documents every
column. The definitions, each written once and used by the loop, the audit and analysts alike:

- an **answer** is a labels row (a class or a skip). Its *window* is the batch it answers: the image's latest
  ``queries`` round before the label's round (-1 for an image never proposed). Among an image's answers, those of
  its latest window count; in a window, each annotator's latest answer counts and replaces their earlier ones.
  Latest (ANSWER_ORDER): the newer delivery (``received_at``), then in one delivery the later annotation time
  (``annotated_at``; an undated answer is older than a dated one), then the later row (``label_id``). So an update
  in Label Studio, a newer delivery and a re-proposal (adjudication) all work through the history; nothing is
  deleted. Rows of a retracted delivery never
  count. A Label Studio user id is read as the email the ``annotators`` table knows for it.
- **the training label of an image** (``image_labels``) follows the policy in ``label_settings`` (default
  ``latest``) over the image's counting answers. Skips never vote: ``latest``: the latest answer (a skip there means
  skipped); ``majority``: the most frequent class (ties: the one answered last); ``unanimous``: the one class when
  all agree, else the image is ``disputed`` (no training label; queued for adjudication). Only skips: ``skipped``.
- **an image of batch r is answered** (``batch_answers``) when it has an answer ingested after the batch was
  proposed (``labels.round > r``): a skip or a disputed answer counts.
- **a disagreement** (``label_disagreements``): a window whose annotators' answers hold two or more classes.

Every view is written as a table macro of a round (``*_at(at_round)``: what was known at the end of that round,
a retracted delivery counting for rounds before its ``effective_round``), and the view is the macro at
``NOW_ROUND``, so the as-of counts of ``round_summary`` use the same definition.
"""

NOW_ROUND = 2147483647  # the largest INTEGER: every round (what the views show)
ANSWER_ORDER = "received_at DESC, annotated_at DESC NULLS LAST, label_id DESC"  # newest answer first
OLDEST_FIRST = "received_at, annotated_at NULLS FIRST, label_id"  # the same order, oldest answer first
DEFAULT_POLICY = "latest"  # al_core.config.schema.LabelsConfig.policy's default (tests/test_label_policy.py checks it)

# The pairs (image, at_round) a macro evaluates: with ``history`` false every answered image as of ``as_of``;
# with it true, every round at which an image's answers can change (a round that ingested one of its labels, a
# retraction of one of them taking effect), which is all round_summary needs.
_PAIRS = """
ret AS (
  SELECT file_sha256, min(effective_round) AS retracted_from FROM retractions GROUP BY file_sha256),
pairs AS (
  SELECT DISTINCT image_id, as_of AS at_round FROM labels WHERE NOT history AND round <= as_of
  UNION
  SELECT DISTINCT image_id, round AS at_round FROM labels WHERE history
  UNION
  SELECT DISTINCT l.image_id, x.retracted_from AS at_round FROM labels l JOIN ret x ON x.file_sha256 = l.file_sha256
  WHERE history)"""

_ANSWERS_ASOF = f"""
CREATE MACRO answers_asof(as_of, history) AS TABLE
WITH {_PAIRS},
win AS (
  SELECT l.label_id, max(q.round) AS answers_round
  FROM labels l JOIN queries q ON q.image_id = l.image_id AND q.round < l.round GROUP BY l.label_id),
base AS (
  SELECT p.at_round, l.label_id, l.image_id, l.label, l.is_skip, l.proposed, l.round AS label_round, l.received_at,
         l.annotated_at, coalesce(l.annotated_at, l.received_at) AS answered_at,
         coalesce(u.email, l.annotator) AS annotator, l.annotator AS annotator_as_delivered,
         l.annotation_id, l.task_id, l.seconds, l.seconds_source, l.file_id, l.file_sha256, l.line, l.note,
         w.answers_round, coalesce(w.answers_round, -1) AS answer_window,
         coalesce(x.retracted_from <= p.at_round, false) AS retracted
  FROM pairs p
  JOIN labels l ON l.image_id = p.image_id AND l.round <= p.at_round
  LEFT JOIN label_files f ON f.file_id = l.file_id
  LEFT JOIN annotators u ON u.user_id = l.annotator AND starts_with(f.format, 'label_studio')
  LEFT JOIN win w ON w.label_id = l.label_id
  LEFT JOIN ret x ON x.file_sha256 = l.file_sha256),
ranked AS (
  SELECT *,
         row_number() OVER (PARTITION BY at_round, image_id, retracted, answer_window, annotator
                            ORDER BY {ANSWER_ORDER}) AS rank_in_window,
         max(answer_window) FILTER (WHERE NOT retracted) OVER (PARTITION BY at_round, image_id) AS latest_window
  FROM base)
SELECT * EXCLUDE (latest_window),
       CASE WHEN retracted THEN 'retracted'
            WHEN answer_window = latest_window AND rank_in_window = 1 THEN 'current'
            ELSE 'superseded' END AS state,
       CASE WHEN retracted OR (answer_window = latest_window AND rank_in_window = 1) THEN NULL
            WHEN rank_in_window > 1 THEN 'a later answer by the same annotator'
            ELSE 'the image was proposed again and answered' END AS superseded_because
FROM ranked"""

# Each annotator counts once per image (rank_in_window = 1), so n_answers is also the number of annotators.
_IMAGE_LABELS_ASOF = f"""
CREATE MACRO image_labels_asof(as_of, history) AS TABLE
WITH cur AS (
  SELECT *, row_number() OVER (PARTITION BY at_round, image_id ORDER BY {ANSWER_ORDER}) AS recency
  FROM answers_asof(as_of, history) WHERE state = 'current'),
pol AS (SELECT coalesce(max(value) FILTER (WHERE name = 'policy'), '{DEFAULT_POLICY}') AS policy FROM label_settings),
votes AS (
  SELECT at_round, image_id, label, count(*) AS n, min(recency) AS recency, arg_min(label_id, recency) AS label_id
  FROM cur WHERE NOT is_skip GROUP BY at_round, image_id, label),
top AS (
  SELECT at_round, image_id, count(*) AS n_classes, arg_min(label, (-n, recency)) AS majority_label,
         arg_min(label_id, (-n, recency)) AS majority_label_id, max(n) AS majority_votes
  FROM votes GROUP BY at_round, image_id),
img AS (
  SELECT at_round, image_id, count(*) AS n_answers, count(*) FILTER (WHERE is_skip) AS n_skips,
         arg_min(label, recency) AS latest_label, arg_min(is_skip, recency) AS latest_is_skip,
         arg_min(label_id, recency) AS latest_label_id, max(answer_window) AS answer_window,
         max(label_round) AS label_round
  FROM cur GROUP BY at_round, image_id),
decided AS (
  SELECT i.*, coalesce(t.n_classes, 0) AS n_classes, t.majority_label, t.majority_label_id, t.majority_votes,
         p.policy,
         CASE WHEN p.policy = 'latest' THEN CASE WHEN i.latest_is_skip THEN 'skipped' ELSE 'labelled' END
              WHEN t.n_classes IS NULL THEN 'skipped'
              WHEN p.policy = 'unanimous' AND t.n_classes > 1 THEN 'disputed'
              ELSE 'labelled' END AS status
  FROM img i CROSS JOIN pol p LEFT JOIN top t ON t.at_round = i.at_round AND t.image_id = i.image_id)
SELECT at_round, image_id, status,
       CASE WHEN status <> 'labelled' THEN NULL WHEN policy = 'latest' THEN latest_label
            ELSE majority_label END AS label,
       CASE WHEN status = 'disputed' THEN NULL WHEN status = 'skipped' OR policy = 'latest' THEN latest_label_id
            ELSE majority_label_id END AS label_id,
       policy, n_classes > 1 AS disagreement, n_answers, n_skips, n_classes, n_answers AS n_annotators,
       latest_label, majority_label, majority_votes,
       CASE WHEN answer_window < 0 THEN NULL ELSE answer_window END AS answers_round, label_round
FROM decided"""

# Answered: read from the base tables (the sensor asks it at every tick), with the answers view's rule for a
# retracted row (any retraction: it never counts now).
_BATCH_ANSWERS = """
CREATE VIEW batch_answers AS
WITH live AS (
  SELECT image_id, round, is_skip FROM labels WHERE file_sha256 NOT IN (SELECT file_sha256 FROM retractions))
SELECT q.round, q.rank, q.image_id, q.path, q.strategy, r.status AS batch_status,
       count(a.image_id) > 0 AS answered, count(a.image_id) AS n_answers,
       count(a.image_id) FILTER (WHERE a.is_skip) AS n_skips,
       count(a.image_id) > 0 AND bool_and(a.is_skip) AS skipped_only
FROM queries q
LEFT JOIN rounds r ON r.round = q.round
LEFT JOIN live a ON a.image_id = q.image_id AND a.round > q.round
GROUP BY q.round, q.rank, q.image_id, q.path, q.strategy, r.status"""

_DISAGREEMENTS = """
CREATE VIEW label_disagreements AS
WITH counted AS (
  SELECT image_id, answer_window FROM answers WHERE NOT retracted AND rank_in_window = 1
  GROUP BY image_id, answer_window HAVING count(DISTINCT label) FILTER (WHERE NOT is_skip) > 1),
w AS (  -- the answers of those windows only: lists are built for the few windows that disagree
  SELECT a.image_id, a.answer_window, any_value(a.answers_round) AS answers_round,
         max(a.label_round) AS label_round, count(DISTINCT a.label) FILTER (WHERE NOT a.is_skip) AS n_classes,
         list(DISTINCT a.label ORDER BY a.label) FILTER (WHERE NOT a.is_skip) AS classes,
         count(DISTINCT a.annotator) + (count(*) FILTER (WHERE a.annotator IS NULL) > 0)::INTEGER AS n_annotators,
         list({'annotator': a.annotator, 'label': a.label, 'is_skip': a.is_skip, 'label_id': a.label_id,
               'annotation_id': a.annotation_id, 'task_id': a.task_id, 'answered_at': a.answered_at}
              ORDER BY a.received_at, a.annotated_at NULLS FIRST, a.label_id) AS answers,  -- OLDEST_FIRST
         bool_or(a.state = 'current') AS is_current
  FROM answers a JOIN counted c ON c.image_id = a.image_id AND c.answer_window = a.answer_window
  WHERE NOT a.retracted AND a.rank_in_window = 1 GROUP BY a.image_id, a.answer_window)
SELECT w.image_id, w.answers_round, w.label_round, w.n_classes, w.classes, w.n_annotators, w.answers, w.is_current,
       i.policy, i.status AS image_status, i.label AS training_label,
       CASE WHEN NOT w.is_current THEN 'proposed again and answered'
            WHEN i.status = 'disputed' THEN 'disputed: queued for adjudication'
            ELSE 'resolved by the ' || i.policy || ' policy' END AS resolution
FROM w LEFT JOIN image_labels i ON i.image_id = w.image_id"""

_ADJUDICATION_QUEUE = """
CREATE VIEW adjudication_queue AS
SELECT i.image_id, i.label_round, i.answers_round, i.n_classes
FROM image_labels i
WHERE i.status = 'disputed'
  AND i.image_id NOT IN (SELECT image_id FROM eval_set)
  AND NOT EXISTS (SELECT 1 FROM queries q JOIN rounds r ON r.round = q.round
                  WHERE r.status = 'open' AND q.image_id = i.image_id AND q.round > coalesce(i.answers_round, -1))
ORDER BY i.label_round, i.image_id"""

# round_summary and label_lineage, as versions 2 (al_core.catalogue.schema.MIGRATIONS[2]) and 4 write them: the
# parts both versions share are written once here. Both versions are released: an edit here must leave their DDL as
# it is (tests/test_store.py pins every released version); a version that changes a part writes its own.


def round_summary_view(so_far: str, extra_columns: str = "", *, create: str = "CREATE OR REPLACE VIEW") -> str:
    """The ``round_summary`` view: one row per round (a round with a batch, a probe or ingested labels) with its
    batch, the labels ingested in it, its latest probe version (and how many there are) with that probe's metrics
    and the labels so far as ``so_far`` counts them: CTEs over ``all_rounds`` ending in ``so_far(round,
    labels_so_far, skips_so_far, ...)``. ``extra_columns`` (", s.x AS x, ...") follow ``note``."""
    return f"""
{create} round_summary AS
WITH all_rounds AS (
  SELECT round FROM rounds UNION SELECT round FROM probes UNION SELECT round FROM labels),
{so_far},
ingested AS (SELECT round, count(*) AS labels_ingested FROM labels GROUP BY round),
latest_probe AS (
  SELECT * EXCLUDE (rn) FROM (
    SELECT p.*, count(*) OVER (PARTITION BY p.round) AS n_probes,
           row_number() OVER (PARTITION BY p.round ORDER BY p.version DESC, p.trained_at DESC) AS rn
    FROM probes p) WHERE rn = 1)
SELECT a.round, r.kind,
       coalesce(s.labels_so_far, 0) AS labels_so_far, coalesce(s.skips_so_far, 0) AS skips_so_far,
       coalesce(i.labels_ingested, 0) AS labels_ingested,
       r.strategy, r.seed, r.budget, r.requested_budget, r.config_id,
       p.probe_id, p.version AS probe_version, p.trigger AS probe_trigger,
       p.n_labels AS probe_n_labels, coalesce(p.n_probes, 0) AS n_probes,
       m.accuracy, m.balanced_accuracy, m.macro_f1, m.n_eval,
       r.proposed_at, m.evaluated_at, coalesce(r.status, 'not proposed') AS status,
       r.closed_at, r.closed_by, r.note{extra_columns}
FROM all_rounds a
LEFT JOIN rounds r ON r.round = a.round
LEFT JOIN so_far s ON s.round = a.round
LEFT JOIN ingested i ON i.round = a.round
LEFT JOIN latest_probe p ON p.round = a.round
LEFT JOIN metrics m ON m.probe_id = p.probe_id
ORDER BY a.round"""


def lineage_ctes(proposal_columns: str = "") -> str:
    """The CTEs of the ``label_lineage`` view: ``ret`` (each retracted delivery: when, from which round, why),
    ``proposal`` (each labels row's batch: its image's latest query in an earlier round; round, rank, score,
    strategy, path, then ``proposal_columns``), ``trained`` (the probes trained with each labels row, a list of
    structs) and ``emb`` (each image's embedding configs)."""
    return f"""ret AS (
  SELECT file_sha256, min(retracted_at) AS retracted_at, min(effective_round) AS retracted_from_round,
         string_agg(reason, '; ') AS retraction_reason
  FROM retractions GROUP BY file_sha256),
proposal AS (
  SELECT * EXCLUDE (rn) FROM (
    SELECT l.label_id, q.round, q.rank, q.score, q.strategy, q.path,{proposal_columns}
           row_number() OVER (PARTITION BY l.label_id ORDER BY q.round DESC) AS rn
    FROM labels l JOIN queries q ON q.image_id = l.image_id AND q.round < l.round) WHERE rn = 1),
trained AS (
  SELECT pl.label_id, count(*) AS n_probes,
         list({{'probe_id': p.probe_id, 'round': p.round, 'version': p.version, 'trigger': p.trigger,
               'sha256': p.sha256, 'accuracy': m.accuracy, 'balanced_accuracy': m.balanced_accuracy}}
              ORDER BY p.round, p.version, p.probe_id) AS probes
  FROM probe_labels pl JOIN probes p ON p.probe_id = pl.probe_id
  LEFT JOIN metrics m ON m.probe_id = p.probe_id
  GROUP BY pl.label_id),
emb AS (
  SELECT image_id, list(config_id ORDER BY config_id) AS config_ids FROM embedding_index GROUP BY image_id)"""


def lineage_joins(row: str, state_join: str = "") -> str:
    """The joins of ``label_lineage`` to the labels rows aliased ``row``: the image (``i``), its embedding configs
    (``e``), the label file (``f``), the delivery's retraction (``ret``), then ``state_join`` (version 2 joins
    current_labels there; version 4 reads a row's state from ``answers``), the batch (``q``) and the probes trained
    with the row (``t``)."""
    return f"""LEFT JOIN images i ON i.image_id = {row}.image_id
LEFT JOIN emb e ON e.image_id = {row}.image_id
LEFT JOIN label_files f ON f.file_id = {row}.file_id
LEFT JOIN ret ON ret.file_sha256 = {row}.file_sha256{state_join}
LEFT JOIN proposal q ON q.label_id = {row}.label_id
LEFT JOIN trained t ON t.label_id = {row}.label_id"""


_ROUND_SUMMARY = round_summary_view(
    """-- each image's state from every round its answers can change until the next: counts per round are running sums
-- of the changes (one pass over the images' states, not one per round)
hist AS (
  SELECT p.image_id, p.at_round, coalesce(h.status, 'none') AS status, coalesce(h.disagreement, false) AS dis
  FROM (SELECT image_id, at_round FROM answers_asof(0, true) GROUP BY ALL) p
  LEFT JOIN image_labels_asof(0, true) h ON h.image_id = p.image_id AND h.at_round = p.at_round),
spans AS (
  SELECT *, lead(at_round) OVER (PARTITION BY image_id ORDER BY at_round) AS until FROM hist),
deltas AS (
  SELECT at_round AS round, status, dis, 1 AS d FROM spans
  UNION ALL SELECT until, status, dis, -1 FROM spans WHERE until IS NOT NULL),
per_round AS (
  SELECT round, sum(d) FILTER (WHERE status = 'labelled') AS l, sum(d) FILTER (WHERE status = 'skipped') AS s,
         sum(d) FILTER (WHERE status = 'disputed') AS x, sum(d) FILTER (WHERE dis) AS g
  FROM deltas GROUP BY round),
so_far AS (
  SELECT r.round,
         (sum(coalesce(p.l, 0)) OVER w)::BIGINT AS labels_so_far,
         (sum(coalesce(p.s, 0)) OVER w)::BIGINT AS skips_so_far,
         (sum(coalesce(p.x, 0)) OVER w)::BIGINT AS disputed_so_far,
         (sum(coalesce(p.g, 0)) OVER w)::BIGINT AS disagreements_so_far
  FROM (SELECT round FROM all_rounds UNION SELECT round FROM per_round) r LEFT JOIN per_round p ON p.round = r.round
  WINDOW w AS (ORDER BY r.round))""",
    ", coalesce(s.disputed_so_far, 0) AS disputed_so_far, coalesce(s.disagreements_so_far, 0) AS disagreements_so_far",
)

_LABEL_LINEAGE = f"""
CREATE OR REPLACE VIEW label_lineage AS
WITH {lineage_ctes(" q.predicted, q.predicted_score,")},
windows AS (
  SELECT image_id, answer_window, count(DISTINCT label) FILTER (WHERE NOT is_skip) > 1 AS disagreement
  FROM answers WHERE NOT retracted AND rank_in_window = 1 GROUP BY image_id, answer_window)
SELECT a.label_id, a.image_id, i.first_seen AS image_first_seen, e.config_ids,
       a.label, a.is_skip, a.proposed, a.label_round, a.received_at,
       a.annotator, a.annotation_id, a.line, a.note,
       a.file_id, f.original_name AS file_name, a.file_sha256, f.status AS file_status,
       f.stored_path AS file_stored_path,
       ret.file_sha256 IS NOT NULL AS retracted, ret.retracted_at, ret.retracted_from_round,
       ret.retraction_reason,
       a.state = 'current' AS is_current, a.state,
       q.round AS proposed_round, q.strategy AS proposed_strategy, q.score AS proposed_score,
       q.rank AS proposed_rank, q.path AS proposed_path,
       coalesce(t.n_probes, 0) AS n_probes, coalesce(t.probes, []) AS probes,
       a.annotator_as_delivered, a.task_id, a.annotated_at, a.seconds, a.seconds_source, a.superseded_because,
       coalesce(il.label_id = a.label_id, false) AS decides, il.status AS image_status, il.label AS training_label,
       il.policy, coalesce(w.disagreement AND NOT a.retracted, false) AS disagreement,
       q.predicted AS proposed_prediction, q.predicted_score AS proposed_prediction_score
FROM answers a
{lineage_joins("a")}
LEFT JOIN image_labels il ON il.image_id = a.image_id
LEFT JOIN windows w ON w.image_id = a.image_id AND w.answer_window = a.answer_window
ORDER BY a.image_id, a.label_id"""

MIGRATION_4: list[str] = [
    # every annotation with its task, its time and the time spent (docs/sql.md, "labels")
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS task_id VARCHAR",
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS annotated_at TIMESTAMP",
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS seconds DOUBLE",
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS seconds_source VARCHAR",
    "ALTER TABLE label_files ADD COLUMN IF NOT EXISTS n_warnings INTEGER DEFAULT 0",
    # the probe's guess when the batch was proposed (the Label Studio pre-label)
    "ALTER TABLE queries ADD COLUMN IF NOT EXISTS predicted VARCHAR",
    "ALTER TABLE queries ADD COLUMN IF NOT EXISTS predicted_score DOUBLE",
    # name -> value: 'policy' (labels.policy, written by the loop's steps)
    """CREATE TABLE IF NOT EXISTS label_settings (
        name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL, set_at TIMESTAMP NOT NULL)""",
    # Label Studio user id -> email (from exports that carry both, or looked up through the API)
    """CREATE TABLE IF NOT EXISTS annotators (
        user_id VARCHAR PRIMARY KEY, email VARCHAR NOT NULL, source VARCHAR NOT NULL, seen_at TIMESTAMP NOT NULL)""",
    _ANSWERS_ASOF,
    _IMAGE_LABELS_ASOF,
    "CREATE MACRO answers_at(as_of) AS TABLE SELECT * EXCLUDE (at_round) FROM answers_asof(as_of, false)",
    "CREATE MACRO image_labels_at(as_of) AS TABLE SELECT * EXCLUDE (at_round) FROM image_labels_asof(as_of, false)",
    f"CREATE VIEW answers AS SELECT * FROM answers_at({NOW_ROUND})",
    f"CREATE VIEW image_labels AS SELECT * FROM image_labels_at({NOW_ROUND})",
    # the labels row each image's training label (or skip) comes from; disputed images have none
    """CREATE OR REPLACE VIEW current_labels AS
        SELECT l.* FROM labels l JOIN image_labels i ON i.label_id = l.label_id""",
    _BATCH_ANSWERS,
    _DISAGREEMENTS,
    _ADJUDICATION_QUEUE,
    _ROUND_SUMMARY,
    _LABEL_LINEAGE,
]
