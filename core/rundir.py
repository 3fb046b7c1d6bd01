"""The run directory: the on-disk contract between stages (see shared/ARCHITECTURE.md).

    runs/<name>/
      config.yaml              resolved config, exactly what ran
      data/                    split.parquet files: train/valid/test interactions, items, users
      model/                   query_tower/, item_tower/ SavedModels, vocab/, model_version
      vectors/<version>/       item vectors (Parquet shards) + manifest.json
      vectors/current
      index/<version>/         FAISS index + manifest.json
      index/current
      eval/                    metrics.json, report.md, *.png
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def query_tower(self) -> Path:
        return self.model / "query_tower"

    @property
    def item_tower(self) -> Path:
        return self.model / "item_tower"

    @property
    def model_version_file(self) -> Path:
        return self.model / "model_version"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def model_version(self) -> str:
        path = self.model_version_file
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {self.root} has no exported model; run `twotower train --run {self.root}` first"
            )
        return path.read_text().strip()

    def require(self, path: Path, how: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; {how}")
        return path
