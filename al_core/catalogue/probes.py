"""Named queries over the trained probes: ``probes``, ``probe_labels``, ``metrics``."""

# The one rule for "the latest probe of a round": the highest version, then the newest training time.
LATEST_PROBE_ORDER = "version DESC, trained_at DESC"


def latest_probe_of_round(con, round_: int) -> dict | None:
    """The round's latest probe (LATEST_PROBE_ORDER) with its metrics, or None when the round has none."""
    cur = con.execute(
        f"""SELECT p.probe_id, p.round, p.version, p.trigger, p.path, p.sha256, p.config_id, p.n_labels,
                   m.accuracy, m.balanced_accuracy, m.macro_f1, m.n_eval
            FROM probes p LEFT JOIN metrics m USING (probe_id)
            WHERE p.round = ? ORDER BY {LATEST_PROBE_ORDER.replace('version', 'p.version')
                                        .replace('trained_at', 'p.trained_at')} LIMIT 1""", [round_])
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def latest_trained_round(con) -> int | None:
    """The highest round that has a probe, or None before the first probe."""
    return con.execute("SELECT max(round) FROM probes").fetchone()[0]
