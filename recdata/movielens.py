"""MovieLens-100K from the RecBole 1.2.1 wheel on PyPI, and the MovieLens feature tables.

Where the data comes from: the ``recbole==1.2.1`` wheel ships ``recbole/dataset_example/ml-100k/`` as
RecBole atomic files (tab separated, UTF-8, header ``name:type`` with type token | token_seq | float |
float_seq)::

    ml-100k.inter  user_id:token  item_id:token  rating:float  timestamp:float     100,000 rows
    ml-100k.item   item_id:token  movie_title:token_seq  release_year:token  class:token_seq   1,682 rows
    ml-100k.user   user_id:token  age:token  gender:token  occupation:token  zip_code:token     943 rows
    ml-100k.kg, ml-100k.link     knowledge-graph side files (extracted, not loaded)

``fetch_movielens_100k`` downloads the wheel with pip (PyPI is the one network source the toolkit
needs), extracts those files into ``<cache_dir>/ml-100k`` atomically and never imports RecBole.

The feature tables built here are shared with ``recdata.grouplens`` so every MovieLens source gives
the same features:

  items  title (text, trailing "(1995)" removed), genres (multi_categorical), year (numeric, NaN if
         unknown)
  users  age (numeric, years; ML-1M gives the bucket's lower bound), age_bucket (categorical, the
         ML-1M buckets), gender, occupation (categorical), zip1 / zip3 (categorical: first 1 / 3
         characters of the zip code, upper-cased)
  interactions  user_id, item_id, timestamp (int64 s), rating (float32, 1–5; not a weight: every
         rating is one implicit interaction)
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recdata import columns as C
from recdata.schema import Dataset, FeatureSpec
from core import artifacts
from core.errors import OperationFailed

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
DIRNAME = "ml-100k"
ATOMIC_FILES = {"inter": "ml-100k.inter", "item": "ml-100k.item", "user": "ml-100k.user"}

ITEM_FEATURES = (
    FeatureSpec("title", "text"),
    FeatureSpec("genres", "multi_categorical"),
    FeatureSpec("year", "numeric"),
)
USER_FEATURES = (
    FeatureSpec("age", "numeric"),
    FeatureSpec("age_bucket", "categorical"),
    FeatureSpec("gender", "categorical"),
    FeatureSpec("occupation", "categorical"),
    FeatureSpec("zip1", "categorical"),
    FeatureSpec("zip3", "categorical"),
)
#: ML-1M age buckets (lower bounds) and their labels; ages are bucketed with the same edges.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
_TRAILING_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


# --------------------------------------------------------------------------------------------- fetch
def pip_download_command(dest: str | os.PathLike) -> list[str]:
    """The exact command used to fetch the wheel (module-level so tests can substitute it)."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", RECBOLE_REQUIREMENT, "-d", str(dest)]


def is_complete(directory: str | os.PathLike) -> bool:
    """True if ``directory`` holds a finished extraction (manifest present and every file verified)."""
    directory = Path(directory)
    if not (directory / artifacts.MANIFEST).is_file():
        return False
    try:
        manifest = artifacts.verify_manifest(directory)
    except ValueError:
        return False
    return all(name in manifest.get("files", {}) for name in ATOMIC_FILES.values())


