import hashlib
import os
import subprocess
import sys
import time

import duckdb
import numpy as np
import pytest

from al_core.catalogue.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaVersionError,
    Store,
    StoreError,
    StoreLockedError,
    shard_of,
)


def _ids(n, salt=""):
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def test_schema_version_recorded_from_first_open(store):
    with store.connect():
        pass
    assert store.schema_version() == SCHEMA_VERSION
    rows = dict(store.fetch("SELECT key, value FROM schema_info"))
    assert rows["app"] == "al-pipeline" and rows["schema_version"] == str(SCHEMA_VERSION)


# sha256 of each released schema version's DDL, white space folded. A released version is never edited (a change is
# a new version); versions 2 and 4 build round_summary and label_lineage from common parts
# (al_core.catalogue.label_views), so an edit there must leave both as they were.
RELEASED_DDL = {
    1: "b961e7e73dd886add664241133a4828c5695f32427f3111333e5419ac1e83910",
    2: "e76b8677632cd001b7afeb0748a254c92bbb2abda6f7257d14e03dbe1f6b30c1",
    3: "ce9e548aba993317932bd6a3bd13ac8c9d102e7f38169e84c60c26f3930150e3",
    4: "012319a3d5a5ebe6e1d71243d52c7e61c5754f4ffdc766f783ef06eb0f410b75",
    5: "03cca957def3e308b169fde839ca29c14af23ddb1e72e6329f278e759d49c6eb",
    6: "93d9e225cc494a98e7442c8e9b95d56e68ce17b68226ac7a1599ebcf3ff23707",
    7: "849f5505f73c4195b372f618bb1daf2a975e29846700be36c8e39a1774176eb7",
    8: "aa1f44ba80c44c687285cb1b509ea6c4e2dce600dd4f9543667fc33069f6162e",
}


def test_released_schema_versions_are_never_edited():
    for version, digest in RELEASED_DDL.items():
        ddl = "\n".join(" ".join(statement.split()) for statement in MIGRATIONS[version])
        assert hashlib.sha256(ddl.encode()).hexdigest() == digest, f"schema version {version} was edited"


def test_vectors_round_trip_sorted_contiguous_and_sql_view(store, tmp_path):
    store.register_embedding_config("cfg", {"backbone": "b", "dim": 8})
    ids = _ids(300)
    vecs = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    store.write_embeddings("cfg", ids[:200], vecs[:200])
    store.write_embeddings("cfg", ids[200:], vecs[200:])  # second part in the same shards
    emb = store.load_embeddings("cfg")
    order = np.argsort(ids)
    assert list(emb.image_ids) == sorted(ids)
    assert emb.features.flags["C_CONTIGUOUS"] and emb.features.dtype == np.float32
    np.testing.assert_array_equal(emb.features, vecs[order])
    sub = store.load_embeddings("cfg", image_ids=[ids[5], ids[250]])
    np.testing.assert_array_equal(sub.features, vecs[[5, 250]])
    # the SQL view answers from any working directory, with the same vectors
    here = os.getcwd()
    try:
        os.chdir("/")
        con = duckdb.connect(str(store.db_path), read_only=True)
        n, shards = con.execute(
            "SELECT count(*), count(DISTINCT shard) FROM embeddings WHERE config_id = 'cfg'"
        ).fetchone()
        v = con.execute("SELECT vector FROM embeddings WHERE image_id = ?", [ids[7]]).fetchone()[0]
        con.close()
    finally:
        os.chdir(here)
    assert n == 300 and shards == len({shard_of(i) for i in ids})
    np.testing.assert_array_equal(np.frombuffer(v, "<f4"), vecs[7])


def test_uncommitted_part_is_invisible_and_collected(store):
    store.register_embedding_config("cfg", {"backbone": "b", "dim": 4})
    ids = _ids(10)
    part = store.write_part_file("cfg", "0", ids, np.ones((10, 4), np.float32))
    assert len(store.load_embeddings("cfg")) == 0
    assert store.fetch("SELECT count(*) FROM embeddings")[0][0] == 0
    removed = store.gc_orphan_parts(min_age_s=0)
    assert [p.name for p in removed] == [os.path.basename(part["rel_path"])]


def test_failed_transaction_leaves_nothing(store):
    with store.connect():
        pass
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("INSERT INTO schema_info VALUES ('x', '1')")
        raise RuntimeError("boom")
    assert store.fetch("SELECT count(*) FROM schema_info WHERE key = 'x'")[0][0] == 0


