"""The catalogue's migration for what the labels bought (al_core.value; docs/sql.md documents every column).

Self-contained DDL: the time columns of ``labels`` (``ADD COLUMN IF NOT EXISTS``: another migration may
add the same ones), the stop set, each probe's predictions, the intervals and the stop rule's kappa per
probe, the cost rates of the project file, and four views:

- ``label_times``: one row per labels row with its time (``seconds``: as delivered, else an upper bound
  from the batch's proposal to the delivery, shared by the delivery's labels answering that batch; a
  relabel answers no batch) and cost;
- ``round_cost``: per round and cumulative labels, skips, annotator hours and cost;
- ``round_value``: per round and metric, the latest probe's metric with its interval, the gain over the
  round before with its interval, the cost per point and the stop rule's kappa, beside ``round_cost``;
- ``annotator_value``: per annotator labels, skips, share skipped, median seconds, hours and cost.
"""

VALUE_MIGRATION: list[str] = [
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS task_id VARCHAR",
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS annotated_at TIMESTAMP",
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS seconds DOUBLE",  # NULL: unknown
    "ALTER TABLE labels ADD COLUMN IF NOT EXISTS seconds_source VARCHAR",  # 'lead_time' | 'column' | 'upper_bound'
    """CREATE TABLE stop_set (             -- the stop rule's fixed sample of the unlabelled pool, drawn once
        image_id VARCHAR PRIMARY KEY, seed BIGINT NOT NULL, drawn_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE probe_predictions (    -- every probe's class for each evaluation and stop-set image
        probe_id VARCHAR NOT NULL,
        subset VARCHAR NOT NULL CHECK (subset IN ('eval', 'stop')),
        image_id VARCHAR NOT NULL,
        label VARCHAR,                     -- the evaluation label it was scored against (NULL for 'stop')
        predicted VARCHAR NOT NULL,
        PRIMARY KEY (probe_id, subset, image_id))""",
    """CREATE TABLE probe_intervals (      -- one row per probe and metric
        probe_id VARCHAR NOT NULL, round INTEGER NOT NULL, metric VARCHAR NOT NULL,
        value DOUBLE, low DOUBLE, high DOUBLE,           -- the metric and its 95 % interval
        method VARCHAR NOT NULL,           -- 'wilson' | 'bootstrap'
        n_eval INTEGER NOT NULL, resamples INTEGER, seed BIGINT,
        prev_probe_id VARCHAR,             -- the previous round's latest probe (NULL: none)
        gain DOUBLE, gain_low DOUBLE, gain_high DOUBLE,  -- paired over the n_paired images both were scored on
        n_paired INTEGER, computed_at TIMESTAMP NOT NULL,
        PRIMARY KEY (probe_id, metric))""",
    """CREATE TABLE probe_stability (      -- the stop rule: agreement with the previous round's probe
        probe_id VARCHAR PRIMARY KEY, round INTEGER NOT NULL, prev_probe_id VARCHAR,
        kappa DOUBLE,                      -- Cohen's kappa on the stop set (NULL: nothing to compare)
        n_stop INTEGER NOT NULL,           -- stop-set images both probes predicted (0: no previous probe)
        computed_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE cost_rates (           -- the project file's cost model, as of the latest evaluation
        annotator VARCHAR,                 -- NULL: everyone not listed
        role VARCHAR, currency VARCHAR NOT NULL,
        per_label DOUBLE NOT NULL, per_hour DOUBLE NOT NULL, overhead DOUBLE NOT NULL,
        updated_at TIMESTAMP NOT NULL)""",
    """CREATE VIEW label_times AS
        WITH answered AS (             -- the batch a label answered: its image's latest earlier query, and no
          SELECT * EXCLUDE (rn) FROM (  -- label of the image since that query before it (a relabel is no answer)
            SELECT l.label_id, q.round AS proposed_round,
                   row_number() OVER (PARTITION BY l.label_id ORDER BY q.round DESC) AS rn
            FROM labels l JOIN queries q ON q.image_id = l.image_id AND q.round < l.round) a
          WHERE rn = 1 AND NOT EXISTS (
            SELECT 1 FROM labels e JOIN labels l2 ON l2.label_id = a.label_id
            WHERE e.image_id = l2.image_id AND e.round > a.proposed_round AND e.label_id < l2.label_id)),
        bound AS (
          SELECT a.label_id, greatest(epoch(l.received_at - r.proposed_at), 0)
                   / count(*) OVER (PARTITION BY l.file_id, a.proposed_round) AS upper_s
          FROM answered a JOIN labels l ON l.label_id = a.label_id JOIN rounds r ON r.round = a.proposed_round),
        timed AS (
          SELECT l.label_id, l.image_id, l.label, l.is_skip, l.round, l.annotator, l.file_id, l.task_id,
                 l.annotated_at, l.received_at, coalesce(l.seconds, b.upper_s) AS seconds,
                 CASE WHEN l.seconds IS NOT NULL THEN l.seconds_source
                      WHEN b.upper_s IS NOT NULL THEN 'upper_bound' END AS seconds_source
          FROM labels l LEFT JOIN bound b ON b.label_id = l.label_id)
        SELECT t.*, coalesce(a.role, d.role) AS role, coalesce(a.currency, d.currency) AS currency,
               coalesce(a.overhead, d.overhead)
                 * (CASE WHEN t.is_skip THEN 0 ELSE coalesce(a.per_label, d.per_label) END
                    + coalesce(a.per_hour, d.per_hour) * coalesce(t.seconds, 0) / 3600) AS cost
        FROM timed t
        LEFT JOIN cost_rates a ON a.annotator = t.annotator
        LEFT JOIN cost_rates d ON d.annotator IS NULL""",
    """CREATE VIEW round_cost AS
        WITH per_round AS (
          SELECT round, count(*) FILTER (WHERE NOT is_skip) AS labels, count(*) FILTER (WHERE is_skip) AS skips,
                 sum(seconds) / 3600 AS hours, count(*) FILTER (WHERE seconds IS NULL) AS labels_untimed,
                 count(*) FILTER (WHERE seconds_source = 'upper_bound') AS labels_upper_bound, sum(cost) AS cost
          FROM label_times GROUP BY round),
        all_rounds AS (SELECT round FROM per_round UNION SELECT round FROM probes UNION SELECT round FROM rounds),
        priced AS (SELECT count(*) > 0 AS any_rate, any_value(currency) AS currency FROM cost_rates),
        one AS (
          SELECT a.round, coalesce(p.labels, 0) AS labels, coalesce(p.skips, 0) AS skips,
                 coalesce(p.hours, 0) AS hours, coalesce(p.labels_untimed, 0) AS labels_untimed,
                 coalesce(p.labels_upper_bound, 0) AS labels_upper_bound,
                 CASE WHEN x.any_rate THEN coalesce(p.cost, 0) END AS cost, x.currency
          FROM all_rounds a LEFT JOIN per_round p ON p.round = a.round CROSS JOIN priced x)
        SELECT round, labels, skips, hours, labels_untimed, labels_upper_bound, cost, currency,
               sum(labels) OVER w AS labels_total, sum(skips) OVER w AS skips_total,
               sum(hours) OVER w AS hours_total, sum(cost) OVER w AS cost_total
        FROM one WINDOW w AS (ORDER BY round ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        ORDER BY round""",
    """CREATE VIEW round_value AS
        WITH latest AS (
          SELECT * EXCLUDE (rn) FROM (
            SELECT probe_id, round, n_labels,
                   row_number() OVER (PARTITION BY round ORDER BY version DESC, trained_at DESC) AS rn
            FROM probes) WHERE rn = 1)
        SELECT c.round, i.metric, p.probe_id, p.n_labels AS probe_n_labels, i.n_eval,
               i.value, i.low, i.high, i.method, i.prev_probe_id, i.gain, i.gain_low, i.gain_high, i.n_paired,
               CASE WHEN i.gain > 0 THEN c.cost / (100 * i.gain) END AS cost_per_point,
               s.kappa, s.n_stop,
               c.labels, c.skips, c.hours, c.cost, c.labels_total, c.skips_total, c.hours_total, c.cost_total,
               c.currency
        FROM round_cost c
        JOIN latest p ON p.round = c.round
        JOIN probe_intervals i ON i.probe_id = p.probe_id
        LEFT JOIN probe_stability s ON s.probe_id = p.probe_id
        ORDER BY c.round, i.metric""",
    """CREATE VIEW annotator_value AS
        SELECT annotator, count(*) FILTER (WHERE NOT is_skip) AS labels, count(*) FILTER (WHERE is_skip) AS skips,
               count(*) FILTER (WHERE is_skip) / count(*) AS share_skipped,
               median(seconds) AS median_seconds, sum(seconds) / 3600 AS hours,
               count(*) FILTER (WHERE seconds IS NULL) AS labels_untimed,
               string_agg(DISTINCT seconds_source, ', ' ORDER BY seconds_source) AS seconds_sources,
               any_value(role) AS role, sum(cost) AS cost, any_value(currency) AS currency
        FROM label_times GROUP BY annotator ORDER BY annotator""",
]
