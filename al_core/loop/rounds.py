"""The labelling loop, without Dagster: propose, ingest labels, train, evaluate.

Rounds (see docs/labelling-loop.md):

- Round 0 proposes the seed pool (batch 0) with the seed strategy.
- Round r >= 1 ingests the labels that answer batch r-1 (``labels.round = r``).
  Once batch r-1 is answered to ``selection.answered_fraction`` (or closed by
  hand), the same run trains probe r on every label so far, evaluates it, and
  proposes batch r with the query strategy.

Every table write below is one transaction; outbox files are written to a
temporary name and renamed; label files are moved only after their rows are
committed (a file found in the inbox whose bytes are already committed is
recognised as such and moved without applying anything twice).
"""

import datetime as _dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.catalogue.store import Store, now

INBOX_SUFFIXES = (".csv", ".jsonl", ".json")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


class LoopError(RuntimeError):
    """The loop cannot do what was asked; the message says why and what to do."""


# ----------------------------------------------------------------------------- files
def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def list_inbox(inbox: Path, settle_s: float = 2.0, now_s: float | None = None) -> list[Path]:
    """Label files ready to read, ordered by (mtime_ns, name).

    The rule for a file still being written: names starting with '.' or ending
    in .tmp/.part/... are never read (write there, then rename), and a file
    modified less than ``settle_s`` seconds ago is left for the next tick.
    """
    if not inbox.is_dir():
        return []
    t = time.time() if now_s is None else now_s
    out = []
    for e in os.scandir(inbox):
        if not e.is_file(follow_symlinks=False) or e.name.startswith("."):
            continue
        low = e.name.lower()
        if low.endswith(IGNORED_SUFFIXES) or not low.endswith(INBOX_SUFFIXES) or low.endswith(".errors.json"):
            continue
        st = e.stat(follow_symlinks=False)
        if t - st.st_mtime < settle_s:
            continue
        out.append((st.st_mtime_ns, e.name, Path(e.path)))
    return [p for _, _, p in sorted(out)]


# ----------------------------------------------------------------------------- state
@dataclass
class LoopState:
    last_round: int | None  # highest proposed batch, None before the seed pool
    open_round: int | None  # batch still waiting for labels
    n_proposed_total: int
    budget_spent: bool

    @property
    def label_round(self) -> int:
        """The round partition that incoming labels belong to."""
        return 0 if self.last_round is None else self.last_round + 1


def loop_state(con, cfg: ProjectConfig) -> LoopState:
    last, proposed = con.execute("SELECT max(round), coalesce(sum(budget), 0) FROM rounds").fetchone()
    open_ = con.execute("SELECT max(round) FROM rounds WHERE status = 'open'").fetchone()[0]
    return LoopState(last, open_, int(proposed), int(proposed) >= cfg.selection.total_budget)


def answered(con, round_: int) -> tuple[int, int]:
    """(answered, proposed) images of batch ``round_``; a skip counts as an answer."""
    n_prop, n_ans = con.execute(
        """SELECT count(*), count(c.image_id) FROM queries q
           LEFT JOIN current_labels c ON c.image_id = q.image_id WHERE q.round = ?""", [round_]).fetchone()
    return int(n_ans), int(n_prop)


# ----------------------------------------------------------------------------- pool
@dataclass
class Pool:
    config_id: str
    image_ids: np.ndarray
    features: np.ndarray
    index: dict
    classes: tuple[str, ...]
    labeled: np.ndarray  # row indices with a training label
    labels: np.ndarray  # class index per labeled row
    label_ids: list[int]  # labels.label_id per labeled row
    candidates: np.ndarray  # rows that may be proposed
    n_excluded: dict = field(default_factory=dict)


# One round run loads the pool in three steps (probe, metrics, query set); the
# vectors are kept for the next step of the same process as long as the
# catalogue's part list for the config is unchanged.
EMBEDDINGS_CACHE_ENTRIES = 1  # one N x D float32 matrix: 100,000 x 1280 x 4 B = 512 MB
_emb_cache: dict = {}


def _embeddings(store: Store, config_id: str):
    sig = store.fetch("SELECT count(*), coalesce(sum(n_rows), 0), max(part_id) FROM embedding_parts "
                      "WHERE config_id = ?", [config_id])[0]
    key = (str(store.db_path), config_id, sig)
    if key not in _emb_cache:
        _emb_cache.clear()  # EMBEDDINGS_CACHE_ENTRIES = 1
        emb = store.load_embeddings(config_id)
        emb.features.setflags(write=False)  # shared between steps: nobody may modify it
        _emb_cache[key] = emb
    return _emb_cache[key]


