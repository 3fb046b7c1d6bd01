import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recdata import movielens as ML
from recdata.loading import DataConfig, resolve_cache_dir
from tests.recdata.conftest import INTER, ITEM, USER, fake_wheel, write_fixture

def test_load_fixture_tables_and_features(tmp_path):
    ds = ML.load_movielens_100k(write_fixture(tmp_path / "ml"))
    inter = ds.interactions
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert inter["user_id"].tolist() == ["196", "186", "196", "22"]        # source order kept
    assert inter["item_id"].tolist() == ["242", "302", "1", "2"]
    assert inter["timestamp"].dtype == np.int64 and inter["timestamp"].iloc[1] == 891717742
    assert inter["rating"].dtype == np.float32
    items = ds.items.set_index("item_id")
    assert items.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["2", "title"] == "Seven (Se7en)"                     # only a trailing (YYYY) is a year
    assert items.loc["242", "title"] == "Kolya" and items.loc["242", "year"] == 1996   # year from the title
    assert np.isnan(items.loc["302", "year"])                              # "unkonwn" → NaN
    users = ds.users.set_index("user_id")
    assert users.loc["22", "age_bucket"] == "<18" and users.loc["196", "age_bucket"] == "45-49"
    assert users.loc["22", "gender"] == "M" and users.loc["22", "occupation"] == "writer"
    assert users.loc["22", "zip1"] == "T" and users.loc["22", "zip3"] == "T8H"
    assert users.loc["186", "zip3"] == "000"                               # leading zeros kept
    assert [s.name for s in ds.item_features] == ["title", "genres", "year"]
    assert {s.name: s.kind for s in ds.user_features}["age"] == "numeric"


def test_age_bucket_edges():
    got = ML.age_bucket(np.array([1, 17, 18, 24, 25, 44, 45, 49, 50, 55, 56, 90, np.nan]))
    assert got.tolist() == ["<18", "<18", "18-24", "18-24", "25-34", "35-44", "45-49", "45-49", "50-55",
                            "50-55", "56+", "56+", ""]


def test_fetch_from_local_wheel_is_atomic_and_idempotent(tmp_path):
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    cache = tmp_path / "cache"
    out = ML.fetch_movielens_100k(cache, wheel=wheel)
    assert out == cache / "ml-100k"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "ml-100k.inter", "ml-100k.item",
                                                     "ml-100k.kg", "ml-100k.user"]
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]            # no temp dirs left behind
    mtime = (out / "ml-100k.inter").stat().st_mtime_ns
    wheel.unlink()                                                      # second call must not need it
    assert ML.fetch_movielens_100k(cache, wheel=wheel) == out
    assert (out / "ml-100k.inter").stat().st_mtime_ns == mtime
    assert ML.load_movielens_100k(out).num_items == 4


def test_fetch_runs_the_download_command(tmp_path, monkeypatch):
    src = fake_wheel(tmp_path / "src.whl")
    script = f"import shutil, sys; shutil.copy({str(src)!r}, sys.argv[1] + '/recbole-1.2.1-py3-none-any.whl')"
    monkeypatch.setattr(ML, "pip_download_command", lambda dest: [sys.executable, "-c", script, str(dest)])
    out = ML.fetch_movielens_100k(tmp_path / "cache")
    assert ML.is_complete(out)


def test_fetch_reports_failed_pip_with_command(tmp_path, monkeypatch):
    cmd = [sys.executable, "-c", "import sys; sys.stderr.write('ERROR: no network\\n'); sys.exit(1)"]
    monkeypatch.setattr(ML, "pip_download_command", lambda dest: cmd)
    with pytest.raises(RuntimeError, match=r"(?s)failed with exit code 1.*no network.*wheel=PATH"):
        ML.fetch_movielens_100k(tmp_path / "cache")
    assert not (tmp_path / "cache" / "ml-100k").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_pip_command_is_the_documented_one(tmp_path):
    cmd = ML.pip_download_command(tmp_path)
    assert cmd == [sys.executable, "-m", "pip", "download", "--no-deps", "recbole==1.2.1", "-d", str(tmp_path)]


