import os
from pathlib import Path

import pytest

# Never touch the network: a hub look-up fails in well under a second.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = ROOT / "examples" / "cifar10-2k"
CLASSES = sorted(p.name for p in SAMPLE_ROOT.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def sample_root() -> Path:
    return SAMPLE_ROOT


@pytest.fixture()
def store(tmp_path):
    from al_core.catalogue.store import Store

    return Store(tmp_path / "warehouse.duckdb", lock_timeout_s=2)


@pytest.fixture(scope="session")
def base_project(tmp_path_factory) -> Path:
    """A small project ingested and seeded once per session (tests/reliability_helpers.py); copy it per test."""
    from tests.reliability_helpers import build_base_project

    return build_base_project(tmp_path_factory)


# Tests that drive Dagster, a server or the whole loop: `make test` runs them, `make test-fast` (the pure library,
# under 2 minutes on an idle 2-core machine) leaves them out.
INTEGRATION_MODULES = {
    "test_reliability",
    "test_loop",
    "test_dagster_dev",
    "test_browser",
    "test_dagster_ingest",
    "test_scale_out",
    "test_audit",
    "test_report",
    "test_labelstudio_server",
    "test_hostile_files",
    "test_recovery",
    "test_label_policy",
    "test_label_studio_exports",
    "test_value_dagster",
    "test_quality_loop",
    "test_integrity_dagster",
    "test_labelstudio_roundtrip",
    "test_quickstart",
    "test_ingest_before_round",
    "test_bench_round_daemon",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)