def load_pool(store: Store, cfg: ProjectConfig, config_id: str, classes: Sequence[str]) -> Pool:
    emb = _embeddings(store, config_id)
    if len(emb) == 0:
        raise LoopError(f"no embeddings for config {config_id}: materialise `embeddings` (make demo / al ingest) first")
    index = {iid: i for i, iid in enumerate(emb.image_ids)}
    cls_index = {c: k for k, c in enumerate(classes)}
    with store.connect(read_only=True, view=False) as con:
        cur = con.execute("SELECT image_id, label, is_skip, label_id FROM current_labels").fetchall()
        eval_ids = {r[0] for r in con.execute("SELECT image_id FROM eval_set").fetchall()}
        ok_ids = {r[0] for r in con.execute("SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'").fetchall()}
        proposed = {r[0] for r in con.execute("SELECT DISTINCT image_id FROM queries").fetchall()}
    labelled_any = set()
    lab_rows, lab_cls, lab_ids = [], [], []
    for iid, label, is_skip, label_id in cur:
        labelled_any.add(iid)
        if is_skip or iid in eval_ids or iid not in index or label not in cls_index:
            continue
        lab_rows.append(index[iid])
        lab_cls.append(cls_index[label])
        lab_ids.append(int(label_id))
    order = np.argsort(lab_rows, kind="stable")
    labeled = np.asarray(lab_rows, dtype=np.int64)[order]
    labels = np.asarray(lab_cls, dtype=np.int64)[order]
    label_ids = [lab_ids[i] for i in order]
    pending = proposed - labelled_any
    excluded = labelled_any | eval_ids | pending
    cand = np.fromiter((i for i, iid in enumerate(emb.image_ids) if iid not in excluded and iid in ok_ids),
                       dtype=np.int64)
    return Pool(config_id, emb.image_ids, emb.features, index, tuple(classes), labeled, labels, label_ids, cand,
                {"labelled_or_skipped": len(labelled_any), "eval_set": len(eval_ids), "pending": len(pending),
                 "not_ok": int(sum(1 for iid in emb.image_ids if iid not in ok_ids))})


