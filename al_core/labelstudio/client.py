"""A small Label Studio REST client (standard library only) for what the labelling loop needs.

Endpoints (Label Studio 1.23; ``Authorization: Token <token>``, legacy tokens on):

- projects: ``GET/POST /api/projects``, ``PATCH /api/projects/<id>``;
- source storage: ``POST /api/storages/localfiles`` (never synced here: a sync would turn every image into a task);
- target storage: ``POST /api/storages/export/localfiles``, ``POST .../<id>/sync``;
- tasks: ``POST /api/projects/<id>/import?return_task_ids=true`` (tasks with ``predictions``),
  ``GET /api/tasks?project=<id>`` (paged);
- annotations: ``POST /api/tasks/<id>/annotations/``, ``PATCH /api/annotations/<id>/``, drafts
  ``POST /api/tasks/<id>/drafts``;
- users: ``GET /api/users``, ``GET /api/invite``; a second annotator signs up through the invite link
  (``/user/signup/``, a session with Django's CSRF token) and reads its token from ``/api/current-user/token``;
- exports: ``GET /api/projects/<id>/export?exportType=JSON|JSON_MIN|CSV|TSV[&download_all_tasks=true]``.

An HTTP error raises ``LabelStudioAPIError`` with the method, path, status and Label Studio's message; no answer
at all (refused, unknown host, timeout) raises ``LabelStudioUnreachable``. The token is never part of a message.
"""

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

EXPORT_FORMATS = ("JSON", "JSON_MIN", "CSV", "TSV")
TASK_PAGE_SIZE = 500  # tasks per GET /api/tasks page; a page of 500 image tasks is ~0.5 MB of JSON
TIMEOUT_S = 120  # one request; an export of a large project is built synchronously by the server


class LabelStudioAPIError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str):
        self.method, self.path, self.status, self.body = method, path, status, body
        super().__init__(f"Label Studio {method} {path}: HTTP {status}: {self.reason}")

    @property
    def reason(self) -> str:
        """Label Studio's own words: its validation errors, else its ``detail``, else the body (500 characters)."""
        try:
            answer = json.loads(self.body)
        except ValueError:
            return self.body[:500]
        if not isinstance(answer, dict):
            return self.body[:500]
        errors = answer.get("validation_errors")
        if isinstance(errors, dict) and errors:
            return "; ".join(" ".join(map(str, v)) if isinstance(v, list) else str(v) for v in errors.values())[:500]
        return str(answer.get("detail") or self.body)[:500]


