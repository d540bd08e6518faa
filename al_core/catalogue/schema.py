"""The catalogue's schema: the DDL of every table and view, one list per schema version.

``MIGRATIONS[v]`` holds the statements that take a database from version
``v - 1`` to ``v``; ``al_core.catalogue.store.Store`` runs each version's list in
one transaction together with the version bump in ``schema_info``. A released
version is never edited: a change is a new version (tests/test_store.py pins the
DDL of each released one). Versions 2 and 4 build round_summary and label_lineage
from the parts in al_core.catalogue.label_views. docs/sql.md documents the
columns of the audit views.
"""

from al_core.catalogue.label_views import MIGRATION_4, lineage_ctes, lineage_joins, round_summary_view
from al_core.catalogue.relabels import RELABEL_MIGRATION
from al_core.catalogue.value_schema import VALUE_MIGRATION

SCHEMA_VERSION = 9
APP_NAME = "al-pipeline"  # schema_info 'app': tells our databases from any other DuckDB file


# Migrations: version -> DDL statements. Each version's statements run in one
# transaction together with the version bump; never edit a released version.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE schema_info (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
        """CREATE TABLE scans (
            scan_id BIGINT PRIMARY KEY,
            source VARCHAR NOT NULL,           -- image root or manifest path
            source_kind VARCHAR NOT NULL,      -- 'root' | 'manifest'
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            n_files BIGINT, n_new BIGINT, n_changed BIGINT, n_unchanged BIGINT,
            n_missing BIGINT, n_corrupt BIGINT, n_ok BIGINT, seconds DOUBLE)""",
        """CREATE TABLE images (
            image_id VARCHAR PRIMARY KEY,      -- sha256 of the file bytes
            size_bytes BIGINT NOT NULL,
            width INTEGER, height INTEGER, format VARCHAR,
            first_seen TIMESTAMP NOT NULL,
            first_scan_id BIGINT NOT NULL)""",
        """CREATE TABLE image_paths (
            path VARCHAR PRIMARY KEY,          -- absolute path (or manifest entry resolved)
            image_id VARCHAR,                  -- NULL for a file that could not be read at all
            size_bytes BIGINT, mtime_ns BIGINT,
            status VARCHAR NOT NULL CHECK (status IN ('ok', 'corrupt', 'missing')),
            error VARCHAR,                     -- decoder / OS message when corrupt
            first_seen TIMESTAMP NOT NULL, last_seen TIMESTAMP NOT NULL,
            last_scan_id BIGINT NOT NULL,
            source VARCHAR NOT NULL)           -- the image root or manifest that lists it""",
        """CREATE TABLE ground_truth (
            image_id VARCHAR NOT NULL, path VARCHAR NOT NULL,
            class_name VARCHAR NOT NULL,
            source VARCHAR NOT NULL,           -- 'folder' | 'manifest'
            PRIMARY KEY (image_id, path))""",
        """CREATE TABLE embedding_configs (
            config_id VARCHAR PRIMARY KEY,
            backbone VARCHAR NOT NULL, weights_sha256 VARCHAR,
            preprocessing VARCHAR NOT NULL,    -- JSON
            dtype VARCHAR NOT NULL, dim INTEGER NOT NULL,
            config VARCHAR NOT NULL,           -- full JSON as given by the backbone
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE embedding_runs (
            run_id VARCHAR PRIMARY KEY, config_id VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
            n_images BIGINT, n_failed BIGINT, images_per_s DOUBLE,
            device VARCHAR, library_versions VARCHAR)""",
        """CREATE TABLE embedding_parts (
            part_id VARCHAR PRIMARY KEY, config_id VARCHAR NOT NULL, shard VARCHAR NOT NULL,
            rel_path VARCHAR NOT NULL,         -- relative to the vectors folder
            n_rows BIGINT NOT NULL, dim INTEGER NOT NULL, sha256 VARCHAR NOT NULL,
            bytes BIGINT NOT NULL, run_id VARCHAR, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE embedding_index (
            config_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL, part_id VARCHAR NOT NULL,
            PRIMARY KEY (config_id, image_id))""",
        """CREATE TABLE embedding_failures (
            config_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL, path VARCHAR,
            error VARCHAR NOT NULL, failed_at TIMESTAMP NOT NULL)""",
        # ---- the labelling loop -------------------------------------------------
        """CREATE TABLE rounds (
            round INTEGER PRIMARY KEY,         -- 0 is the seed pool
            kind VARCHAR NOT NULL CHECK (kind IN ('seed', 'query')),
            strategy VARCHAR NOT NULL, seed BIGINT NOT NULL,
            budget INTEGER NOT NULL,           -- what was proposed
            requested_budget INTEGER NOT NULL, -- what the config asked; larger when the pool or total budget ran out
            config_id VARCHAR NOT NULL,        -- embedding config the selection used
            probe_id VARCHAR,                  -- probe that scored the pool (NULL for the seed pool)
            status VARCHAR NOT NULL CHECK (status IN ('open', 'closed')),
            proposed_at TIMESTAMP NOT NULL, closed_at TIMESTAMP,
            closed_by VARCHAR,                 -- 'answered' | 'manual'
            select_seconds DOUBLE, run_id VARCHAR, note VARCHAR)""",
        """CREATE TABLE queries (
            round INTEGER NOT NULL, rank INTEGER NOT NULL, image_id VARCHAR NOT NULL,
            path VARCHAR NOT NULL, score DOUBLE, strategy VARCHAR NOT NULL,
            PRIMARY KEY (round, image_id))""",
        """CREATE TABLE label_files (
            file_id VARCHAR PRIMARY KEY, sha256 VARCHAR NOT NULL,
            original_name VARCHAR NOT NULL, stored_path VARCHAR,  -- where it was moved (accepted/ or rejected/)
            format VARCHAR,                    -- 'csv' | 'jsonl' | 'label_studio'
            status VARCHAR NOT NULL CHECK (status IN ('accepted', 'duplicate', 'rejected', 'retracted')),
            reason VARCHAR,                    -- rejection summary / duplicate of which file
            n_rows INTEGER, n_applied INTEGER, n_unproposed INTEGER, n_skips INTEGER,
            is_eval BOOLEAN NOT NULL DEFAULT false,
            received_at TIMESTAMP NOT NULL, round INTEGER, run_id VARCHAR)""",
        """CREATE TABLE labels (               -- append-only history; the newest non-retracted row wins
            label_id BIGINT PRIMARY KEY, image_id VARCHAR NOT NULL,
            label VARCHAR NOT NULL,            -- class name, or the configured skip label
            is_skip BOOLEAN NOT NULL, proposed BOOLEAN NOT NULL,   -- false: image was never proposed (flagged)
            file_sha256 VARCHAR NOT NULL, file_id VARCHAR NOT NULL,
            annotation_id VARCHAR, annotator VARCHAR, received_at TIMESTAMP NOT NULL,
            round INTEGER NOT NULL,            -- round during which it was ingested
            line INTEGER, note VARCHAR)""",
        """CREATE TABLE retractions (
            file_sha256 VARCHAR NOT NULL, retracted_at TIMESTAMP NOT NULL, reason VARCHAR,
            effective_round INTEGER NOT NULL)""",
        """CREATE TABLE eval_set (
            image_id VARCHAR PRIMARY KEY, label VARCHAR,  -- NULL until labelled
            source VARCHAR NOT NULL,           -- 'holdout' | 'inbox/eval'
            added_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE probes (
            probe_id VARCHAR PRIMARY KEY, round INTEGER NOT NULL, version INTEGER NOT NULL,
            trigger VARCHAR NOT NULL,          -- 'round' | 'schedule' | 'manual'
            path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, config_id VARCHAR NOT NULL,
            n_labels INTEGER NOT NULL, n_classes INTEGER NOT NULL, seed BIGINT NOT NULL,
            train_seconds DOUBLE, trained_at TIMESTAMP NOT NULL, run_id VARCHAR)""",
        """CREATE TABLE probe_labels (probe_id VARCHAR NOT NULL, label_id BIGINT NOT NULL,
            PRIMARY KEY (probe_id, label_id))""",
        """CREATE TABLE metrics (
            probe_id VARCHAR PRIMARY KEY, round INTEGER NOT NULL,
            accuracy DOUBLE, balanced_accuracy DOUBLE, macro_f1 DOUBLE,
            per_class_recall VARCHAR, confusion VARCHAR,   -- JSON
            n_labels INTEGER NOT NULL, n_eval INTEGER NOT NULL, evaluated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE requests (             -- work asked for by the CLI, launched by the sensor as runs
            request_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL,   -- 'close_round' | 'retry_file'
            arg VARCHAR, created_at TIMESTAMP NOT NULL, done_at TIMESTAMP, run_id VARCHAR)""",
        # newest non-retracted label per image (skips included: they keep an image out of proposals)
        """CREATE VIEW current_labels AS
            SELECT * EXCLUDE (rn) FROM (
              SELECT l.*, row_number() OVER (PARTITION BY l.image_id ORDER BY l.label_id DESC) AS rn
              FROM labels l WHERE l.file_sha256 NOT IN (SELECT file_sha256 FROM retractions)) WHERE rn = 1""",
        """CREATE TABLE asset_outputs (
            asset_key VARCHAR NOT NULL, partition_key VARCHAR NOT NULL,
            run_id VARCHAR, value VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (asset_key, partition_key))""",
    ],
    # Audit views (docs/sql.md documents every column; al_core.reporting.audit computes the same in Python).
    2: [
        # One row per round (a round with a batch, a probe or ingested labels). labels_so_far: training
        # labels as of that round: each image's newest label ingested up to the round, a retracted
        # delivery's labels counting only for rounds before its effective_round, skips excluded.
        # The probe columns are the round's latest probe version and its metrics.
        round_summary_view(
            """label_asof AS (
              SELECT a.round AS at_round, l.is_skip,
                     row_number() OVER (PARTITION BY a.round, l.image_id ORDER BY l.label_id DESC) AS rn
              FROM all_rounds a JOIN labels l ON l.round <= a.round
              WHERE NOT EXISTS (SELECT 1 FROM retractions x
                                WHERE x.file_sha256 = l.file_sha256 AND x.effective_round <= a.round)),
            so_far AS (
              SELECT at_round AS round, count(*) FILTER (WHERE NOT is_skip) AS labels_so_far,
                     count(*) FILTER (WHERE is_skip) AS skips_so_far
              FROM label_asof WHERE rn = 1 GROUP BY at_round)""",
            create="CREATE VIEW",
        ),
        # One row per labels row (the append-only history): the image, the batch that proposed it (the
        # latest query of the image in an earlier round), the label file, whether the row is current,
        # superseded or retracted, and every probe trained with it (a list of structs; unnest() it).
        f"""CREATE VIEW label_lineage AS
            WITH {lineage_ctes()}
            SELECT l.label_id, l.image_id, i.first_seen AS image_first_seen, e.config_ids,
                   l.label, l.is_skip, l.proposed, l.round AS label_round, l.received_at,
                   l.annotator, l.annotation_id, l.line, l.note,
                   l.file_id, f.original_name AS file_name, l.file_sha256, f.status AS file_status,
                   f.stored_path AS file_stored_path,
                   ret.file_sha256 IS NOT NULL AS retracted, ret.retracted_at, ret.retracted_from_round,
                   ret.retraction_reason,
                   c.label_id IS NOT NULL AS is_current,
                   CASE WHEN ret.file_sha256 IS NOT NULL THEN 'retracted'
                        WHEN c.label_id IS NOT NULL THEN 'current' ELSE 'superseded' END AS state,
                   q.round AS proposed_round, q.strategy AS proposed_strategy, q.score AS proposed_score,
                   q.rank AS proposed_rank, q.path AS proposed_path,
                   coalesce(t.n_probes, 0) AS n_probes, coalesce(t.probes, []) AS probes
            FROM labels l
            {lineage_joins("l", " LEFT JOIN current_labels c ON c.label_id = l.label_id")}
            ORDER BY l.image_id, l.label_id""",
    ],
    # The class list each probe was trained with (a JSON list of names, output k is classes[k]): everything that
    # reads a probe's output names it through this list, so a class list edited later relabels nothing. NULL for a
    # probe recorded before version 3 (read as the project's class list of the time it is read).
    3: [
        "ALTER TABLE probes ADD COLUMN classes VARCHAR DEFAULT NULL",
    ],
    # Every annotation kept (task, time, seconds spent), the label policy, disagreements, adjudication
    # (al_core.catalogue.label_views; docs/sql.md).
    4: MIGRATION_4,
    # What the labels bought: label times, stop set, predictions, intervals, cost rates and their views
    # (al_core.catalogue.value_schema; docs/sql.md).
    5: VALUE_MIGRATION,
    # Label quality (al_core.quality; docs/sql.md): suspected label errors and class balance per round,
    # near-duplicates per embedding config, why an image is in a batch, what the near-duplicate rule replaced.
    6: [
        """CREATE TABLE label_quality_runs (   -- one assessment of the training labels, after a round's probe
            probe_id VARCHAR PRIMARY KEY, round INTEGER NOT NULL,
            n_labels INTEGER NOT NULL, n_folds INTEGER NOT NULL, seed BIGINT NOT NULL,
            method VARCHAR NOT NULL,           -- 'self_confidence' | 'crowdlab' (several annotators)
            n_issues INTEGER NOT NULL,         -- labels cleanlab's find_label_issues flags
            label_counts VARCHAR NOT NULL,     -- JSON: class -> training labels
            predicted_share VARCHAR NOT NULL,  -- JSON: class -> share of the pool the probe predicts
            balance_warnings VARCHAR NOT NULL, -- JSON list of sentences
            seconds DOUBLE, computed_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE label_quality (        -- one row per training label of an assessment
            probe_id VARCHAR NOT NULL, round INTEGER NOT NULL, image_id VARCHAR NOT NULL, label_id BIGINT,
            given VARCHAR NOT NULL,            -- the label trained on
            suggested VARCHAR NOT NULL,        -- the class of highest out-of-fold probability
            quality DOUBLE NOT NULL,           -- cleanlab's label quality score in [0, 1]; low = suspicious
            given_prob DOUBLE NOT NULL, suggested_prob DOUBLE NOT NULL,
            is_issue BOOLEAN NOT NULL,         -- cleanlab's find_label_issues flags it
            rank INTEGER NOT NULL,             -- 1 = the lowest quality
            relabel_score DOUBLE,              -- ActiveLab score with several annotators (low: label again first)
            consensus VARCHAR,                 -- cleanlab's CROWDLAB consensus label (several annotators; else NULL)
            consensus_quality DOUBLE,          -- its consensus quality score
            n_annotations INTEGER NOT NULL,
            PRIMARY KEY (probe_id, image_id))""",
        # the suspects of every round's latest assessment, lowest quality first
        """CREATE VIEW label_suspects AS
            WITH latest AS (
              SELECT probe_id FROM (SELECT probe_id, row_number() OVER (PARTITION BY round
                                    ORDER BY computed_at DESC, probe_id DESC) AS rn FROM label_quality_runs)
              WHERE rn = 1)
            SELECT q.round, q.rank, q.image_id, q.label_id, q.given, q.suggested, q.quality, q.given_prob,
                   q.suggested_prob, q.relabel_score, q.consensus, q.consensus_quality, q.n_annotations, q.probe_id,
                   (SELECT min(p.path) FROM image_paths p WHERE p.image_id = q.image_id AND p.status = 'ok') AS path
            FROM label_quality q JOIN latest USING (probe_id) WHERE q.is_issue ORDER BY q.round, q.rank""",
        """CREATE TABLE near_duplicate_runs (  -- the last near-duplicate pass of an embedding config
            config_id VARCHAR PRIMARY KEY, parts_signature VARCHAR NOT NULL, threshold DOUBLE NOT NULL,
            method VARCHAR NOT NULL,           -- 'exact' | 'partitioned' (al_core.quality.duplicates)
            n_images BIGINT NOT NULL, n_pairs BIGINT NOT NULL, seconds DOUBLE, computed_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE near_duplicates (      -- pairs of that pass, image_id < twin_id
            config_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL, twin_id VARCHAR NOT NULL, cosine DOUBLE NOT NULL,
            PRIMARY KEY (config_id, image_id, twin_id))""",
        """CREATE TABLE batch_replacements (   -- picks the near-duplicate rule dropped from a batch
            round INTEGER NOT NULL, dropped_id VARCHAR NOT NULL, twin_id VARCHAR NOT NULL, cosine DOUBLE NOT NULL,
            replacement_id VARCHAR,            -- the image taken instead (NULL: no candidate was left)
            how VARCHAR NOT NULL)              -- 'reselected' | 'uniform' | 'none left'""",
        """CREATE TABLE query_reasons (        -- why an image is in a batch, when not as the strategy's own pick
            round INTEGER NOT NULL, image_id VARCHAR NOT NULL, reason VARCHAR NOT NULL,
            PRIMARY KEY (round, image_id))""",
        # Agreement (al_core.quality.agreement computes the same, plus per-class and Fleiss' kappa): each
        # annotator's latest class label of each image (retracted deliveries and skips left out; a row without
        # an annotator counts as annotator '-').
        """CREATE VIEW annotation_votes AS
            SELECT image_id, annotator, label, label_id, round FROM (
              SELECT l.image_id, coalesce(l.annotator, '-') AS annotator, l.label, l.is_skip, l.label_id, l.round,
                     row_number() OVER (PARTITION BY l.image_id, coalesce(l.annotator, '-')
                                        ORDER BY l.label_id DESC) AS rn
              FROM labels l WHERE l.file_sha256 NOT IN (SELECT file_sha256 FROM retractions))
            WHERE rn = 1 AND NOT is_skip""",
        # images with two or more votes: the votes, the agreement (share of agreeing annotator pairs), the final label
        """CREATE VIEW image_agreement AS
            WITH per_class AS (SELECT image_id, label, count(*) AS n FROM annotation_votes GROUP BY 1, 2),
            per_image AS (
              SELECT image_id, sum(n) AS n_votes, sum(n * (n - 1)) AS agreeing_pairs,
                     arg_max(label, n) AS majority, max(n) AS majority_votes,
                     list({'label': label, 'votes': n} ORDER BY label) AS votes
              FROM per_class GROUP BY image_id)
            SELECT p.image_id, p.n_votes, p.votes, p.majority, p.majority_votes,
                   p.agreeing_pairs / (p.n_votes * (p.n_votes - 1)) AS agreement, c.label AS final
            FROM per_image p LEFT JOIN current_labels c ON c.image_id = p.image_id
            WHERE p.n_votes >= 2 ORDER BY agreement, p.image_id""",
        # per annotator: votes on images with a final (current, non-skip) label, and the share equal to it
        """CREATE VIEW annotator_agreement AS
            SELECT v.annotator, count(*) AS n_votes, avg(CASE WHEN v.label = c.label THEN 1.0 ELSE 0.0 END)
                   AS agreement_with_final
            FROM annotation_votes v JOIN current_labels c ON c.image_id = v.image_id AND NOT c.is_skip
            GROUP BY v.annotator ORDER BY v.annotator""",
        # Cohen's kappa of every annotator pair over the images both labelled: (p_o - p_e) / (1 - p_e)
        """CREATE VIEW annotator_pair_kappa AS
            WITH common AS (
              SELECT a.annotator AS a, b.annotator AS b, a.label AS la, b.label AS lb
              FROM annotation_votes a JOIN annotation_votes b ON a.image_id = b.image_id AND a.annotator < b.annotator),
            n AS (SELECT a, b, count(*) AS n_common, avg(CASE WHEN la = lb THEN 1.0 ELSE 0.0 END) AS p_o
                  FROM common GROUP BY a, b),
            ma AS (SELECT a, b, la AS label, count(*) AS k FROM common GROUP BY 1, 2, 3),
            mb AS (SELECT a, b, lb AS label, count(*) AS k FROM common GROUP BY 1, 2, 3),
            pe AS (SELECT n.a, n.b, coalesce(sum(ma.k * mb.k), 0) / (n.n_common * n.n_common) AS p_e FROM n
                   LEFT JOIN ma ON ma.a = n.a AND ma.b = n.b
                   LEFT JOIN mb ON mb.a = n.a AND mb.b = n.b AND mb.label = ma.label
                   GROUP BY n.a, n.b, n.n_common)
            SELECT n.a, n.b, n.n_common, n.p_o AS observed_agreement, pe.p_e AS chance_agreement,
                   CASE WHEN pe.p_e < 1 THEN (n.p_o - pe.p_e) / (1 - pe.p_e) END AS kappa
            FROM n JOIN pe ON pe.a = n.a AND pe.b = n.b ORDER BY n.a, n.b""",
        # the same bytes under several readable paths (one image, one id)
        """CREATE VIEW exact_duplicates AS
            SELECT image_id, count(*) AS n_paths, list(path ORDER BY path) AS paths FROM image_paths
            WHERE status = 'ok' AND image_id IS NOT NULL GROUP BY image_id HAVING count(*) > 1""",
    ],
    # An image file whose name is not UTF-8: ``path`` holds its printable name (undecodable bytes as \xNN,
    # al_core.files.safe.printable_name) and ``fs_path`` the path's bytes, which open the file. NULL when ``path``
    # itself opens the file (every UTF-8 name).
    7: [
        "ALTER TABLE image_paths ADD COLUMN fs_path BLOB DEFAULT NULL",
    ],
    # A class's labels mapped to another class (`al labels relabel OLD NEW`) without rewriting the history, and
    # the evaluation images per class of each evaluation (al_core.catalogue.relabels).
    8: RELABEL_MIGRATION,
    # The fingerprint of what a scan listed (al_core.ingest.fingerprint: path, size, mtime, ctime and mode of every
    # candidate file, no file opened), written in the scan's own transaction: the inbox sensor queues an ingest run
    # before a round only when the source's fingerprint now differs from its last scan's. NULL for a scan recorded
    # before version 9 (the next round ingests, as before).
    9: [
        "ALTER TABLE scans ADD COLUMN fingerprint VARCHAR DEFAULT NULL",
    ],
}


def table_names(con) -> set[str]:
    """Names of the base tables of the database (views excluded)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE'"
    ).fetchall()
    return {r[0] for r in rows}