def test_fetch_rejects_wrong_wheel_and_incomplete_target(tmp_path):
    bad = fake_wheel(tmp_path / "bad.whl", with_files=False)
    with pytest.raises(ValueError, match=r"has no \['recbole/dataset_example/ml-100k/ml-100k.inter'"):
        ML.fetch_movielens_100k(tmp_path / "cache", wheel=bad)
    (tmp_path / "cache2" / "ml-100k").mkdir(parents=True)
    (tmp_path / "cache2" / "ml-100k" / "ml-100k.inter").write_text("x")
    with pytest.raises(ValueError, match="not a complete MovieLens-100K extraction.*Delete"):
        ML.fetch_movielens_100k(tmp_path / "cache2", wheel=fake_wheel(tmp_path / "ok.whl"))


def test_tampered_cache_is_not_complete(tmp_path):
    out = ML.fetch_movielens_100k(tmp_path, wheel=fake_wheel(tmp_path / "w.whl"))
    with open(out / "ml-100k.user", "a") as fh:
        fh.write("999\t30\tM\tother\t12345\n")
    assert not ML.is_complete(out)


def test_missing_file_names_the_fix(tmp_path):
    d = write_fixture(tmp_path / "ml")
    (d / "ml-100k.user").unlink()
    with pytest.raises(FileNotFoundError, match=r"ml-100k.user does not exist; fetch the data"):
        ML.load_movielens_100k(d)


def test_wrong_columns_name_file_and_columns(tmp_path):
    d = write_fixture(tmp_path / "ml", item="item_id:token\ttitle:token_seq\n1\tToy Story\n")
    with pytest.raises(ValueError, match=r"ml-100k.item: missing column\(s\) \['movie_title', 'release_year', "
                                         r"'class'\]; the file has \['item_id', 'title'\]"):
        ML.load_movielens_100k(d)


def test_not_an_atomic_header(tmp_path):
    d = write_fixture(tmp_path / "ml", inter="user_id\titem_id\ttimestamp\n1\t1\t5\n")
    with pytest.raises(ValueError, match=r"ml-100k.inter: header field 'user_id' is not 'name:type'"):
        ML.load_movielens_100k(d)


def test_empty_table(tmp_path):
    d = write_fixture(tmp_path / "ml", inter=INTER.splitlines(keepends=True)[0])
    with pytest.raises(ValueError, match=r"ml-100k.inter has a header but no rows"):
        ML.load_movielens_100k(d)


def test_duplicate_item_ids(tmp_path):
    d = write_fixture(tmp_path / "ml", item=ITEM + "1\tToy Story again\t1995\tComedy\n")
    with pytest.raises(ValueError, match=r"ml-100k.item: column item_id: 2 rows share an id \(e.g. \['1'\]"):
        ML.load_movielens_100k(d)


def test_bad_and_missing_timestamps(tmp_path):
    d = write_fixture(tmp_path / "ml", inter=INTER + "22\t1\t4\tyesterday\n")
    with pytest.raises(ValueError, match=r"ml-100k.inter: column timestamp: 1 timestamp\(s\) are not numbers "
                                         r"in seconds \(e.g. \['yesterday'\] at rows \[4\]\)"):
        ML.load_movielens_100k(d)
    d = write_fixture(tmp_path / "ml2", inter=INTER + "22\t1\t4\t\n")
    with pytest.raises(ValueError, match=r"column timestamp: 1 missing timestamp\(s\) of 5 \(rows \[4\]\)"):
        ML.load_movielens_100k(d)


def test_interaction_with_unknown_item(tmp_path):
    d = write_fixture(tmp_path / "ml", inter=INTER + "22\t9999\t4\t878887117\n")
    with pytest.raises(ValueError, match=r"1 interaction\(s\) name items absent from the item table \(e.g. \['9999'\]\)"):
        ML.load_movielens_100k(d)


# where `twotower fetch` / `make demo` put the data: the code's own cache resolver ($TWOTOWER_CACHE or
# ~/.cache/twotower) + "ml-100k"; TWOTOWER_TEST_ML100K names another copy
REAL = Path(os.environ.get("TWOTOWER_TEST_ML100K") or resolve_cache_dir(DataConfig(source="movielens-100k")) / ML.DIRNAME)


@pytest.mark.skipif(not ML.is_complete(REAL), reason=f"no fetched MovieLens-100K at {REAL}")
def test_real_movielens_100k():
    ds = ML.load_movielens_100k(REAL)
    assert (len(ds.interactions), ds.num_items, ds.num_users) == (100_000, 1682, 943)
    assert ds.interactions.iloc[0].tolist()[:3] == ["196", "242", 881250949]
    assert ds.items["genres"].map(len).min() >= 1
    assert ds.items["year"].isna().sum() == 1                 # item 267 "unkonwn"
    assert set(ds.users["gender"]) == {"M", "F"}
