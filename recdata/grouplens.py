"""Loaders for the GroupLens MovieLens download layouts (https://grouplens.org/datasets/movielens/).

``load_grouplens(path)`` looks at the files in ``path`` (or in its single matching sub-directory, as
left by unzipping) and picks the layout:

  ml-100k        u.data (tab: user, item, rating, ts), u.item (pipe, latin-1: id, title, release date,
                 video date, URL, 19 genre flags), u.user (pipe: id, age, gender, occupation, zip)
  ml-1m          ratings.dat, movies.dat, users.dat   ('::' separated, latin-1; ages are ML-1M bucket
                 codes, occupations are codes 0–20 mapped to their names)
  ml-10m         ratings.dat, movies.dat (no users.dat: users carry only user_id)
  ml-20m / ml-25m / ml-latest   ratings.csv, movies.csv (no user table: users carry only user_id)

Features are the MovieLens features of ``recdata.movielens`` (title, genres, year; age, age_bucket,
gender, occupation, zip1, zip3 where a user table exists). Interactions keep the file's row order.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recdata import columns as C
from recdata.movielens import (ITEM_FEATURES, USER_FEATURES, movie_interactions, movie_items, movie_users,
                               split_title_year)
from recdata.schema import Dataset

#: layout name → (required files, optional files)
LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ml-100k": (("u.data", "u.item", "u.user"), ("u.genre",)),
    "ml-1m": (("ratings.dat", "movies.dat", "users.dat"), ()),
    "ml-10m": (("ratings.dat", "movies.dat"), ()),
    "ml-csv": (("ratings.csv", "movies.csv"), ()),
}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
                 "Sci-Fi", "Thriller", "War", "Western")
#: ML-1M README, "Occupation is chosen from the following choices"
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
_NO_GENRES = "(no genres listed)"


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """Return (layout name, directory holding its files) for ``path``.

    ``path`` itself is checked first, then its sub-directories (a single match is taken). Raises
    ``FileNotFoundError`` listing what each layout expects when nothing matches.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; point the grouplens source at the unzipped "
                                "MovieLens folder (e.g. ~/data/ml-1m)")
    found = _match(path)
    if found:
        return found, path
    subs = [(m, d) for d in sorted(path.iterdir()) if d.is_dir() and (m := _match(d))]
    if len(subs) == 1:
        return subs[0]
    expected = "; ".join(f"{name}: {', '.join(req)}" for name, (req, _) in LAYOUTS.items())
    if len(subs) > 1:
        raise ValueError(f"{path} holds several MovieLens folders {[str(d) for _, d in subs]}; "
                         "point at one of them")
    present = sorted(p.name for p in path.iterdir())[:30]
    raise FileNotFoundError(
        f"{path} does not look like a GroupLens MovieLens folder: it holds {present}. Expected the files of "
        f"one layout ({expected}). Unzip the GroupLens archive and point at the folder it creates"
    )


def _match(directory: Path) -> str | None:
    for name, (required, _) in LAYOUTS.items():
        if all((directory / f).is_file() for f in required):
            return name
    return None


def load_grouplens(path: str | os.PathLike) -> Dataset:
    """Load the MovieLens folder at ``path`` (layout auto-detected) as a validated ``Dataset``."""
    layout, directory = detect_layout(path)
    loader = {"ml-100k": _load_100k, "ml-1m": _load_dat, "ml-10m": _load_dat, "ml-csv": _load_csv}[layout]
    dataset = loader(directory)
    dataset.extra["layout"] = layout
    return dataset.validate()


