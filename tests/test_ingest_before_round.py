"""The inbox sensor queues an ingest run before a round only when the image root changed since its last scan (issue 12,
item 9), on a real project: real image files, the real sensor evaluated, the runs it requests executed in process in
the order the one-writer queue runs them. A new image is scanned, embedded and proposed by the very next round."""

import hashlib
import os
import shutil

import dagster as dg
import pytest
import yaml

from al_core.catalogue import open_store
from al_core.config import load_config
from tests.conftest import SAMPLE_ROOT
from tests.loop_helpers import answer_batch, execute, make_project, run_requests


def _requests(result) -> list[dg.RunRequest]:
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def _project(tmp_path, ingest_before_round=True):
    """16 images, 4 held out, batches of 9: the seed batch leaves 3 images in the pool, so round 1 proposes every
    image of the pool (a new one included). Ingested and seeded in process."""
    from al_assets.definitions import build_defs

    cfg_file = make_project(tmp_path, per_class=4, holdout=4, budget=9, total=40)
    conf = yaml.safe_load(cfg_file.read_text())
    conf["sensor"]["ingest_before_round"] = ingest_before_round
    cfg_file.write_text(yaml.safe_dump(conf))
    cfg = load_config(cfg_file)
    defs, instance = build_defs(cfg), dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
    seed = _requests(run_requests(defs, instance))
    assert [r.job_name for r in seed] == ["seed_job"]  # no round yet: no check, no ingest run
    assert execute(defs, instance, seed[0]).success
    return cfg, defs, instance, open_store(cfg)


def _new_image(cfg) -> tuple[str, str]:
    """A sample image the project does not hold, copied into the root: (its path, its image id)."""
    src = sorted((SAMPLE_ROOT / "frog").iterdir())[10]
    dst = shutil.copy(src, cfg.image_root / "frog" / "new-arrival.jpg")
    return dst, hashlib.sha256(src.read_bytes()).hexdigest()


def _unproposed_path(store) -> str:
    """An image file of the pool (neither proposed nor held out)."""
    return store.fetch(
        "SELECT min(path) FROM image_paths WHERE status = 'ok' AND image_id NOT IN (SELECT image_id FROM queries) "
        "AND image_id NOT IN (SELECT image_id FROM eval_set)"
    )[0][0]


def test_an_unchanged_root_gets_no_ingest_run_before_the_round(tmp_path):
    cfg, defs, instance, store = _project(tmp_path)
    answer_batch(cfg, store, 0)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["round_job"]
    assert reqs[0].tags["al/ingest_before"] == "skipped"
    assert reqs[0].tags["al/ingest_check"].startswith("image root unchanged since scan 1 at ")
    assert reqs[0].tags["al/ingest_check"].endswith(": no ingest run")
    assert execute(defs, instance, reqs[0]).success
    assert (cfg.outbox / "round-0001.csv").exists()
    assert instance.get_runs_count(dg.RunsFilter(job_name="ingest_job")) == 1  # the fixture's only


def test_a_new_image_is_ingested_first_and_proposed_by_the_next_round(tmp_path):
    cfg, defs, instance, store = _project(tmp_path)
    path, new_id = _new_image(cfg)
    answer_batch(cfg, store, 0)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["ingest_job", "round_job"]
    assert reqs[0].run_key == f"ingest-before-{reqs[1].run_key}"
    for r in reqs:
        assert r.tags["al/ingest_before"] == "queued"
        assert r.tags["al/ingest_check"].startswith("image root changed: 17 files now, 16 at scan 1 (")
    for r in reqs:  # the queue runs them in this order (one writer at a time)
        assert execute(defs, instance, r).success
    assert store.fetch("SELECT count(*) FROM embedding_index WHERE image_id = ?", [new_id]) == [(1,)]
    proposed = {r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 1")}
    assert new_id in proposed and len(proposed) == 4  # the 3 left by the seed batch and the new one
    # the ingest run's scan recorded the new fingerprint: the next round needs no ingest run
    answer_batch(cfg, store, 1)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["round_job"] and reqs[0].tags["al/ingest_before"] == "skipped"
    assert "since scan 2 at " in reqs[0].tags["al/ingest_check"]


def _removed(cfg, store):
    os.unlink(_unproposed_path(store))


def _grown(cfg, store):  # other bytes: another image id, same mtime
    p = _unproposed_path(store)
    st = os.stat(p)
    with open(p, "ab") as f:
        f.write(b"\0trailer after the JPEG end")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _touched(cfg, store):  # same bytes, another mtime
    p = _unproposed_path(store)
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", [_removed, _grown, _touched], ids=lambda f: f.__name__[1:])
def test_a_removed_or_rewritten_image_gets_an_ingest_run_before_the_round(tmp_path, change):
    cfg, defs, instance, store = _project(tmp_path)
    change(cfg, store)
    answer_batch(cfg, store, 0)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["ingest_job", "round_job"]
    assert reqs[1].tags["al/ingest_check"].startswith("image root changed: ")
    for r in reqs:
        assert execute(defs, instance, r).success
    ok = {r[0] for r in store.fetch("SELECT image_id FROM image_paths WHERE status = 'ok'")}
    embedded = {r[0] for r in store.fetch("SELECT image_id FROM embedding_index")}
    assert ok <= embedded  # whatever the scan found is embedded before the proposal
    assert store.fetch("SELECT count(*) FROM image_paths WHERE status = 'missing'") == [
        (1 if change is _removed else 0,)
    ]


def test_ingest_before_round_false_never_ingests(tmp_path):
    cfg, defs, instance, store = _project(tmp_path, ingest_before_round=False)
    _new_image(cfg)
    answer_batch(cfg, store, 0)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["round_job"]
    assert "al/ingest_before" not in reqs[0].tags and "al/ingest_check" not in reqs[0].tags