# ----------------------------------------------------------------------------- eval set
def stratified_holdout(rows: Sequence[tuple[str, str | None]], n: int, seed: int) -> list[tuple[str, str | None]]:
    """The hold-out rule, as a pure function (the loop's eval set and `al simulate` both use it).

    ``rows``: (image_id, ground-truth class or None) of every candidate image,
    sorted by image_id. Takes ``min(n, len(rows) // 2)`` images, split over the
    classes by largest remainder of the proportional quotas, drawn per class
    (classes in name order, None last) with ``numpy.random.default_rng(seed)``.
    Returns (image_id, class) in class order, then image order.
    """
    n = min(int(n), len(rows) // 2)
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for iid, gt in rows:
        groups.setdefault(gt, []).append(iid)
    keys = sorted(groups, key=lambda k: (k is None, str(k)))
    quotas = {k: n * len(groups[k]) / len(rows) for k in keys}
    take = {k: int(np.floor(q)) for k, q in quotas.items()}
    for k in sorted(keys, key=lambda k: (-(quotas[k] - take[k]), str(k)))[: n - sum(take.values())]:
        take[k] += 1
    chosen = []
    for k in keys:
        ids = groups[k]
        pick = rng.choice(len(ids), size=take[k], replace=False) if take[k] else []
        chosen += [(ids[i], k) for i in sorted(pick)]
    return chosen


def ensure_eval_set(store: Store, cfg: ProjectConfig, classes: Sequence[str]) -> dict:
    """Hold out ``evaluation.holdout`` images (stratified by ground truth, fixed by the seed), once."""
    with store.connect(read_only=True, view=False) as con:
        n_existing = con.execute("SELECT count(*) FROM eval_set WHERE source = 'holdout'").fetchone()[0]
        if n_existing or cfg.evaluation.holdout == 0:
            return {"holdout": int(n_existing), "created": 0}
        rows = con.execute(
            """SELECT p.image_id, any_value(g.class_name) FROM (SELECT DISTINCT image_id FROM image_paths
               WHERE status = 'ok') p LEFT JOIN ground_truth g USING (image_id) GROUP BY p.image_id ORDER BY p.image_id"""
        ).fetchall()
        proposed = {r[0] for r in con.execute("SELECT image_id FROM queries").fetchall()}
    chosen = stratified_holdout([r for r in rows if r[0] not in proposed], cfg.evaluation.holdout,
                                cfg.selection.seed)
    ts = now()
    with store.transaction() as con:
        for iid, gt in chosen:
            label = gt if (cfg.evaluation.labels_from_ground_truth and gt in classes) else None
            con.execute("INSERT INTO eval_set VALUES (?, ?, 'holdout', ?) ON CONFLICT DO NOTHING", [iid, label, ts])
    if not cfg.evaluation.labels_from_ground_truth:
        paths = dict(store.fetch("SELECT image_id, min(path) FROM image_paths WHERE status='ok' GROUP BY 1"))
        lines = ["image_id,path"] + [f"{iid},{_csv(paths.get(iid, ''))}" for iid, _ in chosen]
        atomic_write_text(cfg.outbox / "eval-holdout.csv", "\n".join(lines) + "\n")
    return {"holdout": len(chosen), "created": len(chosen)}


def _csv(v) -> str:
    s = "" if v is None else str(v)
    if any(c in s for c in ',"\n\r'):
        s = '"' + s.replace('"', '""') + '"'
    return s


# ----------------------------------------------------------------------------- proposing
@dataclass
class Proposal:
    round: int
    kind: str
    strategy: str
    seed: int
    budget: int
    requested_budget: int
    image_ids: list[str]
    scores: list[float]
    select_seconds: float
    n_candidates: int
    note: str | None
    outbox_files: list[str]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("image_ids")
        d.pop("scores")
        return d


def propose(store: Store, cfg: ProjectConfig, round_: int, pool: Pool, *, probe=None, probe_id: str | None = None,
            run_id: str | None = None) -> Proposal | None:
    """Select batch ``round_`` and write it to the database and the outbox. None when the budget is spent."""
    from al_core.learn.strategies import get_strategy

    kind = "seed" if round_ == 0 else "query"
    name = cfg.selection.seed_strategy if kind == "seed" else cfg.selection.query_strategy
    with store.connect(read_only=True, view=False) as con:
        if con.execute("SELECT 1 FROM rounds WHERE round = ?", [round_]).fetchone():
            raise LoopError(f"batch {round_} was already proposed")
        spent = int(con.execute("SELECT coalesce(sum(budget), 0) FROM rounds").fetchone()[0])
    requested = cfg.selection.budget_per_round
    budget = min(requested, cfg.selection.total_budget - spent, len(pool.candidates))
    if budget <= 0:
        return None
    notes = []
    if budget < requested:
        notes.append(f"budget clamped from {requested} to {budget} "
                     f"({'total budget' if cfg.selection.total_budget - spent < requested else 'candidates'} ran out)")
    seed = cfg.selection.seed + round_
    t = time.perf_counter()
    res = get_strategy(name).select(
        pool.features, pool.labeled if kind == "query" else np.empty(0, np.int64),
        pool.labels if kind == "query" else np.empty(0, np.int64), budget,
        n_classes=len(pool.classes), seed=seed, probe=probe, candidates=pool.candidates)
    select_s = time.perf_counter() - t
    ids = [str(pool.image_ids[i]) for i in res.indices]
    scores = [float(s) for s in res.scores]
    paths = dict(store.fetch(
        "SELECT image_id, min(path) FROM image_paths WHERE status = 'ok' AND image_id IN (SELECT unnest(?)) GROUP BY 1",
        [ids]))
    with store.transaction() as con:
        con.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, NULL, NULL, ?, ?, ?)",
                    [round_, kind, name, seed, budget, requested, pool.config_id, probe_id, now(), select_s, run_id,
                     "; ".join(notes) or None])
        for rank, (iid, sc) in enumerate(zip(ids, scores, strict=True), 1):
            con.execute("INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?)",
                        [round_, rank, iid, paths[iid], None if np.isnan(sc) else sc, name])
        fault_point("query_set.after_insert")
    files = write_outbox(cfg, round_, name, ids, scores, paths, pool.classes)
    return Proposal(round_, kind, name, seed, budget, requested, ids, scores, select_s, len(pool.candidates),
                    "; ".join(notes) or None, files)


