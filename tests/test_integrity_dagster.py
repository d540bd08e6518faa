"""Issue 16, item 5 and issue 12, item 7, through Dagster: a damaged vector part fails a round run with one
line naming the part and `al verify --repair`, and the loop goes on once it is repaired; an unusable image
root fails ``raw_images`` with one line naming ``images.root`` and the fix."""

import dagster as dg
import yaml

from al_core.catalogue import open_store
from al_core.cli import main as al
from al_core.config import load_config
from tests.loop_helpers import answer_batch, run_requests
from tests.reliability_helpers import copy_project, defs_for, requests_of


def _run(defs, instance, request):
    job = defs.resolve_job_def(request.job_name)
    if request.partition_key is not None:
        instance.add_dynamic_partitions("rounds", [request.partition_key])
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config or None,
        tags=request.tags,
        raise_on_error=False,
    )


def _failures(result) -> dict[str, str]:
    """step -> the description of its Failure (None when the step raised anything else), per failed step."""
    out = {}
    for e in result.all_events:
        if e.is_step_failure:
            user = e.step_failure_data.user_failure_data
            out[e.step_key] = user.description if user is not None else None
    return out


def test_a_damaged_part_fails_the_round_with_one_line_and_the_round_completes_after_repair(
    base_project, tmp_path, capsys
):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    rel = store.fetch("SELECT rel_path FROM embedding_parts ORDER BY shard, part_id")[0][0]
    part = store.vectors_dir / rel
    part.write_bytes(part.read_bytes()[:100])  # truncated
    answer_batch(cfg, store, 0)

    reqs = requests_of(run_requests(defs, instance))  # the sensor does not need vectors: it still asks
    assert [r.job_name for r in reqs] == ["round_job"]
    res = _run(defs, instance, reqs[0])
    assert not res.success
    failed = _failures(res)
    assert list(failed) == ["probe"], failed
    msg = failed["probe"]
    assert str(part) in msg and "al verify --repair" in msg and len(msg.splitlines()) == 1, msg
    assert "Traceback" not in msg
    assert store.fetch("SELECT count(*) FROM probes") == [(0,)]

    assert al(["verify", "--repair", "--config", str(cfg.source_file)]) == 0
    assert al(["ingest", "--config", str(cfg.source_file)]) == 0  # embeds the dropped images again
    assert al(["verify", "--config", str(cfg.source_file)]) == 0
    capsys.readouterr()
    for _ in range(3):  # the sensor asks again (a resume key after the failed run), and the round completes
        reqs = requests_of(run_requests(defs, instance))
        if not reqs:
            break
        assert all(_run(defs, instance, r).success for r in reqs)
    assert store.fetch("SELECT count(*) FROM probes") == [(1,)]
    assert (cfg.outbox / "round-0001.csv").exists()


def test_raw_images_with_an_unusable_image_root_fails_with_one_line_naming_the_setting(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("no images here")
    (tmp_path / "al.yaml").write_text(
        yaml.safe_dump({"images": {"root": "images"}, "classes": ["a", "b"], "paths": {"data_dir": "data"}})
    )
    cfg = load_config(tmp_path / "al.yaml")
    res = (
        defs_for(cfg)
        .resolve_job_def("ingest_job")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not res.success
    failed = _failures(res)
    assert list(failed) == ["raw_images"], failed
    assert failed["raw_images"] == (
        f"images.root (in {tmp_path / 'al.yaml'}): {tmp_path / 'images'} holds no image files (.bmp .gif .jpeg "
        ".jpg .png .tif .tiff .webp); put the images there (one folder per class gives ground truth) or set "
        "images.root to the folder that holds them"
    )
