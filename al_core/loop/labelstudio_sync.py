"""Push a batch to Label Studio and pull its annotations into the inbox (``al labelstudio push|pull``).

Which server (``connect``): ``--url`` (else ``label_studio.url``) with the token in the environment variable
``label_studio.token_env`` (``LABEL_STUDIO_API_KEY`` by default; never printed, never in the project file); with
neither, the project's own server started by ``al labelstudio serve`` (found by ``<data_dir>/label-studio``'s
``label-studio.url`` while it runs, its token in ``account.json`` there).

``push_batch``: the Label Studio project titled ``label_studio.project`` (default: the project's name) created, or
its labelling config updated, with the outbox's ``label-studio-config.xml``; a Local Files import storage on the
image folder (never synced) when task images use local-files URLs; with ``label_studio.target_storage`` a Local
Files target storage writing into the inbox; then every open batch's tasks (``round-NNNN.label-studio.json``, with
their pre-labels) imported, except the tasks already there: a task is known by its ``task_key`` (round and image
id), so pushing again never duplicates one.

``pull_annotations``: Label Studio's JSON export of the project; when it holds an annotation not seen by an earlier
pull (an annotation id, or a later ``updated_at``: an update), the export in ``label_studio.pull_format`` is written
into the inbox atomically under a new name (``label-studio-<project>-<UTC time>-<sha>.<ext>``), where the inbox
sensor ingests it. A JSON pull holds only the tasks with something new, each annotator written as the user object
``{id, email, first_name, last_name}`` (the shape of Label Studio's own target-storage files), so the label history
names people by email; the other formats are Label Studio's whole export as it writes it. Nothing is applied twice
whatever is pulled: the label history counts a repeated answer once, and an updated annotation replaces the
annotator's earlier answer. What was seen is kept in ``<data_dir>/label-studio-pull.json`` (written after the
inbox file; losing it only makes the next pull write the whole export again).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.files.atomic import atomic_write_text, atomic_write_unique
from al_core.files.hashing import SHORT_ID_CHARS
from al_core.files.safe import is_regular_file, open_regular
from al_core.labelstudio.client import LabelStudioAPIError, LabelStudioClient, LabelStudioUnreachable
from al_core.labelstudio.server import ACCOUNT_FILE, running_url
from al_core.labelstudio.urls import LOCAL_FILES_PREFIX
from al_core.loop.outbox import LABEL_STUDIO_CONFIG, batch_tasks_json, repair_outbox

PULL_STATE_FILE = "label-studio-pull.json"  # under data_dir: annotation id -> updated_at seen, per server and project
PULL_SUFFIX = {"JSON": ".json", "JSON_MIN": ".json", "CSV": ".csv", "TSV": ".csv"}  # TSV as .csv, as Label Studio does
AUTH_STATUSES = (401, 403)


class LabelStudioUserError(RuntimeError):
    """A problem the user fixes (no server, a refused token, no open batch): a one-line message naming the fix."""


def local_server_dir(cfg: ProjectConfig) -> Path:
    return cfg.data_dir / "label-studio"


def connect(cfg: ProjectConfig, url: str | None = None, token: str | None = None) -> LabelStudioClient:
    """A client for the server of the module docstring, its token checked (LabelStudioUserError otherwise)."""
    env = cfg.label_studio.token_env
    url = url or cfg.label_studio.url
    if url:
        token = token or os.environ.get(env)
        if not token:
            raise LabelStudioUserError(
                f"no API token for {url}: put the token of your Label Studio account (Account & "
                f"Settings) into the environment variable {env}"
            )
        where = f"the token in ${env}"
    else:
        folder = local_server_dir(cfg)
        url = running_url(folder)
        if url is None:
            raise LabelStudioUserError(
                "no Label Studio to talk to: start the project's own with `al labelstudio "
                f"serve`, or give a team server's address with --url (token in ${env})"
            )
        token = token or json.loads((folder / ACCOUNT_FILE).read_text())["token"]
        where = f"the token of {folder / ACCOUNT_FILE}"
    client = LabelStudioClient(url, token)
    try:
        client.whoami()
    except LabelStudioUnreachable as e:
        raise LabelStudioUserError(
            f"cannot reach Label Studio at {url} ({e.reason}): start it (`al labelstudio "
            "serve` for the project's own) or correct --url / label_studio.url"
        ) from None
    except LabelStudioAPIError as e:
        if e.status in AUTH_STATUSES:
            raise LabelStudioUserError(
                f"Label Studio at {url} refused {where} (HTTP {e.status}): use the token shown under Account & "
                f"Settings, with legacy API tokens enabled for the organisation"
            ) from None
        raise LabelStudioUserError(
            f"Label Studio at {url} answered HTTP {e.status} to the token check: is it a Label Studio server?"
        ) from None
    return client


def project_title(cfg: ProjectConfig) -> str:
    return cfg.label_studio.project or cfg.name


def _read_outbox_json(path: Path):
    with open_regular(path) as f:
        return json.loads(f.read())


def _batch_tasks(store, cfg: ProjectConfig) -> tuple[list[int], list[dict]]:
    """The open batches and their import tasks (outbox files rewritten first where a run left one missing)."""
    with store.connect(read_only=True, view=False) as con:
        rounds = [r for r, _ in rounds_q.open_batches(con)]
    if not rounds:
        raise LabelStudioUserError(
            "no open batch to push: the loop proposes one (`make demo`, or the inbox sensor's "
            "next round run); `al status` shows where the loop stands"
        )
    if any(not is_regular_file(batch_tasks_json(cfg.outbox, r)) for r in rounds) or not is_regular_file(
        cfg.outbox / LABEL_STUDIO_CONFIG
    ):
        repair_outbox(store, cfg, cfg.class_names(store))
    tasks = [t for r in rounds for t in _read_outbox_json(batch_tasks_json(cfg.outbox, r))]
    return rounds, tasks


def _ensure_storages(client: LabelStudioClient, cfg: ProjectConfig, project_id: int, tasks: list[dict]) -> dict:
    out = {"source_storage": None, "target_storage": None}
    local = any(str(t["data"].get("image", "")).startswith(LOCAL_FILES_PREFIX) for t in tasks)
    if local and cfg.image_root is not None:
        path = str(cfg.image_root)
        found = [s for s in client.local_files_sources(project_id) if s.get("path") == path]
        out["source_storage"] = (found[0] if found else client.add_local_files_source(project_id, path))["id"]
    if cfg.label_studio.target_storage:
        path = str(cfg.inbox)
        cfg.inbox.mkdir(parents=True, exist_ok=True)
        found = [s for s in client.local_files_targets(project_id) if s.get("path") == path]
        if found:
            out["target_storage"] = found[0]["id"]
        else:
            out["target_storage"] = client.add_local_files_target(project_id, path)["id"]
            client.sync_target(out["target_storage"])
    return out


def push_batch(store, cfg: ProjectConfig, client: LabelStudioClient) -> dict:
    """Create or update the project and import the open batch (the module docstring); what was done."""
    rounds, tasks = _batch_tasks(store, cfg)
    config = (cfg.outbox / LABEL_STUDIO_CONFIG).read_text(encoding="utf-8")
    try:
        project = client.upsert_project(project_title(cfg), config)
        storages = _ensure_storages(client, cfg, project["id"], tasks)
        there = {t["data"].get("task_key") for t in client.tasks(project["id"])}
        new = [t for t in tasks if t["data"]["task_key"] not in there]
        ids = client.import_tasks(project["id"], new) if new else []
    except LabelStudioAPIError as e:
        raise LabelStudioUserError(f"Label Studio refused the push: {e}") from None
    return {
        "url": client.url,
        "project_id": project["id"],
        "title": project_title(cfg),
        "rounds": rounds,
        "tasks": len(tasks),
        "imported": len(ids),
        "already_there": len(tasks) - len(ids),
        **storages,
    }


# -- pull ------------------------------------------------------------------------------------------------------------
def _state_key(client: LabelStudioClient, project_id: int) -> str:
    return f"{client.url}#{project_id}"


def _read_state(cfg: ProjectConfig) -> dict:
    path = cfg.data_dir / PULL_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (ValueError, OSError):  # missing or unreadable: the next pull writes the whole export
        return {}
    return state if isinstance(state, dict) and all(isinstance(v, dict) for v in state.values()) else {}


def _user_objects(client: LabelStudioClient) -> dict[int, dict]:
    return {u["id"]: {k: u.get(k) for k in ("id", "email", "first_name", "last_name")} for u in client.users()}


def pull_annotations(
    cfg: ProjectConfig,
    client: LabelStudioClient,
    *,
    export_type: str | None = None,
    now: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.UTC),
) -> dict:
    """Write the project's new annotations into the inbox (the module docstring); what was written."""
    fmt = export_type or cfg.label_studio.pull_format
    title = project_title(cfg)
    try:
        project = client.find_project(title)
        if project is None:
            raise LabelStudioUserError(
                f"Label Studio at {client.url} has no project titled {title!r}: push a batch "
                "first (`al labelstudio push`)"
            )
        tasks = json.loads(client.export(project["id"], "JSON").content)
        state = _read_state(cfg)
        seen = state.get(_state_key(client, project["id"]), {})
        current = {str(a["id"]): a.get("updated_at") or a.get("created_at") for t in tasks for a in t["annotations"]}
        fresh = [t for t in tasks if any(seen.get(str(a["id"])) != current[str(a["id"])] for a in t["annotations"])]
        out = {
            "url": client.url,
            "project_id": project["id"],
            "format": fmt,
            "annotations": len(current),
            "new_or_updated": sum(seen.get(k) != v for k, v in current.items()),
            "file": None,
        }
        if not fresh:
            return out
        if fmt == "JSON":
            users = _user_objects(client)
            for t in fresh:
                for a in t["annotations"]:
                    a["completed_by"] = users.get(a.get("completed_by"), a.get("completed_by"))
            content = json.dumps(fresh, ensure_ascii=False).encode()
        else:
            content = client.export(project["id"], fmt).content
    except LabelStudioUnreachable as e:
        raise LabelStudioUserError(f"cannot reach Label Studio at {client.url} ({e.reason}): start it again") from None
    except LabelStudioAPIError as e:
        raise LabelStudioUserError(f"Label Studio refused the pull: {e}") from None
    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    sha = hashlib.sha256(content).hexdigest()[:SHORT_ID_CHARS]
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    name = f"label-studio-{project['id']}-{stamp}-{sha}{PULL_SUFFIX[fmt]}"
    out["file"] = str(atomic_write_unique(cfg.inbox / name, content))
    out["tasks_written"] = len(fresh) if fmt == "JSON" else None
    state[_state_key(client, project["id"])] = current
    atomic_write_text(cfg.data_dir / PULL_STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")
    return out


# -- from the loop (Dagster's runs and sensor): never fatal, a log line either way ------------------------------------
def push_if_configured(store, cfg: ProjectConfig) -> tuple[bool, str] | None:
    """``label_studio.push_on_proposal``: push the open batch; (ok, what to log), or None when the setting is off.

    A failure never fails the proposal (the batch is in the outbox either way): it is reported for the log."""
    if not cfg.label_studio.push_on_proposal:
        return None
    try:
        r = push_batch(store, cfg, connect(cfg))
    except (LabelStudioUserError, OSError, ValueError) as e:
        return False, f"label_studio.push_on_proposal: not pushed ({e}); push it later with `al labelstudio push`"
    return True, (
        f"pushed batch {', '.join(map(str, r['rounds']))} to Label Studio project {r['project_id']} at "
        f"{r['url']}: {r['imported']} task(s) imported, {r['already_there']} already there"
    )


def pull_if_configured(cfg: ProjectConfig) -> tuple[bool, str] | None:
    """``label_studio.pull_in_sensor``: pull new annotations into the inbox; (ok, what to log), or None when off."""
    if not cfg.label_studio.pull_in_sensor:
        return None
    try:
        r = pull_annotations(cfg, connect(cfg))
    except (LabelStudioUserError, OSError, ValueError) as e:
        return False, f"label_studio.pull_in_sensor: nothing pulled ({e})"
    if r["file"] is None:
        return True, f"label_studio.pull_in_sensor: nothing new in Label Studio project {r['project_id']}"
    return True, f"label_studio.pull_in_sensor: {r['new_or_updated']} new or updated annotation(s) into {r['file']}"
