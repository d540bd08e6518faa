"""`al status`: what the store holds."""

import argparse
import json
import sys

from al_core.config import load_config
from al_core.catalogue.store import StoreError
from al_core.catalogue import open_store


def summary(store) -> dict:
    with store.connect(read_only=True) as con:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        out = {
            "database": str(store.db_path),
            "schema_version": int(q("SELECT value FROM schema_info WHERE key = 'schema_version'")[0][0]),
            "images": int(q("SELECT count(*) FROM images")[0][0]),
            "paths_by_status": {s: int(n) for s, n in q("SELECT status, count(*) FROM image_paths GROUP BY 1 ORDER BY 1")},
            "ground_truth_classes": int(q("SELECT count(DISTINCT class_name) FROM ground_truth")[0][0]),
            "scans": int(q("SELECT count(*) FROM scans")[0][0]),
            "embedding_configs": [
                {"config_id": c, "backbone": b, "dim": int(d), "vectors": int(n), "parts": int(p)}
                for c, b, d, n, p in q(
                    """SELECT c.config_id, c.backbone, c.dim,
                              (SELECT count(*) FROM embedding_index i WHERE i.config_id = c.config_id),
                              (SELECT count(*) FROM embedding_parts p WHERE p.config_id = c.config_id)
                       FROM embedding_configs c ORDER BY c.created_at""")
            ],
        }
    return out


def print_summary(s: dict, file=sys.stdout) -> None:
    print(f"database        {s['database']} (schema version {s['schema_version']})", file=file)
    print(f"images          {s['images']} distinct (sha256), paths: "
          + ", ".join(f"{k} {v}" for k, v in s["paths_by_status"].items()), file=file)
    print(f"ground truth    {s['ground_truth_classes']} classes (simulation only)", file=file)
    for c in s["embedding_configs"]:
        print(f"embeddings      {c['backbone']} [{c['config_id']}]: {c['vectors']} vectors x {c['dim']} "
              f"in {c['parts']} part files", file=file)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al status", description=__doc__)
    ap.add_argument("--config", help="project file (default: $AL_CONFIG, else ./al.yaml, else the defaults)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    try:
        s = summary(open_store(load_config(args.config)))
    except StoreError as e:
        print(f"al status: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print_summary(s)
    return 0
