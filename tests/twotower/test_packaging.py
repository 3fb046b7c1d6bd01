"""The shipped configs are package data: a wheel (a non-editable install) contains them and finds them by name."""
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from twotower import CONFIG_DIR, DEFAULT_CONFIG, DEMO_CONFIG, packaged_configs, resolve_config_path, shipped_run_configs

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_are_found_by_name_and_by_the_old_checkout_path(tmp_path, monkeypatch):
    assert DEFAULT_CONFIG == CONFIG_DIR / "demo.yaml" and DEFAULT_CONFIG.is_file()
    assert {"demo", "full", "scaling_default", "scaling_movielens"} <= set(packaged_configs())
    monkeypatch.chdir(tmp_path)  # not the checkout: nothing named configs/ here
    for given in ("demo", "demo.yaml", "configs/demo.yaml", "./configs/demo.yaml"):
        assert resolve_config_path(given) == DEFAULT_CONFIG, given
    assert resolve_config_path("full") == CONFIG_DIR / "full.yaml"
    mine = tmp_path / "configs" / "demo.yaml"  # a user's own file of the same name wins
    mine.parent.mkdir()
    mine.write_text("name: mine\n")
    assert resolve_config_path("configs/demo.yaml") == Path("configs/demo.yaml")
    (tmp_path / "full").mkdir()  # a directory named like a shipped config does not shadow it
    assert resolve_config_path("full") == CONFIG_DIR / "full.yaml"
    assert resolve_config_path("nope") == Path("nope")  # unknown names are left for the reader's error
    assert resolve_config_path("elsewhere/demo.yaml") == Path("elsewhere/demo.yaml")


def test_missing_config_names_the_shipped_ones(tmp_path, monkeypatch, capsys):
    from twotower.cli import main
    from twotower.config import load_config

    monkeypatch.chdir(tmp_path)
    assert shipped_run_configs() == ["demo", "full"]  # the study grids are not run configs
    with pytest.raises(FileNotFoundError, match=r"^config file nope.yaml does not exist and is not a shipped config; "
                                                r"shipped run configs: demo, full \(name one, e.g. --config full\) or "
                                                r"give the path of a YAML file$"):
        load_config("nope.yaml")
    for typo in ("fulll", "configs/ful.yaml"):
        with pytest.raises(FileNotFoundError, match=rf"config file {typo} does not exist and is not a shipped config "
                                                    r"\(did you mean --config full\?\); shipped run configs: demo, full"):
            load_config(typo)
    assert main(["demo", "--config", "fulll", "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower demo: error: config file fulll does not exist") and "--config full?" in err
    assert not (tmp_path / "r").exists()


def test_the_demo_runs_the_best_recipe_and_the_fast_one_stays_the_default_elsewhere():
    from twotower.cli import build_parser

    assert DEMO_CONFIG == CONFIG_DIR / "full.yaml"
    assert build_parser().parse_args(["demo"]).config == DEMO_CONFIG
    assert build_parser().parse_args(["train", "--run", "r"]).config is None  # -> the run's config, else demo.yaml
    assert "$(VENV)/bin/twotower demo\n" in (ROOT / "Makefile").read_text()  # make demo = twotower demo's default


def _build_wheel(tmp_path: Path) -> Path:
    """Build the project's wheel from a copy of its sources (the build writes build/ and *.egg-info)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("twotower-*.whl")
    return wheel


def test_a_wheel_ships_the_configs_and_a_non_editable_install_uses_them(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"twotower/configs/{p.name}" for p in CONFIG_DIR.glob("*.yaml")}
    assert expected and expected <= names, sorted(n for n in names if "config" in n)
    # A non-editable install of a pure-Python wheel is its unpacked contents on sys.path; run from a
    # directory with no checkout in it so nothing can be found through the source tree.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import twotower, core\n"
            "from twotower.config import load_config\n"
            "from twotower.studies.scaling.grid import load_grid\n"
            f"assert twotower.__file__.startswith({str(site)!r}), twotower.__file__\n"
            f"assert core.__file__.startswith({str(site)!r}), core.__file__\n"
            "print(load_config(twotower.DEFAULT_CONFIG).name,\n"
            "      load_config('full').name, load_config('configs/demo.yaml').name,\n"
            "      type(load_grid('scaling_default')).__name__)\n")
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["demo", "full", "demo", "ScalingGrid"]
