"""Default locations and the environment variables that move them.

Every default path is relative to the project folder (the working directory of
`make` and of `dagster dev -w workspace.yaml`). README.md lists them in one
table; keep the two in step.
"""

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_IMAGE_SIZE = 128  # px; 224 is the model's native size (3.5x slower on 2 CPU cores)
DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    db_path: Path
    vectors_dir: Path
    image_root: Path
    dagster_home: Path

    @classmethod
    def from_env(cls) -> "Paths":
        data = Path(os.environ.get("AL_DATA_DIR", "data")).absolute()
        return cls(
            data_dir=data,
            db_path=Path(os.environ.get("AL_DB", data / "warehouse.duckdb")).absolute(),
            vectors_dir=Path(os.environ.get("AL_VECTORS_DIR", data / "vectors")).absolute(),
            image_root=Path(os.environ.get("AL_IMAGE_ROOT", "examples/cifar10-2k")).absolute(),
            dagster_home=Path(os.environ.get("DAGSTER_HOME", data / "dagster_home")).absolute(),
        )
