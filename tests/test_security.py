"""Security promises (issue 6, points 6, 9 and 10): hostile label files, network exposure, no unrestricted pickle.

docs/reliability.md has the table.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from al_core.catalogue import open_store
from tests.pickle_bomb import plant_pickle
from tests.reliability_helpers import (
    ROOT,
    copy_project,
    defs_for,
    deliver,
    execute,
    requests_of,
    run_requests,
)


# ----------------------------------------------------------------------------- 6. untrusted label files
def test_untrusted_label_files_through_the_whole_ingest_path(base_project, tmp_path):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    tables_before = store.fetch("SELECT table_name FROM information_schema.tables ORDER BY 1")
    batch = [r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 0 ORDER BY rank")]
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    a, b = batch[0], batch[1]
    inert = {  # stored verbatim: never evaluated, never a path, never SQL
        "annotator": "=cmd|' /C calc'!A0",
        "annotation_id": "x'); DROP TABLE labels; --",
        "note": "+SUM(1+1)*cmd|'/C calc'!A0 @x -2 ../../etc/passwd",
    }
    inbox = cfg.inbox
    csv_row = ",".join('"' + v.replace('"', '""') + '"' for v in inert.values())
    deliver(
        inbox / "inert.csv",
        f"image_id,label,annotator,annotation_id,note\n{a},{truth[a]},{csv_row}\n{b},{truth[b]},{csv_row}\n",
    )
    hostile = {
        "sql-label.csv": f'image_id,label\n{a},"cat\'); DROP TABLE labels; --"\n',
        "sql-id.csv": "image_id,label\n\"' OR '1'='1\",cat\n",
        "formula-label.csv": f'image_id,label\n{a},=HYPERLINK("http://evil")\n',
        "traversal.csv": "image_id,label\n../../../../etc/passwd,cat\n/etc/passwd,cat\n..\\..\\win.ini,cat\n",
        "nul.csv": f"image_id,label,annotator\n{a},{truth[a]},ev\x00il\n".encode(),
        "bad-utf8.csv": f"image_id,label,annotator\n{a},{truth[a]},".encode() + b"\xff\xfe\xc3(\n",
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "deep.jsonl": json.dumps({"image_id": a, "label": truth[a]})[:-1]
        + ', "note": '
        + "[" * 50_000
        + "]" * 50_000
        + "}\n",
        "number-label.jsonl": json.dumps({"image_id": a, "label": 3}) + "\n",
        "number-id.jsonl": json.dumps({"image_id": 12345, "label": truth[a]}) + "\n",
        "ls-number-id.json": json.dumps(
            [
                {
                    "id": 1,
                    "data": {"image_id": 7},
                    "annotations": [{"id": 1, "result": [{"type": "choices", "value": {"choices": [truth[a]]}}]}],
                }
            ]
        ),
        "$(touch pwned);.csv": f"image_id,label\n{a},not-a-class\n",
    }
    for name, body in hostile.items():
        deliver(inbox / name, body)
    # a 100 MB line (streamed to disk, never built in memory here)
    with open(inbox / "huge-line.csv", "w") as f:
        f.write(f"image_id,label\n{a},")
        chunk = "x" * (1 << 20)
        for _ in range(100):
            f.write(chunk)
        f.write(f"\n{b},{truth[b]}\n")
    settled = time.time() - 10
    os.utime(inbox / "huge-line.csv", (settled, settled))
    names = ["inert.csv", *hostile, "huge-line.csv"]

    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    reqs = requests_of(run_requests(defs, instance))  # the sensor reads every file and does not crash
    assert [r.job_name for r in reqs] == ["round_job"]
    assert len(reqs[0].run_config["ops"]["round_labels"]["config"]["files"]) == len(names)
    assert execute(defs, instance, reqs[0]).success
    status = dict(store.fetch("SELECT original_name, status FROM label_files"))
    assert status == {n: ("accepted" if n == "inert.csv" else "rejected") for n in names}
    # every rejection has its report beside the file; the file is kept, never executed or followed
    rejected = {p.name for p in (inbox / "rejected").iterdir()}
    for n in names[1:]:
        assert any(r.endswith("-" + n) for r in rejected)
        assert any(r.endswith("-" + n + ".errors.json") for r in rejected)
    report = next(p for p in (inbox / "rejected").iterdir() if p.name.endswith("traversal.csv.errors.json"))
    assert all("looks like a path" in e["message"] for e in json.loads(report.read_text())["errors"])
    # the inert values are stored byte for byte, the tables are intact, only the good file's labels exist
    assert store.fetch("SELECT annotator, annotation_id, note FROM labels") == [tuple(inert.values())] * 2
    assert store.fetch("SELECT table_name FROM information_schema.tables ORDER BY 1") == tables_before
    assert store.fetch("SELECT count(*) FROM labels") == [(2,)]
    # nothing was created from a file's name or contents, anywhere
    for where in (ROOT, Path.cwd(), inbox, inbox / "accepted", inbox / "rejected", tmp_path):
        assert not (where / "pwned").exists()
    for (stored,) in store.fetch("SELECT stored_path FROM label_files"):
        assert Path(stored).resolve().parent in {(inbox / "accepted").resolve(), (inbox / "rejected").resolve()}
    assert not [p for p in inbox.iterdir() if p.is_file()]


# ----------------------------------------------------------------------------- 9. network exposure
SERVING_PATTERNS = ("0.0.0.0", "INADDR_ANY", "host=''", 'host=""', "--host ::", "-h ::")


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines()]


def test_nothing_in_the_project_binds_all_interfaces():
    """Code, configuration and every documented command: no wildcard address (this file and the
    reliability note name it only to forbid it)."""
    allowed = {ROOT / "tests" / "test_security.py", ROOT / "docs" / "reliability.md"}
    hits = []
    for p in _tracked_files():
        if p in allowed or not p.is_file() or p.suffix in {".jpg", ".png", ".parquet", ".duckdb"}:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{p.relative_to(ROOT)}: {pat}" for pat in SERVING_PATTERNS if pat in text]
    assert hits == []


def test_make_ui_and_dagster_dev_default_to_loopback():
    # `make ui` passes -h $(UI_HOST), 127.0.0.1 unless the user sets UI_HOST, to the guarded UI (HostGuard)
    out = subprocess.run(["make", "-n", "ui"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if "al_assets.tools.ui" in ln)
    assert re.search(r"-m al_assets\.tools\.ui -h 127\.0\.0\.1 -p \d+ ", line), line
    # bare `dagster dev` passes no host to the webserver, whose default is 127.0.0.1
    from dagster._cli.dev import dev_command
    from dagster_webserver.cli import dagster_webserver

    assert not isinstance(next(p for p in dev_command.params if p.name == "host").default, str)
    assert next(p for p in dagster_webserver.params if p.name == "host").default == "127.0.0.1"
    # the demo starts only `dagster-daemon run` (checked to listen on loopback at most in
    # tests/test_reliability.py::test_daemon_fails_a_killed_run_retries_it_and_the_queue_goes_on)
    demo = (ROOT / "al_assets" / "tools" / "demo.py").read_text()
    assert '"run", "-w", "workspace.yaml"' in demo and "dagster-webserver" not in demo


# ----------------------------------------------------------------------------- 10. no unrestricted pickle
UNSAFE = [
    (r"\bpickle\.loads?\(", "pickle.load"),
    (r"\bcloudpickle\b|\bdill\b|\bjoblib\.load\(|\bshelve\.open\(|\bmarshal\.loads?\(", "pickle-like loader"),
    (r"read_pickle\(|\.unsafe_load\(|yaml\.load\((?![^)]*SafeLoader)", "unsafe deserialiser"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
]


def test_no_unrestricted_unpickling_in_the_code():
    hits = []
    for p in _tracked_files():
        if p.suffix != ".py" or p.parts[len(ROOT.parts)] == "tests" or not p.is_file():
            continue
        text = p.read_text(encoding="utf-8")
        for pat, what in UNSAFE:
            hits += [
                f"{p.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {what}" for m in re.finditer(pat, text)
            ]
        for m in re.finditer(r"torch\.load\(", text):  # every torch.load restricted to tensors
            depth, end = 0, m.end() - 1
            for end in range(m.end() - 1, len(text)):  # the call's balanced parentheses
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[m.start() : end + 1]
            if not re.search(r"weights_only\s*=\s*True", call):
                hits.append(f"{p.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {call}")
    assert hits == []


def test_no_asset_value_is_ever_unpickled(base_project):
    """Asset values travel as JSON rows in DuckDB (resources/store.py). An asset left on Dagster's default
    IO manager (which pickles) may only be a dependency, never an input, so nothing is ever unpickled."""
    from al_core.config import load_config

    defs = defs_for(load_config(base_project / "al.yaml"))
    graph = defs.resolve_asset_graph()
    pickled = {
        k
        for k in graph.get_all_asset_keys()
        if graph.get(k).is_materializable and graph.get(k).io_manager_key != "store_io_manager"
    }
    loaded = {
        key
        for ad in defs.assets
        if isinstance(ad, dg.AssetsDefinition)
        for name, key in ad.keys_by_input_name.items()
        if not ad.node_def.input_def_named(name).dagster_type.is_nothing
    }  # deps= carry no value
    assert not pickled & loaded, f"assets whose values would be unpickled: {pickled & loaded}"
    assert "io_manager" not in defs.resources or "pickle" not in type(defs.resources["io_manager"]).__name__.lower()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_planted_pickle_is_refused_by_the_probe_and_backbone_loaders(tmp_path, monkeypatch, fmt):
    from al_core.catalogue.store import Store, now, sha256_file
    from al_core.learn.probe import Probe
    from al_core.loop import LoopError, load_probe
    from al_core.models import backbones as B

    marker = tmp_path / "pwned"
    evil = plant_pickle(tmp_path / "evil.bin", "linear.weight", marker, fmt)
    # a real probe, recorded in the catalogue, then replaced on disk by the pickle
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    probe = Probe(n_classes=2, seed=0).fit(x, (x[:, 0] > 0).astype(np.int64))
    path = tmp_path / "probe-r0001.safetensors"
    sha = probe.save(path)
    store = Store(tmp_path / "w.duckdb")
    with store.transaction() as con:
        con.execute(
            "INSERT INTO probes (probe_id, round, version, trigger, path, sha256, config_id, n_labels, "
            "n_classes, seed, train_seconds, trained_at, run_id) "
            "VALUES ('p1', 1, 1, 'round', ?, ?, 'c', 40, 2, 0, 0.1, ?, NULL)",
            [str(path), sha, now()],
        )
    assert load_probe(store, "p1").predict(x).shape == (40,)
    path.write_bytes(evil.read_bytes())
    with pytest.raises(LoopError, match="sha256"):
        load_probe(store, "p1")  # the catalogue's hash no longer matches
    with store.transaction() as con:  # an attacker who can also write the catalogue
        con.execute("UPDATE probes SET sha256 = ? WHERE probe_id = 'p1'", [sha256_file(path)])
    with pytest.raises(Exception) as e:
        load_probe(store, "p1")  # safetensors only: the pickle is not a safetensors file
    assert "pickle" not in type(e.value).__name__.lower()
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError):  # not a safetensors file: refused before anything is unpickled
        Probe.load(evil)
    # where backbone weights are expected: the environment variable of a backbone without a pinned hash
    monkeypatch.setenv(B.weights_env_var("dinov2_vits14"), str(evil))
    with pytest.raises(B.WeightsRejectedError, match="weights_only"):
        B.load_backbone("dinov2_vits14", device="cpu")
    # and the project's default backbone, whose weights hash is pinned: refused before reading
    with pytest.raises(B.WeightsRejectedError, match="sha256"):
        B.load_backbone("efficientnet_lite0", weights_path=evil, device="cpu")
    assert not marker.exists(), "the pickle's payload ran"


# ----------------------------------------------------------------------------- 9. DNS rebinding
def _http(port: int, host_header: str, path: str = "/") -> tuple[int, bytes]:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host_header)
    c.endheaders()
    r = c.getresponse()
    out = (r.status, r.read())
    c.close()
    return out


def _websocket_status(port: int, host_header: str, path: str) -> int:
    """The status of a real websocket handshake (101: accepted)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = s.recv(4096).decode("latin-1")
    return int(head.split()[1])


