"""The project file (`al.yaml`): every setting of a labelling project in one place.

`al init` writes a commented default (DEFAULT_YAML). `load_config(path)` reads it
into typed, validated dataclasses; relative paths are relative to the folder
holding the file. Unknown keys are errors (a typo must not be silently ignored).
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_ENV = "AL_CONFIG"
DEFAULT_CONFIG_NAME = "al.yaml"

DEFAULT_YAML = """\
# al-pipeline project file. Relative paths are relative to this file's folder.

images:
  root: examples/cifar10-2k       # folder scanned recursively (<root>/<class>/<file> gives ground truth)
  manifest: null                  # or a CSV with a `path` column (and optional `class`) instead of root

# Class names, in order; labels must be one of these (or the skip label).
# null: taken from the ground-truth folder names under images.root.
classes: null

backbone:
  name: efficientnet_lite0        # `al backbones` lists every name
  image_size: 128                 # px (efficientnet_lite0); DINOv2 / OpenCLIP use their own
  weights_path: null              # local weights file for air-gapped sites
  batch_size: 64

selection:
  seed_strategy: centroid         # round 0: random | centroid | typiclust | probcover
  query_strategy: dropquery       # later rounds: any name of al_core.learn.strategies.list_strategies()
  budget_per_round: 10            # images proposed per round (the study: the number of classes)
  total_budget: 200               # stop proposing once this many images were proposed in all
  answered_fraction: 1.0          # share of a query set that must be labelled before the next round
  seed: 0                         # base random seed; round r uses seed + r

evaluation:
  holdout: 500                    # images held out of querying (stratified by ground truth when known); 0: none
  labels_from_ground_truth: false # true only for simulation: hold-out labels come from the folder names
  # labelled evaluation images can also be delivered as label files into <inbox>/eval/

labels:
  skip_label: skip                # an annotator's "cannot tell": recorded, never proposed again, not trained on
  image_url_template: "/data/local-files/?d={path}"   # Label Studio task URL; {path}, {image_id}, {name}

paths:
  data_dir: data                  # database, vectors, probes, reports, Dagster home
  inbox: data/inbox               # annotators deliver label files here
  outbox: data/outbox             # query sets are written here

sensor:
  interval_s: 30                  # how often the inbox is looked at
  settle_s: 2.0                   # a file modified more recently than this is left for the next tick
  ingest_before_round: true       # queue an ingest run (scan + embed new images) before each round run

schedule:
  retrain_cron: null              # e.g. "0 3 * * *": retrain the probe on all labels nightly; null: off

store:
  lock_timeout_s: 30              # how long a writer waits for a reader to release the database