def fetch_movielens_100k(cache_dir: str | os.PathLike, wheel: str | os.PathLike | None = None,
                         timeout_s: float = 600.0) -> Path:
    """Make ``<cache_dir>/ml-100k`` hold the RecBole ML-100K atomic files and return that path.

    Idempotent: a complete directory (manifest verified) is returned as is. Otherwise the wheel is
    downloaded with ``pip download`` (or ``wheel`` is used if given: a local ``recbole-1.2.1-*.whl``
    for offline machines), its ``recbole/dataset_example/ml-100k/*`` members are extracted into a
    temporary directory inside ``cache_dir`` with a manifest, and that directory is moved into place
    with ``os.replace``, so a crash never leaves a half-written ``ml-100k``.
    """
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / DIRNAME
    if is_complete(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise ValueError(
            f"{target} exists but is not a complete MovieLens-100K extraction (no valid "
            f"{artifacts.MANIFEST}); it was not written by fetch_movielens_100k or was modified. "
            f"Delete {target} and fetch again, or load it directly with load_movielens_100k({str(target)!r})"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ml-100k-fetch-", dir=cache_dir) as tmp:
        tmp = Path(tmp)
        wheel_path = Path(wheel).expanduser() if wheel is not None else _download_wheel(tmp, timeout_s)
        staging = tmp / DIRNAME
        _extract_dataset(wheel_path, staging)
        artifacts.write_manifest(staging, {
            "kind": "movielens-100k",
            "source": f"{RECBOLE_REQUIREMENT} wheel {wheel_path.name}",
            "wheel_sha256": artifacts.sha256_file(wheel_path),
        })
        if target.exists():  # empty directory left by someone else: os.replace may replace it
            try:
                target.rmdir()
            except OSError:
                pass
        try:
            os.replace(staging, target)
        except OSError:
            if not is_complete(target):  # not a concurrent fetch that won the race
                raise
        artifacts.fsync_dir(cache_dir)
    return target


def _download_wheel(dest: Path, timeout_s: float) -> Path:
    cmd = pip_download_command(dest)
    shown = " ".join(cmd)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise OperationFailed(
            f"`{shown}` did not finish within {timeout_s:.0f} s; PyPI is slow or unreachable. Retry, or "
            "download the wheel elsewhere and pass it with fetch_movielens_100k(cache_dir, wheel=PATH)"
        ) from None
    except OSError as exc:
        raise OperationFailed(f"could not run `{shown}`: {exc}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-6:])
        raise OperationFailed(
            f"`{shown}` failed with exit code {proc.returncode} (offline, a proxy, or no PyPI access?):\n"
            f"{tail}\nFix network access to PyPI (pip honours PIP_INDEX_URL / HTTPS_PROXY), or download "
            f"recbole-1.2.1-py3-none-any.whl elsewhere and pass it with "
            f"fetch_movielens_100k(cache_dir, wheel=PATH)"
        )
    wheels = sorted(dest.glob("recbole-*.whl"))
    if len(wheels) != 1:
        raise OperationFailed(f"`{shown}` succeeded but {dest} holds {sorted(p.name for p in dest.iterdir())}, "
                           "not exactly one recbole wheel")
    return wheels[0]


def _extract_dataset(wheel: Path, dest: Path) -> None:
    if not wheel.is_file():
        raise FileNotFoundError(f"wheel {wheel} does not exist; pass the path of recbole-1.2.1-py3-none-any.whl")
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise ValueError(f"{wheel} is not a wheel (zip) file; download it again") from None
    with zf:
        members = [m for m in zf.infolist()
                   if m.filename.startswith(WHEEL_MEMBER_PREFIX) and not m.is_dir()
                   and "/" not in m.filename[len(WHEEL_MEMBER_PREFIX):]]
        names = {m.filename[len(WHEEL_MEMBER_PREFIX):] for m in members}
        missing = [f for f in ATOMIC_FILES.values() if f not in names]
        if missing:
            raise ValueError(f"{wheel} has no {[WHEEL_MEMBER_PREFIX + f for f in missing]}; it is not the "
                             f"{RECBOLE_REQUIREMENT} wheel (found {sorted(names)})")
        dest.mkdir(parents=True)
        for m in members:
            out = dest / m.filename[len(WHEEL_MEMBER_PREFIX):]
            with zf.open(m) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())


# ---------------------------------------------------------------------------------------------- load
def read_atomic_file(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read one RecBole atomic file: returns (table with plain column names, {name: atomic type}).

    All values are kept as strings (missing → NaN); the caller converts them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fetch the data with fetch_movielens_100k(cache_dir) "
                                "or point at a directory holding ml-100k.inter/.item/.user")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""],
                     quoting=csv.QUOTE_NONE, encoding="utf-8")
    types, names = {}, []
    for col in df.columns:
        name, _, typ = str(col).rpartition(":")
        if not name or typ not in _ATOMIC_TYPES:
            raise ValueError(f"{path}: header field {col!r} is not 'name:type' with type in "
                             f"{list(_ATOMIC_TYPES)}; this is not a RecBole atomic file")
        types[name] = typ
        names.append(name)
    df.columns = names
    if len(df) == 0:
        raise ValueError(f"{path} has a header but no rows; re-fetch the data (delete the directory first)")
    return df, types


