from pathlib import Path

import numpy as np
import pytest

from recdata.grouplens import detect_layout, load_grouplens
from tests.recdata.conftest import flags, write_1m, write_100k


def write_csv(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n2,306,3.5,1147868817\n"
                                   "1,306,4.0,1147868818\n")
    (d / "movies.csv").write_text('movieId,title,genres\n296,"Pulp Fiction (1994)",Comedy|Crime|Drama|Thriller\n'
                                  '306,"Three Colors: Red (Trois couleurs: Rouge) (1994)",(no genres listed)\n')
    (d / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    return d


def test_ml100k_layout(tmp_path):
    ds = load_grouplens(write_100k(tmp_path / "ml-100k"))
    assert ds.extra["layout"] == "ml-100k"
    assert ds.interactions["item_id"].tolist() == ["242", "302", "302"]
    items = ds.items.set_index("item_id")
    assert items.loc["242", "title"] == "Kolya" and items.loc["242", "year"] == 1996   # title year, as RecBole
    assert items.loc["99", "title"] == "No Year" and items.loc["99", "year"] == 1993   # else the release date
    assert items.loc["302", "title"] == "Misérables, Les"                             # latin-1 decoded
    assert items.loc["302", "genres"] == ["Drama", "Romance"]
    assert items.loc["267", "genres"] == ["unknown"] and np.isnan(items.loc["267", "year"])
    users = ds.users.set_index("user_id")
    assert users.loc["186", "zip3"] == "000" and users.loc["196", "age_bucket"] == "45-49"


def test_ml1m_layout_maps_codes(tmp_path):
    ds = load_grouplens(write_1m(tmp_path / "ml-1m"))
    assert ds.extra["layout"] == "ml-1m" and ds.name == "grouplens-ml-1m"
    users = ds.users.set_index("user_id")
    assert users.loc["1", "occupation"] == "k-12 student" and users.loc["1", "age_bucket"] == "<18"
    assert users.loc["2", "occupation"] == "self-employed" and users.loc["2", "age_bucket"] == "56+"
    items = ds.items.set_index("item_id")
    assert items.loc["661", "genres"] == ["Animation", "Children's", "Musical"]
    assert items.loc["1193", "year"] == 1975 and items.loc["1193", "title"] == "One Flew Over the Cuckoo's Nest"


def test_ml10m_layout_without_users(tmp_path):
    ds = load_grouplens(write_1m(tmp_path / "ml-10m", users=False))
    assert ds.extra["layout"] == "ml-10m"
    assert ds.users["user_id"].tolist() == ["1", "2"] and ds.user_features == ()


def test_csv_layout(tmp_path):
    ds = load_grouplens(write_csv(tmp_path / "ml-25m"))
    assert ds.name == "grouplens-ml-25m" and ds.extra["layout"] == "ml-csv"
    assert ds.interactions["timestamp"].tolist() == [1147880044, 1147868817, 1147868818]
    items = ds.items.set_index("item_id")
    assert items.loc["306", "genres"] == [] and items.loc["306", "title"] == "Three Colors: Red (Trois couleurs: Rouge)"
    assert ds.users["user_id"].tolist() == ["1", "2"]


def test_detects_single_subdirectory(tmp_path):
    write_1m(tmp_path / "download" / "ml-1m")
    layout, where = detect_layout(tmp_path / "download")
    assert (layout, where) == ("ml-1m", tmp_path / "download" / "ml-1m")


def test_no_layout_lists_expectations(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(FileNotFoundError, match=r"holds \['ratings.csv'\]\. Expected the files of one layout "
                                                r"\(ml-100k: u.data, u.item, u.user; .*ml-csv: ratings.csv, movies.csv\)"):
        load_grouplens(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_grouplens(tmp_path / "nope")


def test_wrong_field_count(tmp_path):
    d = write_100k(tmp_path / "ml-100k")
    (d / "u.user").write_text("196|49|M|writer\n")
    with pytest.raises(ValueError, match=r"u.user: expected 5 '\|'-separated fields per line .* got 4"):
        load_grouplens(d)


def test_empty_ratings(tmp_path):
    d = write_1m(tmp_path / "ml-1m")
    (d / "ratings.dat").write_text("")
    with pytest.raises(ValueError, match=r"ratings.dat is empty"):
        load_grouplens(d)


def test_csv_wrong_header(tmp_path):
    d = write_csv(tmp_path / "ml-20m")
    (d / "ratings.csv").write_text("user,movie,rating,ts\n1,296,5.0,1147880044\n")
    with pytest.raises(ValueError, match=r"ratings.csv: missing column\(s\) \['userId', 'movieId', 'timestamp'\].*"
                                         r"header userId,movieId,rating,timestamp"):
        load_grouplens(d)


def test_bad_occupation_code(tmp_path):
    d = write_1m(tmp_path / "ml-1m")
    (d / "users.dat").write_text("1::F::1::99::48067\n2::M::56::16::70072\n")
    with pytest.raises(ValueError, match=r"users.dat: column occupation row 0 holds '99'; ML-1M occupations are codes 0..20"):
        load_grouplens(d)


def test_duplicate_movie_and_bad_timestamp(tmp_path):
    d = write_csv(tmp_path / "ml-20m")
    (d / "movies.csv").write_text("movieId,title,genres\n296,A (1994),Drama\n296,B (1995),Drama\n306,C,Drama\n")
    with pytest.raises(ValueError, match=r"movies.csv: column item_id: 2 rows share an id \(e.g. \['296'\]"):
        load_grouplens(d)
    d = write_csv(tmp_path / "ml-25m")
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,296,5.0,2006-05-17\n")
    with pytest.raises(ValueError, match=r"ratings.csv: column timestamp: 1 timestamp\(s\) are not numbers"):
        load_grouplens(d)