"""


class ConfigError(ValueError):
    """The project file is malformed; the message names the key."""


@dataclass(frozen=True)
class ImagesConfig:
    root: str | None = "examples/cifar10-2k"
    manifest: str | None = None


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "efficientnet_lite0"
    image_size: int = 128
    weights_path: str | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class SelectionConfig:
    seed_strategy: str = "centroid"
    query_strategy: str = "dropquery"
    budget_per_round: int = 10
    total_budget: int = 200
    answered_fraction: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class EvaluationConfig:
    holdout: int = 500
    labels_from_ground_truth: bool = False


@dataclass(frozen=True)
class LabelsConfig:
    skip_label: str = "skip"
    image_url_template: str = "/data/local-files/?d={path}"


@dataclass(frozen=True)
class PathsConfig:
    data_dir: str = "data"
    inbox: str = "data/inbox"
    outbox: str = "data/outbox"


@dataclass(frozen=True)
class SensorConfig:
    interval_s: int = 30
    settle_s: float = 2.0
    ingest_before_round: bool = True


@dataclass(frozen=True)
class ScheduleConfig:
    retrain_cron: str | None = None


@dataclass(frozen=True)
class StoreConfig:
    lock_timeout_s: float = 30.0
    vectors_url: str | None = None  # fsspec URL of the vector part files (docs/scale-out.md); default <data_dir>/vectors


@dataclass(frozen=True)
class ProjectConfig:
    base_dir: str = "."
    images: ImagesConfig = field(default_factory=ImagesConfig)
    classes: tuple[str, ...] | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    store_cfg: StoreConfig = field(default_factory=StoreConfig)  # the `store:` section (al_core.catalogue.open_store)
    source_file: str | None = None

    # -- resolved paths ---------------------------------------------------------
    def resolve(self, p: str | None) -> Path | None:
        if p is None:
            return None
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else (Path(self.base_dir) / q).absolute()

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.paths.data_dir)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def vectors_dir(self) -> Path:
        return self.data_dir / "vectors"

    @property
    def vectors_location(self) -> str | Path:
        """Where the vector part files live: ``store.vectors_url`` (fsspec URL) or ``vectors_dir``."""
        return self.store_cfg.vectors_url or self.vectors_dir

    @property
    def probes_dir(self) -> Path:
        return self.data_dir / "probes"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def inbox(self) -> Path:
        return self.resolve(self.paths.inbox)

    @property
    def outbox(self) -> Path:
        return self.resolve(self.paths.outbox)

    @property
    def image_root(self) -> Path | None:
        return self.resolve(self.images.root) if not self.images.manifest else None

    @property
    def manifest(self) -> Path | None:
        return self.resolve(self.images.manifest)

    def class_names(self, store=None) -> tuple[str, ...]:
        """The configured classes, or the ground-truth folder names found by the scan."""
        if self.classes:
            return tuple(self.classes)
        if store is not None:
            rows = store.fetch("SELECT DISTINCT class_name FROM ground_truth ORDER BY class_name")
            if rows:
                return tuple(r[0] for r in rows)
        root = self.image_root
        if root and root.is_dir():
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if names:
                return tuple(names)
        raise ConfigError("no class list: set `classes:` in the project file (or use class folders under images.root)")


_SECTIONS = {
    "images": ImagesConfig, "backbone": BackboneConfig, "selection": SelectionConfig,
    "evaluation": EvaluationConfig, "labels": LabelsConfig, "paths": PathsConfig,
    "sensor": SensorConfig, "schedule": ScheduleConfig, "store": StoreConfig,
}


def _build(cls, data: dict, where: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    out = {}
    for k, v in data.items():
        default = fields[k].default
        if v is not None and default is not None and not isinstance(default, str | type(None)):
            typ = type(default)
            try:
                v = typ(v) if typ is not bool else (v if isinstance(v, bool) else _bool(v, f"{where}.{k}"))
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{k}: expected {typ.__name__}, got {v!r}") from None
        elif v is not None and isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"{where}.{k}: expected a string, got {v!r}")
        out[k] = v
    return cls(**out)


def _bool(v, where):
    if isinstance(v, str) and v.lower() in ("true", "yes", "1"):
        return True
    if isinstance(v, str) and v.lower() in ("false", "no", "0"):
        return False
    raise ConfigError(f"{where}: expected true or false, got {v!r}")


def from_dict(data: dict, base_dir: str | os.PathLike = ".", source_file: str | None = None) -> ProjectConfig:
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("the project file must be a mapping of sections")
    unknown = sorted(set(data) - set(_SECTIONS) - {"classes"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(set(_SECTIONS) | {'classes'})}")
    kw = {("store_cfg" if name == "store" else name): _build(cls, data.get(name), name)
          for name, cls in _SECTIONS.items()}
    classes = data.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise ConfigError("classes: expected a non-empty list of names")
        if len(set(classes)) != len(classes):
            raise ConfigError("classes: duplicate names")
        classes = tuple(classes)
    cfg = ProjectConfig(base_dir=str(Path(base_dir).absolute()), classes=classes, source_file=source_file, **kw)
    _validate(cfg)
    return cfg


def _validate(cfg: ProjectConfig) -> None:
    s = cfg.selection
    if s.budget_per_round < 1:
        raise ConfigError("selection.budget_per_round must be at least 1")
    if s.total_budget < s.budget_per_round:
        raise ConfigError("selection.total_budget must be at least selection.budget_per_round")
    if not 0.0 < s.answered_fraction <= 1.0:
        raise ConfigError("selection.answered_fraction must be in (0, 1]")
    if cfg.evaluation.holdout < 0:
        raise ConfigError("evaluation.holdout must be >= 0")
    if cfg.sensor.interval_s < 1:
        raise ConfigError("sensor.interval_s must be at least 1")
    if cfg.classes and cfg.labels.skip_label in cfg.classes:
        raise ConfigError(f"labels.skip_label {cfg.labels.skip_label!r} is also a class name")


def find_config_path(path: str | os.PathLike | None = None) -> Path | None:
    """The explicit path, else $AL_CONFIG, else ./al.yaml if present."""
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    p = Path(DEFAULT_CONFIG_NAME)
    return p if p.exists() else None


def load_config(path: str | os.PathLike | None = None) -> ProjectConfig:
    """Read the project file (see find_config_path); the defaults when there is none."""
    p = find_config_path(path)
    if p is None:
        return from_dict(yaml.safe_load(DEFAULT_YAML), base_dir=".", source_file=None)
    if not p.exists():
        raise ConfigError(f"project file {p} does not exist (`al init` writes one)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return from_dict(data, base_dir=p.absolute().parent, source_file=str(p.absolute()))
