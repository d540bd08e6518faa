"""The sections of the project file as typed dataclasses, each setting with its rules as data.

``setting(default, **rules)`` declares a field and what a valid value is; the
rules are read by al_core.config.validate when the file loads:

- ``min`` / ``max``: inclusive bounds; ``gt``: an exclusive lower bound;
- ``choices``: a tuple of allowed values, or a function returning it (called at
  load, so the names come from the registries: strategies, backbones);
- ``nonblank``: a string that is not empty and has no surrounding whitespace;
- ``auto``: the word ``auto`` is accepted too (the tool chooses; the setting's users say how);
- ``mapping``: ``float`` or ``str``: a mapping of names (strings) to positive finite numbers, or to
  non-blank strings; stored as a tuple of (name, value) pairs sorted by name (``dict(...)`` of it is the
  mapping), so the sections stay immutable and hashable.

Floats must be finite. Integers are never coerced from floats or booleans,
booleans only come from YAML's ``true`` / ``false``.
"""

from dataclasses import dataclass, field


def _backbone_names() -> tuple[str, ...]:
    from al_core.models.backbones import list_backbones

    return tuple(list_backbones())


def _strategy_names() -> tuple[str, ...]:
    from al_core.learn.strategy_names import strategy_names

    return strategy_names()


def _seed_strategy_names() -> tuple[str, ...]:
    from al_core.learn.strategy_names import seed_strategy_names

    return seed_strategy_names()


def setting(default, **rules):
    """A dataclass field with its validation rules (see the module docstring)."""
    return field(default=default, metadata=rules)


@dataclass(frozen=True)
class ImagesConfig:
    root: str | None = setting("images", nonblank=True)
    manifest: str | None = setting(None, nonblank=True)


@dataclass(frozen=True)
class BackboneConfig:
    name: str = setting("efficientnet_lite0", choices=_backbone_names)
    image_size: int = setting(128, min=16, max=4096)
    weights_path: str | None = setting(None, nonblank=True)
    batch_size: int = setting(64, min=1, max=65536)


@dataclass(frozen=True)
class SelectionConfig:
    seed_strategy: str = setting("centroid", choices=_seed_strategy_names)
    query_strategy: str = setting("dropquery", choices=_strategy_names)
    budget_per_round: int = setting(10, min=1)
    total_budget: int = setting(200, min=1)
    answered_fraction: float = setting(1.0, gt=0.0, max=1.0)
    seed: int = setting(0, min=0)
    # the stabilising-predictions stop rule (al_core.value.stopping): suggested always, obeyed only when true
    stop_when_stable: bool = setting(False)
    stop_kappa: float = setting(0.99, gt=0.0, max=1.0)
    stop_window: int = setting(3, min=1, max=1000)
    # share of each query batch given to images to label again (al_core.loop.batch_rules); 0: none
    relabel_fraction: float = setting(0.0, min=0.0, max=0.5)
    # per-predicted-class quotas at the diverse pick (an extension of dropquery, docs/algorithms.md); off: the study's
    class_balance: bool = setting(False)


@dataclass(frozen=True)
class EvaluationConfig:
    # images held out of querying; "auto": al_core.loop.holdout.auto_holdout_size (from the pool and the classes)
    holdout: int | str = setting("auto", min=0, auto=True)
    labels_from_ground_truth: bool = setting(False)


# How the answers of several annotators make an image's training label (al_core.catalogue.label_views).
LABEL_POLICIES = ("latest", "majority", "unanimous")


@dataclass(frozen=True)
class LabelsConfig:
    skip_label: str = setting("skip", nonblank=True)
    image_url_template: str = setting("/data/local-files/?d={url_path}", nonblank=True)
    policy: str = setting("latest", choices=LABEL_POLICIES)
    propose_skipped_again: bool = setting(False)


# The fields an image URL template may name (al_core.labels.label_studio fills them): path (absolute), image_id,
# name (the file name), relpath (the path relative to label_studio.document_root) and url_path (relpath
# percent-encoded, / kept).
IMAGE_URL_FIELDS = ("path", "image_id", "name", "relpath", "url_path")


# Label Studio's export formats (its exportType names); `al labelstudio pull` writes one of them into the inbox.
LABEL_STUDIO_EXPORT_FORMATS = ("JSON", "JSON_MIN", "CSV", "TSV")