def write_outbox(cfg: ProjectConfig, round_: int, strategy: str, ids: list[str], scores: list[float],
                 paths: dict, classes: Sequence[str]) -> list[str]:
    """round-NNNN.csv, round-NNNN.label-studio.json and label-studio-config.xml, each written atomically."""
    out = cfg.outbox
    stem = f"round-{round_:04d}"
    lines = ["image_id,path,rank,score,strategy"]
    tasks = []
    for rank, (iid, sc) in enumerate(zip(ids, scores, strict=True), 1):
        score = "" if np.isnan(sc) else repr(sc)
        lines.append(",".join([iid, _csv(paths[iid]), str(rank), score, strategy]))
        url = cfg.labels.image_url_template.format(path=paths[iid], image_id=iid, name=os.path.basename(paths[iid]))
        tasks.append({"data": {"image": url, "image_id": iid, "round": round_, "rank": rank,
                               "score": None if np.isnan(sc) else sc, "strategy": strategy}})
    csv_path, ls_path, xml_path = out / f"{stem}.csv", out / f"{stem}.label-studio.json", out / "label-studio-config.xml"
    atomic_write_text(ls_path, json.dumps(tasks, indent=1) + "\n")
    atomic_write_text(xml_path, label_studio_config(classes, cfg.labels.skip_label))
    fault_point("outbox.before_csv")
    atomic_write_text(csv_path, "\n".join(lines) + "\n")  # last: its appearance means the batch is complete
    return [str(csv_path), str(ls_path), str(xml_path)]


def label_studio_config(classes: Sequence[str], skip_label: str) -> str:
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in [*classes, skip_label])
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            "  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInline=\"true\">\n"
            f"{choices}\n  </Choices>\n</View>\n")


# ----------------------------------------------------------------------------- ingesting labels
@dataclass
class FileOutcome:
    name: str
    sha256: str
    status: str  # accepted | duplicate | rejected | already_committed
    reason: str | None = None
    n_rows: int = 0
    n_applied: int = 0
    n_unproposed: int = 0
    n_skips: int = 0
    stored_path: str | None = None
    is_eval: bool = False


@dataclass
class IngestReport:
    round: int  # the round the labels were recorded in (the loop's, when the run was requested for an older one)
    files: list[FileOutcome]
    answered: int = 0
    proposed: int = 0
    open_round: int | None = None
    ready: bool = False
    requested_round: int | None = None  # set when the run was requested for an older round (a stale request)
    resumed: bool = False  # ready because no batch is open although the budget is not spent (an interrupted round)

    @property
    def counts(self) -> dict:
        c: dict = {}
        for f in self.files:
            c[f.status] = c.get(f.status, 0) + 1
        return c

    def as_dict(self) -> dict:
        return {"round": self.round, "files": [asdict(f) for f in self.files], "counts": self.counts,
                "answered": self.answered, "proposed": self.proposed, "open_round": self.open_round,
                "ready": self.ready, "labels_applied": sum(f.n_applied for f in self.files if not f.is_eval),
                "requested_round": self.requested_round, "resumed": self.resumed}


def _dest(folder: Path, name: str, sha: str) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    return folder / f"{stamp}-{sha[:12]}-{name}"


_LABEL_COLUMNS = ("image_id", "label", "is_skip", "proposed", "file_sha256", "file_id", "annotation_id", "annotator",
                  "line", "note")


def _insert_labels(con, cols: dict, start: int, stop: int, first_id: int, ts, round_: int) -> None:
    """Rows [start, stop) of the column lists as one INSERT ... SELECT over an Arrow table (label_id from first_id)."""
    import pyarrow as pa

    if stop <= start:
        return
    types = {"is_skip": pa.bool_(), "proposed": pa.bool_(), "line": pa.int32()}
    tbl = pa.table({"label_id": pa.array(range(first_id, first_id + stop - start), pa.int64()),
                    **{c: pa.array(cols[c][start:stop], types.get(c, pa.string())) for c in _LABEL_COLUMNS}})
    con.register("_new_labels", tbl)
    try:
        con.execute("""INSERT INTO labels SELECT label_id, image_id, label, is_skip, proposed, file_sha256, file_id,
                       annotation_id, annotator, ?::TIMESTAMP, ?::INTEGER, line, note FROM _new_labels""", [ts, round_])
    finally:
        con.unregister("_new_labels")