def test_the_ui_guard_refuses_other_host_names_over_http_and_websockets():
    """A real server (uvicorn, as dagster-webserver runs it) behind HostGuard: `Host: evil.example` (what a
    rebound page's requests carry) gets 403, HTTP and websocket alike; the bound address, localhost and 127.0.0.1
    pass, the websocket upgrade too."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute

    from al_assets.tools.ui import HostGuard, allowed_hosts
    from tests.dagster_helpers import free_port

    async def ws(websocket):
        await websocket.accept()
        await websocket.close()

    app = Starlette(
        routes=[Route("/graphql", lambda request: PlainTextResponse("secret state")), WebSocketRoute("/graphql", ws)]
    )
    port = free_port()
    assert allowed_hosts("127.0.0.1", port) == {f"127.0.0.1:{port}", f"localhost:{port}"}
    assert f"[::1]:{port}" in allowed_hosts("::1", port)
    assert allowed_hosts("::", port) == {f"127.0.0.1:{port}", f"localhost:{port}"}  # the any-address names no host
    assert "ui.lab:8443" in allowed_hosts("127.0.0.1", port, ["ui.lab:8443"])
    server = uvicorn.Server(
        uvicorn.Config(
            HostGuard(app, allowed_hosts("127.0.0.1", port)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        for bad in (
            "evil.example",
            f"evil.example:{port}",
            "127.0.0.1",
            f"127.0.0.1.evil.example:{port}",
            f"localhost:{port + 1}",
            "",
        ):
            status, body = _http(port, bad, "/graphql")
            assert status == 403 and b"secret" not in body, (bad, status, body)
            assert _websocket_status(port, bad, "/graphql") == 403, bad
        for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert _http(port, good, "/graphql") == (200, b"secret state"), good
            assert _websocket_status(port, good, "/graphql") == 101, good
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# ----------------------------------------------------------------------------- 11. text from outside is inert
ACTIVE = ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\u2028")  # what a terminal would act on


@pytest.mark.slow  # a whole project round (6 s): make test runs it, make test-fast does not
def test_text_from_outside_is_inert_in_the_terminal_and_in_the_report(base_project, tmp_path, capsys):
    from al_core.cli import main as al
    from al_core.cli.common import json_safe, terminal_safe
    from al_core.reporting.report import write_report

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    batch = [r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 0 ORDER BY rank")]
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    who = "evil\x1b]0;pwned\x07\x1b[2J\u202e\x9b31m"  # sets the title, clears the screen, reverses text
    note = "line1\nFAKE: label accepted\r\x1b[31m"
    body = "image_id,label,annotator,note\n" + "".join(f'{i},{truth[i]},"{who}","{note}"\n' for i in batch)
    deliver(cfg.inbox / "esc\x1b[31m.csv", body)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    assert execute(defs, instance, requests_of(run_requests(defs, instance))[0]).success
    assert store.fetch("SELECT DISTINCT annotator FROM labels") == [(who,)]  # stored byte for byte
    conf = ["--config", cfg.source_file]
    capsys.readouterr()
    for argv in (
        ["lineage", batch[0]],
        ["lineage", batch[0], "--json"],
        ["rounds"],
        ["rounds", "--json"],
        ["status"],
        ["status", "--json"],
    ):
        assert al([*argv, *conf]) == 0, argv
        out = capsys.readouterr().out
        assert not any(c in out for c in ACTIVE), (argv, out)
    assert al(["lineage", batch[0], *conf]) == 0
    out = capsys.readouterr().out
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x9b31m" in out  # shown, escaped
    assert "line1\\x0aFAKE" in out and "\nFAKE" not in out  # a note cannot start a line of its own
    # al labels check: the file's name and contents, valid and rejected, JSON too
    check = deliver(tmp_path / "ch\x1b[2Jeck.csv", body)
    bad = deliver(tmp_path / "bad\x07.csv", f"image_id,label,annotator\n{batch[0]},nope\x1b[2J,{who}\n")
    for argv in (
        ["labels", "check", str(check)],
        ["labels", "check", str(check), "--json"],
        ["labels", "check", str(bad)],
        ["labels", "check", str(bad), "--json"],
        ["labels", "check", str(tmp_path / "gone\x1b[2J.csv")],
    ):
        al([*argv, *conf])
        got = capsys.readouterr()
        assert not any(c in got.out + got.err for c in ACTIVE), (argv, got)
    assert terminal_safe("a\tb\x00c") == "a\\x09b\\x00c" and terminal_safe("naïve 東京") == "naïve 東京"
    assert json.loads(json_safe({"k": who})) == {"k": who}  # still the same JSON
    # the report: paths and names from outside are HTML-escaped
    payload = '<script>alert(1)</script>"><img src=x onerror=alert(2)>.jpg'
    with store.transaction() as con:
        con.execute("UPDATE queries SET path = ? WHERE round = (SELECT max(round) FROM queries)", [payload])
    page = Path(write_report(store, cfg)).read_text()
    assert "<script>alert" not in page and "<img src=x" not in page and "&lt;script&gt;alert(1)" in page