def test_rejects_non_finite_vectors_and_duplicates(store):
    store.register_embedding_config("cfg", {"backbone": "b", "dim": 2})
    with pytest.raises(ValueError, match="non-finite"):
        store.write_embeddings("cfg", _ids(2), np.array([[1, np.nan], [0, 0]], np.float32))
    with pytest.raises(ValueError, match="duplicate"):
        store.write_embeddings("cfg", ["a" * 64, "a" * 64], np.zeros((2, 2), np.float32))


def test_foreign_and_damaged_and_newer_databases_are_refused(tmp_path):
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE customers (id INT)")
    con.close()
    with pytest.raises(SchemaVersionError, match="not an al-pipeline"), Store(foreign).connect():
        pass
    damaged = tmp_path / "damaged.duckdb"
    damaged.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError), Store(damaged).connect():
        pass
    assert damaged.read_bytes() == b"this is not a database" * 100  # untouched
    newer = Store(tmp_path / "newer.duckdb")
    with newer.connect() as c:
        c.execute("UPDATE schema_info SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with pytest.raises(SchemaVersionError, match="newer"), newer.connect():
        pass


def test_writer_waits_then_reports_a_retryable_lock_error(tmp_path):
    db = tmp_path / "w.duckdb"
    with Store(db).connect():
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb,sys,time; c=duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(30)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match="lock_timeout_s"), Store(db, lock_timeout_s=1).connect():
            pass
    finally:
        holder.kill()
        holder.wait()
    with Store(db, lock_timeout_s=5).connect():  # a retry completes once the holder is gone
        pass


def test_part_files_keep_the_measured_layout(store):
    import pyarrow.parquet as pq

    store.register_embedding_config("cfg", {"backbone": "b", "dim": 6})
    ids = [i for i in _ids(64) if shard_of(i) == "a"]
    vecs = np.random.default_rng(2).standard_normal((len(ids), 6)).astype(np.float32)
    (part,) = store.write_embeddings("cfg", ids, vecs)
    meta = pq.ParquetFile(store.vectors_dir / part["rel_path"]).metadata
    col = meta.schema.column(1)
    assert (col.name, col.physical_type, col.length) == ("vector", "FIXED_LEN_BYTE_ARRAY", 6 * 4)
    assert {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups) for c in range(2)} == {
        "UNCOMPRESSED"
    }
    got = pq.read_table(store.vectors_dir / part["rel_path"])
    assert got.column("image_id").to_pylist() == sorted(ids) == part["image_ids"]
    raw = np.frombuffer(b"".join(v.as_py() for v in got.column("vector")), "<f4").reshape(-1, 6)
    np.testing.assert_array_equal(raw, vecs[np.argsort(ids)])
    assert part["sha256"] == hashlib.sha256((store.vectors_dir / part["rel_path"]).read_bytes()).hexdigest()


def test_gc_collects_the_temporaries_of_a_killed_writer_and_keeps_fresh_ones(store):
    store.register_embedding_config("cfg", {"backbone": "b", "dim": 4})
    ids = [i for i in _ids(200) if shard_of(i) == "3"][:5]
    (part,) = store.write_embeddings("cfg", ids, np.ones((len(ids), 4)))
    shard_dir = (store.vectors_dir / part["rel_path"]).parent
    stale_dir = shard_dir / ".part-x.parquet.abc.tmp"  # atomic_path's private folder, writer killed
    stale_dir.mkdir()
    (stale_dir / "part-x.parquet").write_bytes(b"half a part")
    stale_file = shard_dir / ".part-y.manifest.json.def.tmp"  # atomic_write_bytes's temporary
    stale_file.write_bytes(b"{")
    old = time.time() - 7200
    for p in (stale_dir / "part-x.parquet", stale_dir, stale_file):
        os.utime(p, (old, old))
    fresh = shard_dir / ".part-z.parquet.ghi.tmp"  # a writer busy right now
    fresh.mkdir()
    removed = store.gc_orphan_parts()
    assert sorted(p.name for p in removed) == sorted([stale_dir.name, stale_file.name])
    assert not stale_dir.exists() and not stale_file.exists() and fresh.exists()
    assert len(ids) == 5 and len(store.load_embeddings("cfg")) == 5  # the committed part is untouched
