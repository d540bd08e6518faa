"""The project file (`al.yaml`): every setting of a labelling project in one place.

``load_config(path)`` reads it once into typed, frozen dataclasses
(al_core.config.schema) and checks every setting as it loads
(al_core.config.validate): unknown keys and names get "did you mean", values
are never silently coerced, and settings that depend on each other are checked
together. Relative paths are relative to the folder holding the file. `al init`
writes the commented defaults (al_core.config.template.DEFAULT_YAML).
"""

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from al_core.config.schema import (
    IMAGE_URL_FIELDS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    BackboneConfig,
    CostConfig,
    EvaluationConfig,
    ImagesConfig,
    LabelsConfig,
    LabelStudioConfig,
    PathsConfig,
    QualityConfig,
    ScheduleConfig,
    SelectionConfig,
    SensorConfig,
    StoreConfig,
    TargetConfig,
)
from al_core.config.template import DEFAULT_YAML
from al_core.config.validate import (
    ConfigError,
    build_section,
    check_classes,
    check_cron,
    check_url_template,
    did_you_mean,
)
from al_core.learn.strategy_names import CLASS_BALANCE_STRATEGIES

CONFIG_ENV = "AL_CONFIG"
DEFAULT_CONFIG_NAME = "al.yaml"

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_YAML",
    "BackboneConfig",
    "ConfigError",
    "EvaluationConfig",
    "ImagesConfig",
    "LabelStudioConfig",
    "LabelsConfig",
    "PathsConfig",
    "ProjectConfig",
    "QualityConfig",
    "ScheduleConfig",
    "SelectionConfig",
    "SensorConfig",
    "StoreConfig",
    "CostConfig",
    "TargetConfig",
    "config_origin",
    "find_config_path",
    "from_dict",
    "load_config",
]


