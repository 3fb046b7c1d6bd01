"""twotower: CLI, typed config and run-directory orchestration for the two-tower retrieval system."""
from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

# The shipped configs are package data (pyproject.toml [tool.setuptools.package-data]), so they are found the
# same way in a checkout, an editable install and a wheel.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "demo.yaml"


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package (``demo``, ``full``, ``scaling_default``...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(path: str | os.PathLike) -> Path:
    """The file a ``--config``/``--grid`` argument means.

    An existing file wins (a directory of that name does not). Otherwise a shipped config is found by name: ``demo``, ``demo.yaml`` and the
    old checkout path ``configs/demo.yaml`` all mean ``twotower/configs/demo.yaml``. Anything else is
    returned unchanged, so the reader's "does not exist" error names what the user typed."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "configs"):
        name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
        packaged = CONFIG_DIR / name
        if packaged.is_file():
            return packaged
    return path