class LabelStudioUnreachable(RuntimeError):
    """No HTTP answer from the server (connection refused, unknown host, timeout)."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"no answer from Label Studio at {url}: {reason}")


@dataclass(frozen=True)
class Export:
    """One export as Label Studio sent it: the bytes and the file name of its Content-Disposition."""

    export_type: str
    download_all_tasks: bool
    filename: str
    content: bytes


def choice_result(choice: str | list[str] | None, *, from_name: str = "label", to_name: str = "image") -> list[dict]:
    """The ``result`` of a single-choice annotation or prediction (``[]`` for None: an empty annotation)."""
    if choice is None:
        return []
    choices = [choice] if isinstance(choice, str) else list(choice)
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": choices}}]


class LabelStudioClient:
    def __init__(self, url: str, token: str, *, timeout_s: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, *, params: dict | None = None, raw: bool = False):
        """One API call: the decoded JSON answer (None for 204), or (bytes, headers) with ``raw``."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                content = r.read()
                if raw:
                    return content, r.headers
                return json.loads(content) if content else None
        except urllib.error.HTTPError as e:
            raise LabelStudioAPIError(method, path, e.code, e.read().decode(errors="replace")) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise LabelStudioUnreachable(self.url, str(getattr(e, "reason", e))) from None

    def get_bytes(self, path_or_url: str) -> bytes:
        """The bytes behind a server path such as a task's ``/data/local-files/?d=...`` image URL."""
        path = path_or_url[len(self.url) :] if path_or_url.startswith(self.url) else path_or_url
        content, _ = self.request("GET", path, raw=True)
        return content

    # -- projects ---------------------------------------------------------------------------------------------------
    def projects(self) -> list[dict]:
        out, page = [], 1
        while True:
            answer = self.request("GET", "/api/projects", params={"page": page, "page_size": 100})
            out += answer["results"]
            if not answer.get("next"):
                return out
            page += 1

    def upsert_project(self, title: str, label_config: str, **fields) -> dict:
        """The project titled ``title`` with this labelling config: created, or its config (and fields) updated
        (left alone when they are already so)."""
        found = self.find_project(title)
        body = {"title": title, "label_config": label_config, **fields}
        if found:
            same = {
                k: (found.get(k) or "").strip() == v.strip() if k == "label_config" else found.get(k) == v
                for k, v in body.items()
            }  # Label Studio keeps the config without its final newline
            if all(same.values()):
                return found
            return self.request("PATCH", f"/api/projects/{found['id']}", body)
        return self.request("POST", "/api/projects", body)

    def find_project(self, title: str) -> dict | None:
        """The project titled ``title``, or None; ValueError when several are."""
        found = [p for p in self.projects() if p["title"] == title]
        if len(found) > 1:
            raise ValueError(f"{len(found)} Label Studio projects are titled {title!r}: rename or delete the extras")
        return found[0] if found else None

    def validate_config(self, label_config: str) -> None:
        self.request("POST", "/api/projects/validate/", {"label_config": label_config})

    # -- storages ---------------------------------------------------------------------------------------------------
    def add_local_files_source(self, project_id: int, path: str, *, title: str = "images") -> dict:
        """A Local Files import storage on ``path`` (must be strictly under the server's document root); not synced.

        Label Studio serves ``/data/local-files/?d=...`` only for files under such a storage's path.
        """
        return self.request(
            "POST",
            "/api/storages/localfiles",
            {
                "project": project_id,
                "path": str(path),
                "title": title,
                "use_blob_urls": True,
            },
        )

    def add_local_files_target(
        self, project_id: int, path: str, *, title: str = "inbox", can_delete_objects: bool = False
    ) -> dict:
        """A Local Files target storage writing into ``path`` (under the document root) on every Submit/Update."""
        return self.request(
            "POST",
            "/api/storages/export/localfiles",
            {
                "project": project_id,
                "path": str(path),
                "title": title,
                "can_delete_objects": can_delete_objects,
            },
        )

    def local_files_sources(self, project_id: int) -> list[dict]:
        return self.request("GET", "/api/storages/localfiles", params={"project": project_id})

    def local_files_targets(self, project_id: int) -> list[dict]:
        return self.request("GET", "/api/storages/export/localfiles", params={"project": project_id})

    def sync_target(self, storage_id: int) -> dict:
        """Write every existing annotation into the target storage (later ones are written as they are saved)."""
        return self.request("POST", f"/api/storages/export/localfiles/{storage_id}/sync")

    # -- tasks ------------------------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks (``{"data": ..., "predictions": [...]}``); the new task ids, in order."""
        answer = self.request("POST", f"/api/projects/{project_id}/import", tasks, params={"return_task_ids": "true"})
        return answer["task_ids"]

    def tasks(self, project_id: int) -> list[dict]:
        out, page = [], 1
        while True:
            answer = self.request(
                "GET", "/api/tasks", params={"project": project_id, "page": page, "page_size": TASK_PAGE_SIZE}
            )
            out += answer["tasks"]
            if len(out) >= answer["total"] or not answer["tasks"]:
                return out
            page += 1

    def task(self, task_id: int) -> dict:
        return self.request("GET", f"/api/tasks/{task_id}/")

    # -- annotations ------------------------------------------------------------------------------------------------
    def annotate(
        self, task_id: int, result: list[dict], *, was_cancelled: bool = False, lead_time: float | None = None, **fields
    ) -> dict:
        """Submit (or, with ``was_cancelled``, skip) a task as this client's user."""
        body = {"result": result, "was_cancelled": was_cancelled, **fields}
        if lead_time is not None:
            body["lead_time"] = lead_time
        return self.request("POST", f"/api/tasks/{task_id}/annotations/", body)

    def update_annotation(self, annotation_id: int, result: list[dict], **fields) -> dict:
        return self.request("PATCH", f"/api/annotations/{annotation_id}/", {"result": result, **fields})

    def annotations(self, task_id: int) -> list[dict]:
        return self.request("GET", f"/api/tasks/{task_id}/annotations/")

    def save_draft(self, task_id: int, result: list[dict], *, lead_time: float | None = None) -> dict:
        body = {"result": result}
        if lead_time is not None:
            body["lead_time"] = lead_time
        return self.request("POST", f"/api/tasks/{task_id}/drafts", body)

    # -- users ------------------------------------------------------------------------------------------------------
    def whoami(self) -> dict:
        return self.request("GET", "/api/current-user/whoami")

    def users(self) -> list[dict]:
        return self.request("GET", "/api/users")

    def invite_token(self) -> str:
        return self.request("GET", "/api/invite")["token"]

    def sign_up(self, email: str, password: str) -> "LabelStudioClient":
        """A new user of this organisation (through its invite link); a client acting as that user."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        signup = f"{self.url}/user/signup/?token={urllib.parse.quote(self.invite_token())}"
        page = opener.open(signup, timeout=self.timeout_s).read().decode(errors="replace")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not match:
            raise LabelStudioAPIError("GET", "/user/signup/", 200, "no CSRF token in the sign-up page")
        form = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": match.group(1), "email": email, "password": password}
        ).encode()
        req = urllib.request.Request(signup, data=form, method="POST", headers={"Referer": signup})
        with opener.open(req, timeout=self.timeout_s) as r:
            r.read()
        try:
            with opener.open(self.url + "/api/current-user/token", timeout=self.timeout_s) as r:
                token = json.loads(r.read())["token"]
        except urllib.error.HTTPError as e:
            raise LabelStudioAPIError(
                "POST", "/user/signup/", e.code, f"sign-up of {email} did not log in (weak password or taken email?)"
            ) from None
        return LabelStudioClient(self.url, token, timeout_s=self.timeout_s)

    # -- exports ----------------------------------------------------------------------------------------------------
    def export_formats(self, project_id: int) -> list[dict]:
        return self.request("GET", f"/api/projects/{project_id}/export/formats")

    def export(self, project_id: int, export_type: str = "JSON", *, download_all_tasks: bool = False) -> Export:
        """The project's export in one of EXPORT_FORMATS; only tasks with annotations unless download_all_tasks."""
        if export_type not in EXPORT_FORMATS:
            raise ValueError(f"export_type must be one of {', '.join(EXPORT_FORMATS)}, not {export_type!r}")
        params = {
            "exportType": export_type,
            "download_all_tasks": str(download_all_tasks).lower(),
            "download_resources": "false",
        }
        content, headers = self.request("GET", f"/api/projects/{project_id}/export", params=params, raw=True)
        disposition = headers.get("Content-Disposition", "")
        match = re.search(r'filename="?([^";]+)"?', disposition)
        return Export(export_type, download_all_tasks, match.group(1) if match else "", content)