@dataclass(frozen=True)
class ProjectConfig:
    base_dir: str = "."
    name: str = "my-project"
    images: ImagesConfig = field(default_factory=ImagesConfig)
    classes: tuple[str, ...] | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    label_studio: LabelStudioConfig = field(default_factory=LabelStudioConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    store_cfg: StoreConfig = field(default_factory=StoreConfig)  # the `store:` section (al_core.catalogue.open_store)
    cost: CostConfig = field(default_factory=CostConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
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

    @property
    def document_root(self) -> Path:
        """The folder task image paths are made relative to (Label Studio's local-files document root):
        ``label_studio.document_root``, else the image root's parent, else the filesystem root (a manifest)."""
        if self.label_studio.document_root:
            return self.resolve(self.label_studio.document_root)
        root = self.image_root
        return root.parent if root is not None and root.parent != root else Path(Path.cwd().anchor or "/")

    def class_names(self, store=None) -> tuple[str, ...]:
        """The configured classes, or the ground-truth folder names found by the scan."""
        if self.classes:
            return tuple(self.classes)
        if store is not None:
            from al_core.catalogue.images import ground_truth_classes

            with store.connect(read_only=True, view=False) as con:
                names = ground_truth_classes(con)
            if names:
                return names
        root = self.image_root
        if root and root.is_dir():
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if names:
                return tuple(names)
        raise ConfigError("no class list: set `classes:` in the project file (or use class folders under images.root)")


def from_dict(data: dict, base_dir: str | os.PathLike = ".", source_file: str | None = None) -> ProjectConfig:
    """A checked ProjectConfig from the parsed YAML mapping (None or {}: every default)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("the project file must be a mapping of sections (images:, selection:, ...)")
    known = [*SECTIONS, *TOP_LEVEL_KEYS]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown section {key!r}{did_you_mean(key, known)} (known: {', '.join(known)})")
    sections = {
        ("store_cfg" if name == "store" else name): build_section(cls, data.get(name), name)
        for name, cls in SECTIONS.items()
    }
    classes = check_classes(data.get("classes"), sections["labels"].skip_label)
    name = data.get("name", ProjectConfig.name)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"name: expected a project name without surrounding spaces, got {name!r}")
    cfg = ProjectConfig(
        base_dir=str(Path(base_dir).absolute()), name=name, classes=classes, source_file=source_file, **sections
    )
    _check_together(cfg)
    return cfg


def _nested(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _check_together(cfg: ProjectConfig) -> None:
    """Settings that are valid alone but not together."""
    s = cfg.selection
    if s.total_budget < s.budget_per_round:
        raise ConfigError(
            f"selection.total_budget ({s.total_budget}) must be at least selection.budget_per_round "
            f"({s.budget_per_round})"
        )
    if _nested(cfg.inbox, cfg.outbox):
        raise ConfigError(
            f"paths.inbox ({cfg.inbox}) and paths.outbox ({cfg.outbox}) must be separate folders, "
            "neither inside the other: annotators' files and the tool's batches would mix"
        )
    check_url_template(cfg.labels.image_url_template, IMAGE_URL_FIELDS, "labels.image_url_template")
    root, doc_root = cfg.image_root, cfg.document_root
    if cfg.label_studio.document_root and root is not None and doc_root != root and doc_root not in root.parents:
        raise ConfigError(
            f"label_studio.document_root ({doc_root}) must contain images.root ({root}): task image "
            "paths are made relative to it"
        )
    if s.class_balance and s.query_strategy not in CLASS_BALANCE_STRATEGIES:
        raise ConfigError(
            f"selection.class_balance applies to the diverse pick of "
            f"{', '.join(CLASS_BALANCE_STRATEGIES)}; query_strategy {s.query_strategy!r} has "
            "none: set class_balance: false"
        )
    if cfg.schedule.retrain_cron is not None:
        check_cron(cfg.schedule.retrain_cron, "schedule.retrain_cron")
    roles = sorted({r for r, _ in cfg.cost.role_per_label} | {r for r, _ in cfg.cost.role_per_hour})
    for annotator, role in cfg.cost.annotator_roles:
        if role not in roles:
            raise ConfigError(
                f"cost.annotator_roles.{annotator}: unknown role {role!r}{did_you_mean(role, roles)} "
                f"(roles are the names under cost.role_per_label and cost.role_per_hour: "
                f"{', '.join(roles) or 'none yet'})"
            )
    _check_label_studio(cfg)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_label_studio(cfg: ProjectConfig) -> None:
    ls = cfg.label_studio
    if ls.url is not None:
        parts = urllib.parse.urlsplit(ls.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(
                f"label_studio.url: expected the server's address such as http://host:8080, got {ls.url!r}"
            )
    if not _ENV_NAME.match(ls.token_env):
        raise ConfigError(
            f"label_studio.token_env: expected the name of an environment variable (letters, digits, "
            f"_), got {ls.token_env!r}; the token itself never goes into the project file"
        )
    if ls.target_storage and cfg.document_root not in cfg.inbox.parents:
        raise ConfigError(
            f"label_studio.target_storage needs paths.inbox ({cfg.inbox}) under the document root "
            f"({cfg.document_root}): Label Studio writes only below it; move the inbox or set "
            "label_studio.document_root to a folder holding both"
        )


def find_config_path(path: str | os.PathLike | None = None) -> Path | None:
    """The explicit path, else $AL_CONFIG, else ./al.yaml if present (None: no project file)."""
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    p = Path(DEFAULT_CONFIG_NAME)
    return p if p.exists() else None


def config_origin(path: str | os.PathLike | None = None) -> str:
    """How the project file is chosen: '--config', '$AL_CONFIG' or './al.yaml' (the default look-up)."""
    if path:
        return "--config"
    return f"${CONFIG_ENV}" if os.environ.get(CONFIG_ENV) else f"./{DEFAULT_CONFIG_NAME}"


NO_PROJECT_FILE = (
    f"no project file: give --config PATH, set ${CONFIG_ENV}, or run in the project's folder "
    f"(./{DEFAULT_CONFIG_NAME}); `al init --images DIR --classes a,b,c` writes one"
)


def _yaml_error(p: Path, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
    return ConfigError(f"{where}: not valid YAML: {problem}")


def load_config(path: str | os.PathLike | None = None) -> ProjectConfig:
    """Read and check the project file (see find_config_path); a ConfigError when there is none.

    Every error is a ConfigError whose one-line message starts with the file's path.
    """
    p = find_config_path(path)
    if p is None:
        raise ConfigError(NO_PROJECT_FILE)
    if not p.exists():
        hint = f" (${CONFIG_ENV} names it)" if not path and os.environ.get(CONFIG_ENV) else ""
        raise ConfigError(f"project file {p} does not exist{hint}: `al init {p}` writes one")
    if p.is_dir():
        raise ConfigError(f"project file {p} is a folder: give the path of the YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot be read: {e}") from None
    try:
        return from_dict(data, base_dir=p.absolute().parent, source_file=str(p.absolute()))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