def ingest_label_files(store: Store, cfg: ProjectConfig, files: Sequence[str | os.PathLike], *, round_: int,
                       classes: Sequence[str], run_id: str | None = None,
                       log: Callable[[str], None] | None = None) -> IngestReport:
    """Validate and apply label files in one transaction, then move them to accepted/ or rejected/.

    A file with any error is rejected whole (nothing applied) with a
    ``.errors.json`` report beside it. The same bytes delivered again are
    recorded as a duplicate and change nothing. A row that repeats an image's
    current label adds nothing (so a file delivered in halves applies each
    label once).

    Files are read and validated before the write lock is taken; what each one
    changes is decided inside the write transaction against what is committed
    then, so two runs (or two processes) never apply a label twice. Labels go
    into the round the loop is at when they are committed: ``round_`` is a floor,
    and a run requested for an older round (queued behind the run that closed it)
    reports it in ``requested_round`` and is never ``ready``.
    """
    from al_core.labels import parse_label_file, write_error_report
    from al_core.catalogue.store import sha256_file

    log = log or (lambda m: None)
    inbox = cfg.inbox
    accepted_dir, rejected_dir = inbox / "accepted", inbox / "rejected"
    report = IngestReport(round=round_, files=[])
    with store.connect(read_only=True, view=False) as con:
        known = {r[0] for r in con.execute("SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'").fetchall()}
        ingested = {r[0] for r in con.execute(
            "SELECT DISTINCT sha256 FROM label_files WHERE status IN ('accepted', 'duplicate', 'retracted')").fetchall()}
    # 1. read and validate outside the write lock (the slow part); bytes already ingested are not parsed again
    items: list[tuple[Path, str, object]] = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            log(f"{path.name}: gone before ingestion (already moved by an earlier run?)")
            continue
        sha = sha256_file(path)
        parsed = None
        if sha not in ingested:
            parsed = parse_label_file(path, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label)
            if parsed.sha256 and parsed.sha256 != sha:
                log(f"{path.name}: changed while being read; left in the inbox for the next run")
                continue
        items.append((path, sha, parsed))

    moves: list[tuple[Path, Path]] = []
    error_reports: list[tuple[object, Path]] = []
    ts = now()
    # 2. decide what each file changes and write it, in one transaction, against what is committed now
    with store.transaction() as con:
        st = loop_state(con, cfg)
        label_round = max(round_, st.label_round)
        if label_round != round_:
            report.requested_round = round_
            log(f"this run was requested for round {round_}, but the loop is at round {label_round} now "
                f"(an earlier run went on): labels are recorded in round {label_round}, nothing else is done")
        report.round = label_round
        prior: dict = {}
        for sha, status, stored, name in con.execute(
                "SELECT sha256, status, stored_path, original_name FROM label_files ORDER BY received_at").fetchall():
            prior.setdefault(sha, []).append((status, stored, name))
        current = dict(con.execute("SELECT image_id, label FROM current_labels").fetchall())
        proposed = {r[0] for r in con.execute("SELECT DISTINCT image_id FROM queries").fetchall()}
        cols: dict[str, list] = {c: [] for c in _LABEL_COLUMNS}
        eval_rows: list[tuple[str, str]] = []
        file_rows: list[list] = []
        for path, sha, parsed in items:
            is_eval = path.parent.name == "eval"
            if not path.exists():
                log(f"{path.name}: gone (moved by another run meanwhile); nothing applied")
                continue
            hist = prior.get(sha, [])
            committed_not_moved = [h for h in hist if h[0] in ("accepted", "rejected") and h[1]
                                   and not Path(h[1]).exists() and h[2] == path.name]
            if committed_not_moved:
                moves.append((path, Path(committed_not_moved[0][1])))
                report.files.append(FileOutcome(path.name, sha, "already_committed", "rows were committed before a "
                                                "crash; file moved now", stored_path=committed_not_moved[0][1],
                                                is_eval=is_eval))
                continue
            fid = uuid.uuid4().hex
            if any(h[0] in ("accepted", "duplicate", "retracted") for h in hist):
                dest = _dest(accepted_dir, path.name, sha)
                first = next(h for h in hist if h[0] in ("accepted", "retracted"))
                reason = f"same bytes as {first[2]!r}, already ingested"
                file_rows.append([fid, sha, path.name, str(dest), None, "duplicate", reason, 0, 0, 0, 0, is_eval, ts,
                                  label_round, run_id])
                moves.append((path, dest))
                prior.setdefault(sha, []).append(("duplicate", str(dest), path.name))
                report.files.append(FileOutcome(path.name, sha, "duplicate", reason, stored_path=str(dest),
                                                is_eval=is_eval))
                log(f"{path.name}: duplicate of {first[2]!r}; nothing applied")
                continue
            if parsed is None:  # not ingested after all (cannot happen: history only grows); validate now
                parsed = parse_label_file(path, classes=classes, known_image_ids=known,
                                          skip_label=cfg.labels.skip_label)
            if not parsed.ok:
                dest = _dest(rejected_dir, path.name, sha)
                errs = parsed.errors or ()
                reason = f"{parsed.n_errors} error(s); first: " + (
                    f"line {errs[0].line}: {errs[0].message}" if errs else "no label rows")
                file_rows.append([fid, sha, path.name, str(dest), parsed.format, "rejected", reason,
                                  parsed.n_records, 0, 0, 0, is_eval, ts, label_round, run_id])
                moves.append((path, dest))
                error_reports.append((parsed, dest.with_name(dest.name + ".errors.json")))
                report.files.append(FileOutcome(path.name, sha, "rejected", reason, parsed.n_records,
                                                stored_path=str(dest), is_eval=is_eval))
                log(f"{path.name}: REJECTED, nothing applied: {reason}")
                continue
            dest = _dest(accepted_dir, path.name, sha)
            n_applied = n_unprop = n_skip = 0
            if is_eval:
                for row in parsed.rows:
                    if not row.is_skip:
                        eval_rows.append((row.image_id, row.label))
                        n_applied += 1
            else:
                for row in parsed.rows:
                    if current.get(row.image_id) == row.label:
                        continue  # already this label: applying it again would count it twice
                    was_proposed = row.image_id in proposed
                    n_unprop += not was_proposed
                    n_skip += row.is_skip
                    for c, v in zip(_LABEL_COLUMNS, (row.image_id, row.label, row.is_skip, was_proposed, sha, fid,
                                                     row.annotation_id, row.annotator, row.line, row.note),
                                    strict=True):
                        cols[c].append(v)
                    current[row.image_id] = row.label
                    n_applied += 1
            file_rows.append([fid, sha, path.name, str(dest), parsed.format, "accepted", None, len(parsed.rows),
                              n_applied, n_unprop, n_skip, is_eval, ts, label_round, run_id])
            moves.append((path, dest))
            prior.setdefault(sha, []).append(("accepted", str(dest), path.name))
            report.files.append(FileOutcome(path.name, sha, "accepted", None, len(parsed.rows), n_applied, n_unprop,
                                            n_skip, str(dest), is_eval))
            log(f"{path.name}: accepted, {n_applied} labels applied ({n_unprop} for images never proposed, "
                f"{n_skip} skips)")

        for fr in file_rows:
            con.execute("INSERT INTO label_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fr)
        n = len(cols["image_id"])
        if n:
            next_id = int(con.execute("SELECT coalesce(max(label_id), 0) + 1 FROM labels").fetchone()[0])
            _insert_labels(con, cols, 0, n // 2, next_id, ts, label_round)
            fault_point("labels.mid_insert")
            _insert_labels(con, cols, n // 2, n, next_id + n // 2, ts, label_round)
        for iid, label in eval_rows:
            con.execute("""INSERT INTO eval_set VALUES (?, ?, 'inbox/eval', ?)
                           ON CONFLICT (image_id) DO UPDATE SET label = excluded.label""", [iid, label, ts])
    fault_point("labels.after_commit")
    for parsed, dest in error_reports:
        write_error_report(parsed, dest)
    for src, dst in moves:
        if not src.exists():  # moved meanwhile by another run that committed the same bytes: nothing to do
            log(f"{src.name}: already moved by another run")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
    with store.connect(read_only=True, view=False) as con:
        st = loop_state(con, cfg)
        report.open_round = st.open_round
        if st.open_round is not None:
            report.answered, report.proposed = answered(con, st.open_round)
            report.ready = report.proposed > 0 and report.answered >= cfg.selection.answered_fraction * report.proposed
        elif st.last_round is not None and not st.budget_spent:
            # no open batch although the budget is not spent: a run stopped between closing batch
            # last_round and proposing the next one; this round owes it
            report.ready = report.resumed = True
            log(f"no open batch and the budget is not spent: round {report.round} proposes the batch it owes")
    if report.requested_round is not None:
        report.ready = report.resumed = False  # a stale run does nothing more; a run for the current round will
    return report


def pending_work(con, cfg: ProjectConfig) -> str | None:
    """What a round run owes although no label file waits (a key naming it), or None.

    - ``outbox-rN``: batch N is recorded but its outbox CSV is missing (a run
      stopped between the batch's commit and its CSV): ``repair_outbox`` writes it;
    - ``answered-rN``: the open batch N is answered but no run went on with it;
    - ``owed-rN``: no batch is open although the budget is not spent (a run
      stopped between closing a batch and proposing batch N).
    """
    st = loop_state(con, cfg)
    if st.last_round is None:
        return None
    for (r,) in con.execute("SELECT round FROM rounds WHERE status = 'open' ORDER BY round").fetchall():
        if not (cfg.outbox / f"round-{r:04d}.csv").exists():
            return f"outbox-r{r}"
    if st.open_round is not None:
        n_ans, n_prop = answered(con, st.open_round)
        if n_prop > 0 and n_ans >= cfg.selection.answered_fraction * n_prop:
            return f"answered-r{st.open_round}"
        return None
    return None if st.budget_spent else f"owed-r{st.label_round}"


def repair_outbox(store: Store, cfg: ProjectConfig, classes: Sequence[str]) -> list[str]:
    """Write the outbox files of every open batch whose CSV is missing, from the committed queries."""
    written = []
    with store.connect(read_only=True, view=False) as con:
        todo = [(r, strategy) for r, strategy in con.execute(
            "SELECT round, strategy FROM rounds WHERE status = 'open' ORDER BY round").fetchall()
            if not (cfg.outbox / f"round-{r:04d}.csv").exists()]
        batches = {r: con.execute("SELECT image_id, path, score FROM queries WHERE round = ? ORDER BY rank",
                                  [r]).fetchall() for r, _ in todo}
    for r, strategy in todo:
        rows = batches[r]
        ids = [q[0] for q in rows]
        scores = [float("nan") if q[2] is None else float(q[2]) for q in rows]
        written += write_outbox(cfg, r, strategy, ids, scores, {q[0]: q[1] for q in rows}, classes)[:1]
    return written


def close_round(store: Store, round_: int, closed_by: str) -> None:
    with store.transaction() as con:
        con.execute("UPDATE rounds SET status = 'closed', closed_at = ?, closed_by = ? WHERE round = ? AND status = 'open'",
                    [now(), closed_by, round_])


# ----------------------------------------------------------------------------- probe and metrics
@dataclass
class ProbeRecord:
    probe_id: str
    round: int
    version: int
    trigger: str
    path: str
    sha256: str
    n_labels: int
    train_seconds: float
    n_epochs: int

    def as_dict(self) -> dict:
        return asdict(self)


def train_probe(store: Store, cfg: ProjectConfig, round_: int, pool: Pool, *, trigger: str = "round",
                run_id: str | None = None):
    """Train the probe on every current training label; save it (safetensors) and record it."""
    from al_core.learn.probe import Probe

    if len(pool.labeled) < 2:
        raise LoopError(f"round {round_}: {len(pool.labeled)} training label(s); the probe needs at least 2")
    t = time.perf_counter()
    probe = Probe(n_classes=len(pool.classes), seed=cfg.selection.seed + round_)
    probe.fit(pool.features[pool.labeled], pool.labels)
    train_s = time.perf_counter() - t
    fault_point("probe.after_fit")
    with store.connect(read_only=True, view=False) as con:
        version = int(con.execute("SELECT count(*) FROM probes WHERE round = ?", [round_]).fetchone()[0]) + 1
    probe_id = f"r{round_:04d}-v{version}-{uuid.uuid4().hex[:8]}"
    cfg.probes_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.probes_dir / f"probe-{probe_id}.safetensors"
    sha = probe.save(path)
    with store.transaction() as con:
        con.execute("INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [probe_id, round_, version, trigger, str(path), sha, pool.config_id, len(pool.labeled),
                     len(pool.classes), cfg.selection.seed + round_, train_s, now(), run_id])
        import pyarrow as pa

        con.register("_pl", pa.table({"probe_id": [probe_id] * len(pool.label_ids), "label_id": pool.label_ids}))
        con.execute("INSERT INTO probe_labels SELECT probe_id, label_id FROM _pl")
        con.unregister("_pl")
    rec = ProbeRecord(probe_id, round_, version, trigger, str(path), sha, len(pool.labeled), train_s,
                      int(getattr(probe, "n_epochs_", 0)))
    return probe, rec


def load_probe(store: Store, probe_id: str):
    """Load a recorded probe, refusing a file whose sha256 differs from the catalogue's."""
    from al_core.learn.probe import Probe
    from al_core.catalogue.store import sha256_file

    row = store.fetch("SELECT path, sha256 FROM probes WHERE probe_id = ?", [probe_id])
    if not row:
        raise LoopError(f"unknown probe {probe_id}")
    path, sha = row[0]
    actual = sha256_file(path)
    if actual != sha:
        raise LoopError(f"probe file {path} has sha256 {actual}, the catalogue recorded {sha}: refused")
    return Probe.load(path)


def evaluate(store: Store, cfg: ProjectConfig, round_: int, pool: Pool, probe, probe_id: str) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class recall and confusion matrix on the labelled eval set."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

    rows = store.fetch("SELECT image_id, label FROM eval_set WHERE label IS NOT NULL ORDER BY image_id")
    cls_index = {c: k for k, c in enumerate(pool.classes)}
    rows = [(iid, lab) for iid, lab in rows if iid in pool.index and lab in cls_index]
    out = {"round": round_, "probe_id": probe_id, "n_labels": int(len(pool.labeled)), "n_eval": len(rows)}
    if not rows:
        out.update(accuracy=None, balanced_accuracy=None, macro_f1=None, per_class_recall={}, confusion=[])
    else:
        x = pool.features[[pool.index[iid] for iid, _ in rows]]
        y = np.array([cls_index[lab] for _, lab in rows])
        pred = probe.predict(x)
        ks = list(range(len(pool.classes)))
        rec = recall_score(y, pred, labels=ks, average=None, zero_division=0)
        out.update(
            accuracy=float(accuracy_score(y, pred)),
            balanced_accuracy=float(balanced_accuracy_score(y, pred)),
            macro_f1=float(f1_score(y, pred, labels=ks, average="macro", zero_division=0)),
            per_class_recall={c: float(r) for c, r in zip(pool.classes, rec, strict=True)},
            confusion=confusion_matrix(y, pred, labels=ks).tolist(),
        )
    with store.transaction() as con:
        con.execute("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [probe_id, round_, out["accuracy"], out["balanced_accuracy"], out["macro_f1"],
                     json.dumps(out["per_class_recall"]), json.dumps(out["confusion"]), out["n_labels"],
                     out["n_eval"], now()])
    return out


# ----------------------------------------------------------------------------- retract and retry
def _find_file(con, sha_prefix: str, statuses: tuple[str, ...]) -> tuple[str, str, str | None]:
    sha_prefix = sha_prefix.strip().lower()
    if len(sha_prefix) < 8 or any(c not in "0123456789abcdef" for c in sha_prefix):
        raise LoopError("give the file's sha256 (at least 8 hex digits; `al rounds`/the label_files table list them)")
    rows = con.execute(
        f"SELECT DISTINCT sha256, original_name, stored_path FROM label_files WHERE starts_with(sha256, ?) "
        f"AND status IN ({', '.join('?' * len(statuses))}) ORDER BY sha256", [sha_prefix, *statuses]).fetchall()
    if not rows:
        raise LoopError(f"no label file with sha256 {sha_prefix}... in status {'/'.join(statuses)}")
    if len({r[0] for r in rows}) > 1:
        raise LoopError(f"sha256 prefix {sha_prefix} is ambiguous: {sorted({r[0][:16] for r in rows})}")
    return rows[0]


def retract_file(store: Store, cfg: ProjectConfig, sha_prefix: str, reason: str | None = None) -> dict:
    """Withdraw a whole delivery: its labels leave training from the next round on; the history stays."""
    with store.transaction() as con:
        sha, name, _ = _find_file(con, sha_prefix, ("accepted",))
        st = loop_state(con, cfg)
        n = con.execute("SELECT count(*) FROM labels WHERE file_sha256 = ?", [sha]).fetchone()[0]
        con.execute("INSERT INTO retractions VALUES (?, ?, ?, ?)", [sha, now(), reason, st.label_round])
        con.execute("UPDATE label_files SET status = 'retracted', reason = ? WHERE sha256 = ? AND status = 'accepted'",
                    [f"retracted: {reason or 'no reason given'}", sha])
    return {"sha256": sha, "file": name, "labels_withdrawn": int(n), "effective_round": st.label_round}


def request_retry(store: Store, cfg: ProjectConfig, sha_prefix: str) -> dict:
    """Ask the sensor for a new run (new run key) ingesting a file again.

    The file must still be in the inbox (its run failed) or in inbox/rejected/
    (then it is put back into the inbox first, e.g. after its images were ingested).
    """
    from al_core.catalogue.store import sha256_file

    want = sha_prefix.strip().lower()
    if len(want) < 8:
        raise LoopError("give the file's sha256 (at least 8 hex digits)")
    found = None
    for folder in (cfg.inbox, cfg.inbox / "eval", cfg.inbox / "rejected"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.endswith(".errors.json") and sha256_file(p).startswith(want):
                found = p
                break
        if found:
            break
    if found is None:
        raise LoopError(f"no file with sha256 {want}... in {cfg.inbox} or its rejected/ folder")
    if found.parent.name == "rejected":
        original = found.name.split("-", 2)[-1] if found.name.count("-") >= 2 else found.name
        target = cfg.inbox / original
        shutil.move(str(found), str(target))
        found = target
    rid = uuid.uuid4().hex
    with store.transaction() as con:
        con.execute("INSERT INTO requests VALUES (?, 'retry_file', ?, ?, NULL, NULL)", [rid, str(found), now()])
    return {"request_id": rid, "file": str(found)}