@dataclass(frozen=True)
class LabelStudioConfig:
    document_root: str | None = setting(None, nonblank=True)  # null: the parent of images.root (else /)
    prelabels: bool = setting(True)
    url: str | None = setting(None, nonblank=True)  # a team's server (http[s]://...); null: `al labelstudio serve`'s
    token_env: str = setting("LABEL_STUDIO_API_KEY", nonblank=True)  # the variable holding its token (never here)
    project: str | None = setting(None, nonblank=True)  # the Label Studio project's title; null: the project's name
    push_on_proposal: bool = setting(False)  # every proposed batch pushed as `al labelstudio push` does
    pull_in_sensor: bool = setting(False)  # every inbox-sensor tick pulls new annotations as `al labelstudio pull`
    pull_format: str = setting("JSON", choices=LABEL_STUDIO_EXPORT_FORMATS)  # JSON: skips and emails kept
    target_storage: bool = setting(False)  # push adds a Local Files target storage writing into paths.inbox


@dataclass(frozen=True)
class PathsConfig:
    data_dir: str = setting("data", nonblank=True)
    inbox: str = setting("data/inbox", nonblank=True)
    outbox: str = setting("data/outbox", nonblank=True)


@dataclass(frozen=True)
class SensorConfig:
    interval_s: int = setting(30, min=1, max=86_400)
    settle_s: float = setting(2.0, min=0.0, max=3600.0)
    ingest_before_round: bool = setting(True)


@dataclass(frozen=True)
class ScheduleConfig:
    retrain_cron: str | None = setting(None, nonblank=True)


@dataclass(frozen=True)
class StoreConfig:
    lock_timeout_s: float = setting(30.0, gt=0.0, max=86_400.0)
    vectors_url: str | None = setting(None, nonblank=True)  # fsspec URL of the part files; default <data_dir>/vectors


@dataclass(frozen=True)
class CostConfig:
    """What a label costs (al_core.value.cost): per label and per annotator hour, by role, times an overhead."""

    currency: str = setting("EUR", nonblank=True)
    per_label: float = setting(0.0, min=0.0)
    per_hour: float = setting(0.0, min=0.0)
    overhead: float = setting(1.0, min=1.0, max=100.0)  # review and management on top of the annotators' price
    role_per_label: tuple[tuple[str, float], ...] = setting((), mapping=float)
    role_per_hour: tuple[tuple[str, float], ...] = setting((), mapping=float)
    annotator_roles: tuple[tuple[str, str], ...] = setting((), mapping=str)  # annotator (as delivered) -> role


# the metrics of al_core.loop.evaluation.METRIC_NAMES (tests/test_value.py holds them equal)
TARGET_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclass(frozen=True)
class TargetConfig:
    metric: str = setting("accuracy", choices=TARGET_METRICS)
    value: float | None = setting(None, gt=0.0, max=1.0)  # null: no target, no projection to it


@dataclass(frozen=True)
class QualityConfig:
    # two images whose embeddings have at least this cosine similarity are near-duplicates (never in one batch)
    near_duplicate_cosine: float = setting(0.98, gt=0.0, max=1.0)
    # a class is flagged when it holds fewer training labels than this share of an even split
    class_floor: float = setting(0.25, min=0.0, max=1.0)
    # `al status` and the report warn when an agreement figure (Cohen's or Fleiss' kappa) is below this
    agreement_floor: float = setting(0.6, min=-1.0, max=1.0)


# section name in the file -> its dataclass (the `store:` section is ProjectConfig.store_cfg)
SECTIONS: dict[str, type] = {
    "images": ImagesConfig,
    "backbone": BackboneConfig,
    "selection": SelectionConfig,
    "evaluation": EvaluationConfig,
    "labels": LabelsConfig,
    "label_studio": LabelStudioConfig,
    "paths": PathsConfig,
    "sensor": SensorConfig,
    "schedule": ScheduleConfig,
    "store": StoreConfig,
    "cost": CostConfig,
    "target": TargetConfig,
    "quality": QualityConfig,
}
TOP_LEVEL_KEYS = ("name", "classes")
DEMO_PROJECT_NAME = "demo"  # the name of the repository's own al.yaml (make demo): commands say so when they use it
