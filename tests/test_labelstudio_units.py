"""al_core.labelstudio without a server: task URLs, the server's environment and account, the client's errors."""

import json
import os
import stat
from pathlib import Path

import pytest

from al_core.labelstudio.client import LabelStudioAPIError, LabelStudioClient, choice_result
from al_core.labelstudio.server import (
    ACCOUNT_FILE,
    LabelStudioError,
    LabelStudioServer,
    load_or_create_account,
    server_env,
)
from al_core.labelstudio.urls import (
    LocalFilesPathError,
    document_root_for,
    local_files_url,
    path_from_local_files_url,
)

NAMES = {
    "plain.jpg": "plain.jpg",
    "c+d.jpg": "c%2Bd.jpg",
    "r&d.jpg": "r%26d.jpg",
    "x#1.jpg": "x%231.jpg",
    "with space.jpg": "with%20space.jpg",
    "é.jpg": "%C3%A9.jpg",
    "50%.jpg": "50%25.jpg",
    "a?b=c.jpg": "a%3Fb%3Dc.jpg",
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_local_files_url_encodes_relative_to_the_document_root(tmp_path, name):
    root = tmp_path / "images"
    url = local_files_url(root / "cat" / name, document_root_for(root))
    assert url == f"/data/local-files/?d=images/cat/{NAMES[name]}"
    assert str(path_from_local_files_url(url)) == f"images/cat/{name}"
    assert str(path_from_local_files_url("http://127.0.0.1:8080" + url)) == f"images/cat/{name}"
    assert local_files_url(Path("images") / name, tmp_path, host="http://ls:8080/") == (
        f"http://ls:8080/data/local-files/?d=images/{NAMES[name]}"
    )


def test_paths_outside_the_document_root_are_refused(tmp_path):
    with pytest.raises(LocalFilesPathError, match="not under the Label Studio document root"):
        local_files_url(tmp_path.parent / "elsewhere.jpg", tmp_path / "images")
    with pytest.raises(LocalFilesPathError, match="not a file under"):
        local_files_url(tmp_path / "images" / ".." / "x.jpg", tmp_path / "images")
    with pytest.raises(LocalFilesPathError, match="not a file under"):
        local_files_url(tmp_path, tmp_path)
    with pytest.raises(LocalFilesPathError, match="no parent folder"):
        document_root_for("/")
    with pytest.raises(LocalFilesPathError, match="not a Label Studio local-files URL"):
        path_from_local_files_url("/data/upload/1/x.jpg")
    with pytest.raises(LocalFilesPathError, match="without a d= path"):
        path_from_local_files_url("/data/local-files/?x=1")


def test_server_env_sets_ours_and_drops_shadowing_variables(tmp_path, monkeypatch):
    for k in ("USERNAME", "HOST", "PORT", "LABEL_STUDIO_BASE_DATA_DIR", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"):
        monkeypatch.setenv(k, "from-the-shell")
    env = server_env(tmp_path / "ls", tmp_path, task_files=False, extra={"X_EXTRA": "1"})
    assert not {"USERNAME", "HOST", "PORT"} & set(env)
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path / "ls")
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path)
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert env["LABEL_STUDIO_LATEST_VERSION_CHECK"] == "false" and env["SENTRY_DSN"] == ""
    assert env["FUTURE_SAVE_TASK_TO_STORAGE"] == "false" and env["X_EXTRA"] == "1"
    assert server_env(tmp_path, tmp_path)["FUTURE_SAVE_TASK_TO_STORAGE"] == "true"


def test_the_account_is_created_once_private_and_reused(tmp_path):
    a = load_or_create_account(tmp_path / "ls")
    path = tmp_path / "ls" / ACCOUNT_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(a.token) == 40 and set(a.token) <= set("0123456789abcdef") and len(a.password) >= 20
    assert load_or_create_account(tmp_path / "ls", email="other@example.com") == a
    assert json.loads(path.read_text())["email"] == "admin@example.com"


def test_server_refuses_what_label_studio_would(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(LabelStudioError, match="must be a parent folder of the images"):
        LabelStudioServer(tmp_path / "ls", tmp_path / "images", document_root=tmp_path / "images")
    with pytest.raises(LabelStudioError, match="make labelstudio"):
        LabelStudioServer(tmp_path / "ls", tmp_path / "images", executable=tmp_path / "nope").start()
    s = LabelStudioServer(tmp_path / "ls", tmp_path / "images", port=8099)
    assert s.url == "http://127.0.0.1:8099" and s.document_root == tmp_path


def test_client_errors_name_the_call(tmp_path):
    assert choice_result(None) == []
    assert choice_result("cat") == [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
    ]
    with pytest.raises(ValueError, match="export_type must be one of JSON, JSON_MIN, CSV, TSV"):
        LabelStudioClient("http://127.0.0.1:9", "t").export(1, "COCO")
    err = LabelStudioAPIError("GET", "/api/projects", 401, '{"detail": "Invalid token."}')
    # the message carries Label Studio's own words (its detail, or its validation errors); the body is kept whole
    assert str(err) == "Label Studio GET /api/projects: HTTP 401: Invalid token."
    assert err.body == '{"detail": "Invalid token."}'
    err = LabelStudioAPIError(
        "POST",
        "/api/storages/localfiles",
        400,
        json.dumps(
            {"detail": "Validation error", "validation_errors": {"non_field_errors": ["must be a subdirectory"]}}
        ),
    )
    assert str(err) == "Label Studio POST /api/storages/localfiles: HTTP 400: must be a subdirectory"
    assert str(LabelStudioAPIError("GET", "/x", 502, "<html>Bad gateway</html>")).endswith(
        "HTTP 502: <html>Bad gateway</html>"
    )


def test_the_server_binds_loopback_unless_told_otherwise(tmp_path):
    from al_core.labelstudio.server import LabelStudioError, LabelStudioServer, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.10") and not is_loopback("example.org") and not is_loopback("::")
    images = tmp_path / "project" / "images"
    images.mkdir(parents=True)
    with pytest.raises(LabelStudioError, match="not a loopback address.*--allow-remote"):
        LabelStudioServer(tmp_path / "ls", images, host="192.0.2.10")
    told = LabelStudioServer(tmp_path / "ls", images, host="192.0.2.10", allow_remote=True, port=8123)
    assert told.command()[told.command().index("--internal-host") + 1] == "192.0.2.10"
    assert told.url == "http://192.0.2.10:8123"
    ipv6 = LabelStudioServer(tmp_path / "ls", images, host="::1", port=8124)
    assert ipv6.url == "http://[::1]:8124" and ipv6.document_root == tmp_path / "project"