# ---------------------------------------------------------------------------------------- ml-100k
def _load_100k(d: Path) -> Dataset:
    f_data, f_item, f_user = d / "u.data", d / "u.item", d / "u.user"
    inter = _read_plain(f_data, "\t", ("user_id", "item_id", "rating", "timestamp"))
    genres_names = _read_genres(d / "u.genre")
    item_cols = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *genres_names)
    item = _read_plain(f_item, "|", item_cols)
    user = _read_plain(f_user, "|", ("user_id", "age", "gender", "occupation", "zip_code"))

    flags = item[list(genres_names)].fillna("0").to_numpy()
    bad = ~np.isin(flags, ["0", "1"])
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{f_item}: genre flag column {genres_names[c]!r} row {r} holds {flags[r, c]!r}; "
                         "the 19 genre columns must be 0 or 1")
    names = np.asarray(genres_names, dtype=object)
    genres = pd.Series([names[row == "1"].tolist() for row in flags], dtype=object)
    # the year in the title first (as RecBole's ml-100k.item has it), the release date's year otherwise
    _, title_year = split_title_year(item["title"])
    release_year = pd.to_datetime(item["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    year = np.where(np.isnan(title_year), release_year.to_numpy(dtype=np.float64, na_value=np.nan), title_year)
    items = movie_items(item["item_id"], item["title"], genres, year=year, where=str(f_item))
    users = movie_users(user["user_id"], user["age"], user["gender"], user["occupation"], user["zip_code"],
                        where=str(f_user))
    interactions = movie_interactions(inter["user_id"], inter["item_id"], inter["timestamp"], inter["rating"],
                                      str(f_data))
    return Dataset(name="grouplens-ml-100k", interactions=interactions, items=items, users=users,
                   item_features=ITEM_FEATURES, user_features=USER_FEATURES, source=str(d))


def _read_genres(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    g = _read_plain(path, "|", ("genre", "index"))
    g = g.dropna()
    return tuple(g.sort_values("index", key=lambda s: s.astype(int))["genre"].tolist())


# ----------------------------------------------------------------------------------- ml-1m, ml-10m
def _load_dat(d: Path) -> Dataset:
    f_ratings, f_movies, f_users = d / "ratings.dat", d / "movies.dat", d / "users.dat"
    inter = _read_double_colon(f_ratings, ("user_id", "item_id", "rating", "timestamp"))
    movie = _read_double_colon(f_movies, ("item_id", "title", "genres"))
    genres = C.to_multi(movie["genres"].replace(_NO_GENRES, ""), "|", f"{f_movies}: column genres")
    items = movie_items(movie["item_id"], movie["title"], genres, year=None, where=str(f_movies))
    interactions = movie_interactions(inter["user_id"], inter["item_id"], inter["timestamp"], inter["rating"],
                                      str(f_ratings))
    if f_users.is_file():
        user = _read_double_colon(f_users, ("user_id", "gender", "age", "occupation", "zip_code"))
        occ = pd.to_numeric(user["occupation"], errors="coerce")
        bad = occ.isna() | ~occ.isin(range(len(ML1M_OCCUPATIONS)))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{f_users}: column occupation row {i} holds {user['occupation'].iloc[i]!r}; "
                             f"ML-1M occupations are codes 0..{len(ML1M_OCCUPATIONS) - 1}")
        occupation = np.asarray(ML1M_OCCUPATIONS, dtype=object)[occ.to_numpy(dtype=np.int64)]
        users = movie_users(user["user_id"], user["age"], user["gender"], occupation, user["zip_code"],
                            where=str(f_users))
        return Dataset(name="grouplens-ml-1m", interactions=interactions, items=items, users=users,
                       item_features=ITEM_FEATURES, user_features=USER_FEATURES, source=str(d))
    return Dataset(name="grouplens-ml-10m", interactions=interactions, items=items,
                   users=_users_from(interactions), item_features=ITEM_FEATURES, source=str(d))


def _read_double_colon(path: Path, names: tuple[str, ...]) -> pd.DataFrame:
    """'::'-separated latin-1 file without header → string columns ``names``."""
    raw = path.read_bytes().replace(b"::", b"\x1f")
    return _read_headerless(io.BytesIO(raw), path, "\x1f", names)


# -------------------------------------------------------------------------------- ml-20m / ml-25m
def _load_csv(d: Path) -> Dataset:
    f_ratings, f_movies = d / "ratings.csv", d / "movies.csv"
    try:  # the pyarrow engine reads 25M rows in seconds; the converters below check every column
        inter = pd.read_csv(f_ratings, engine="pyarrow")
    except Exception as exc:  # pyarrow raises its own error types for malformed CSV
        raise ValueError(f"{f_ratings} is not readable as CSV: {exc}; download the archive again") from None
    C.require_columns(inter, ["userId", "movieId", "rating", "timestamp"], str(f_ratings),
                      "GroupLens ratings.csv has the header userId,movieId,rating,timestamp")
    if len(inter) == 0:
        raise ValueError(f"{f_ratings} has a header but no rows; download the archive again")
    movie = C.read_table(f_movies, "csv", encoding="utf-8", what="movies")
    C.require_columns(movie, ["movieId", "title", "genres"], str(f_movies),
                      "GroupLens movies.csv has the header movieId,title,genres")
    genres = C.to_multi(movie["genres"].replace(_NO_GENRES, ""), "|", f"{f_movies}: column genres")
    items = movie_items(movie["movieId"], movie["title"], genres, year=None, where=str(f_movies))
    interactions = movie_interactions(inter["userId"], inter["movieId"], inter["timestamp"], inter["rating"],
                                      str(f_ratings))
    return Dataset(name=f"grouplens-{d.name}", interactions=interactions, items=items,
                   users=_users_from(interactions), item_features=ITEM_FEATURES, source=str(d))


# ------------------------------------------------------------------------------------------ shared
def _read_plain(path: Path, sep: str, names: tuple[str, ...]) -> pd.DataFrame:
    """Header-less latin-1 file with ``sep``-separated fields → string columns ``names``."""
    return _read_headerless(path, path, sep, names)


def _read_headerless(source, path: Path, sep: str, names: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(source, sep=sep, header=None, dtype=str, encoding="latin-1", keep_default_na=False,
                         na_values=[""], quoting=csv.QUOTE_NONE)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; download and unzip the GroupLens archive again") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: lines do not all have {len(names)} fields ({list(names)}): {exc}; "
                         "this is not the GroupLens file of that name, or it is damaged") from None
    return _check_shape(df, path, names, repr(sep))


def _check_shape(df: pd.DataFrame, path: Path, names: tuple[str, ...], sep: str) -> pd.DataFrame:
    sep = "'::'" if sep == repr("\x1f") else sep
    if len(df) == 0:
        raise ValueError(f"{path} is empty; download and unzip the GroupLens archive again")
    if df.shape[1] != len(names):
        raise ValueError(f"{path}: expected {len(names)} {sep}-separated fields per line ({list(names)}), got "
                         f"{df.shape[1]}; this is not the GroupLens file of that name")
    df.columns = list(names)
    return df


def _users_from(interactions: pd.DataFrame) -> pd.DataFrame:
    """A users table with only ``user_id``: users in order of first appearance."""
    return pd.DataFrame({"user_id": C.unique_in_order(interactions["user_id"])})