def load_movielens_100k(path: str | os.PathLike) -> Dataset:
    """Load the RecBole ML-100K atomic files in ``path`` (a directory) as a validated ``Dataset``.

    Interactions keep the source row order of ``ml-100k.inter``; items and users keep their file order.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; call fetch_movielens_100k(cache_dir) first and "
                                "pass the directory it returns")
    files = {k: path / v for k, v in ATOMIC_FILES.items()}
    inter, _ = read_atomic_file(files["inter"])
    C.require_columns(inter, ["user_id", "item_id", "timestamp"], str(files["inter"]))
    item, _ = read_atomic_file(files["item"])
    C.require_columns(item, ["item_id", "movie_title", "release_year", "class"], str(files["item"]))
    user, _ = read_atomic_file(files["user"])
    C.require_columns(user, ["user_id", "age", "gender", "occupation", "zip_code"], str(files["user"]))

    interactions = movie_interactions(inter["user_id"], inter["item_id"], inter["timestamp"],
                                      inter["rating"] if "rating" in inter else None, str(files["inter"]))
    genres = C.to_multi(item["class"], " ", f"{files['item']}: column 'class'")
    items = movie_items(item["item_id"], item["movie_title"], genres, year=item["release_year"],
                        where=str(files["item"]))
    users = movie_users(user["user_id"], user["age"], user["gender"], user["occupation"], user["zip_code"],
                        where=str(files["user"]))
    return Dataset(name="movielens-100k", interactions=interactions, items=items, users=users,
                   item_features=ITEM_FEATURES, user_features=USER_FEATURES, source=str(path),
                   extra={"origin": f"{RECBOLE_REQUIREMENT} dataset_example/ml-100k"}).validate()


# ------------------------------------------------------------------------- shared MovieLens tables
def movie_interactions(user_id, item_id, timestamp, rating, where: str,
                       timestamp_format: str = "seconds") -> pd.DataFrame:
    """The interactions table: ids as str, timestamp int64 seconds, rating float32 (if given)."""
    out = pd.DataFrame({
        "user_id": C.ids(user_id, f"{where}: column user_id"),
        "item_id": C.ids(item_id, f"{where}: column item_id"),
        "timestamp": C.to_epoch_seconds(timestamp, timestamp_format, f"{where}: column timestamp"),
    })
    if rating is not None:
        out["rating"] = C.to_float(rating, f"{where}: column rating").astype(np.float32)
    return out


def split_title_year(titles) -> tuple[pd.Series, np.ndarray]:
    """Remove a trailing "(1995)" from each title; returns (titles, year float64 with NaN if absent)."""
    s = C.to_text(titles)
    year = s.str.extract(_TRAILING_YEAR, expand=False)
    stripped = s.str.replace(_TRAILING_YEAR, "", regex=True).str.strip()
    return stripped, pd.to_numeric(year, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def movie_items(item_id, title, genres: pd.Series, year, where: str) -> pd.DataFrame:
    """The items table with ``ITEM_FEATURES``.

    ``year`` may be None (taken from the title's trailing "(YYYY)") or raw values (non-numbers such as
    the "unkonwn" of item 267 become NaN; the title's year fills gaps).
    """
    ids = C.ids(item_id, f"{where}: column item_id")
    C.check_unique(ids, f"{where}: column item_id")
    clean_title, title_year = split_title_year(title)
    if year is None:
        years = title_year
    else:
        years = C.to_float(year, f"{where}: column year", strict=False)
        years = np.where(np.isnan(years), title_year, years)
    return pd.DataFrame({"item_id": ids, "title": clean_title, "genres": genres.reset_index(drop=True),
                         "year": years})


def age_bucket(age: np.ndarray) -> np.ndarray:
    """Ages (years, float, NaN = unknown) to the ML-1M bucket labels (object array, "" for unknown)."""
    age = np.asarray(age, dtype=np.float64)
    labels = np.asarray(AGE_LABELS, dtype=object)[np.searchsorted(AGE_EDGES, np.nan_to_num(age), side="right")]
    labels[np.isnan(age)] = ""
    return labels


def movie_users(user_id, age, gender, occupation, zip_code, where: str) -> pd.DataFrame:
    """The users table with ``USER_FEATURES``; ``age`` is in years, any of the others may be None."""
    ids = C.ids(user_id, f"{where}: column user_id")
    C.check_unique(ids, f"{where}: column user_id")
    ages = np.full(len(ids), np.nan) if age is None else C.to_float(age, f"{where}: column age", strict=False)
    zips = _categorical_or_empty(zip_code, len(ids)).str.upper()
    return pd.DataFrame({
        "user_id": ids,
        "age": ages,
        "age_bucket": pd.Series(age_bucket(ages), dtype=str),
        "gender": _categorical_or_empty(gender, len(ids)).str.upper(),
        "occupation": _categorical_or_empty(occupation, len(ids)).str.lower(),
        "zip1": zips.str.slice(0, 1),
        "zip3": zips.str.slice(0, 3),
    })


def _categorical_or_empty(values, n: int) -> pd.Series:
    return C.to_categorical([""] * n if values is None else values)
