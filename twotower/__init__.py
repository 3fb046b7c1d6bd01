"""twotower: CLI, typed config and run-directory orchestration for the two-tower retrieval system."""
from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

# The shipped configs are package data (pyproject.toml [tool.setuptools.package-data]), so they are found the
# same way in a checkout, an editable install and a wheel.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# the default of `twotower train/describe/eval` without --config: the fast recipe (about a minute; the tests use it)
DEFAULT_CONFIG = CONFIG_DIR / "demo.yaml"
# what `twotower demo` / `make demo` runs: the best recipe (issue 17), about 3 minutes of training on 2 idle cores
DEMO_CONFIG = CONFIG_DIR / "full.yaml"


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package (``demo``, ``full``, ``scaling_default``...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def shipped_run_configs() -> list[str]:
    """Names of the shipped configs that are run configs (``demo``, ``full``), not study grids."""
    import yaml

    keys = {"name", "data", "train", "index", "eval"}
    out = []
    for name in packaged_configs():
        data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()) or {}
        if isinstance(data, dict) and set(data) <= keys:
            out.append(name)
    return out


def missing_config_message(path: str | os.PathLike, what: str = "config file") -> str:
    """Why ``path`` names no config: neither a file nor a shipped config; lists the shipped ones and the
    closest name."""
    import difflib

    names = shipped_run_configs()
    given = Path(path).stem if Path(path).suffix in (".yaml", ".yml") else Path(path).name
    close = difflib.get_close_matches(given, names, n=1)
    hint = f" (did you mean --config {close[0]}?)" if close else ""
    return (f"{what} {path} does not exist and is not a shipped config{hint}; shipped run configs: "
            f"{', '.join(names)} (name one, e.g. --config full) or give the path of a YAML file")


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
