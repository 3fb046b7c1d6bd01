import numpy as np
import pandas as pd
import pytest

from recdata import columns as C
from recdata.schema import FeatureSpec


def test_epoch_seconds_units_and_formats():
    assert C.to_epoch_seconds(pd.Series([1_600_000_000_999]), "milliseconds", "w").tolist() == [1_600_000_000]
    assert C.to_epoch_seconds(pd.Series(["12.9", "13"]), "seconds", "w").tolist() == [12, 13]   # floored
    assert C.to_epoch_seconds(pd.Series([-1.5]), "seconds", "w").tolist() == [-2]
    assert C.to_epoch_seconds(pd.Series(["1970-01-01T00:01:00+01:00"]), "iso", "w").tolist() == [-3540]
    assert C.to_epoch_seconds(pd.Series(["2020-01-01"]), "%Y-%m-%d", "w").tolist() == [1577836800]
    dt = pd.Series(pd.to_datetime(["2020-01-01 00:00:05"]).tz_localize("Europe/Paris"))
    assert C.to_epoch_seconds(dt, "seconds", "w").tolist() == [1577836805 - 3600]
    assert C.to_epoch_seconds(pd.Series([5], dtype="int64"), "seconds", "w").dtype == np.int64


def test_epoch_seconds_errors():
    with pytest.raises(ValueError, match=r"f.csv: column t: 2 missing timestamp\(s\) of 3 \(rows \[0, 2\]\)"):
        C.to_epoch_seconds(pd.Series([None, "5", " "], dtype=object), "seconds", "f.csv: column t")
    with pytest.raises(ValueError, match=r"w: 1 timestamp\(s\) do not parse with format 'iso' \(e.g. \['31/12/2020'\]"):
        C.to_epoch_seconds(pd.Series(["2020-01-01", "31/12/2020"]), "iso", "w")
    with pytest.raises(ValueError, match=r"w: timestamp_format 'weeks' is not one of \['seconds', "):
        C.to_epoch_seconds(pd.Series([1]), "weeks", "w")
    with pytest.raises(ValueError, match=r"w: timestamps hold infinite values"):
        C.to_epoch_seconds(pd.Series([np.inf]), "seconds", "w")
    with pytest.raises(ValueError, match=r"w: timestamps hold infinite values \(1 at rows \[1\]\)"):
        C.to_epoch_seconds(pd.Series([1.0, -np.inf]), "seconds", "w")


def test_ids_and_uniqueness():
    assert C.ids(pd.Series([1.0, 2.0]), "w").tolist() == ["1", "2"]
    assert C.ids(pd.Series([" 007 "]), "w").tolist() == ["007"]
    with pytest.raises(ValueError, match=r"w: 1 missing id\(s\) \(rows \[1\]\); drop those rows"):
        C.ids(pd.Series(["a", ""]), "w")
    with pytest.raises(ValueError, match=r"w: 3 rows share an id \(e.g. \['a'\] at rows \[0, 1, 3\]\)"):
        C.check_unique(pd.Series(["a", "a", "b", "a"]), "w")


def test_unique_in_order():
    for dtype in ("str", object):
        got = C.unique_in_order(pd.Series(["b", "a", "b", "c", "a"], dtype=dtype))
        assert got.tolist() == ["b", "a", "c"] and got.dtype == dtype


def test_feature_conversions():
    assert C.to_categorical(pd.Series([1.0, np.nan, 3.0])).tolist() == ["1", "", "3"]
    assert C.to_categorical(pd.Series(["x ", None], dtype=object)).tolist() == ["x", ""]
    assert C.to_text(pd.Series(["A title", None], dtype=object)).tolist() == ["A title", ""]
    multi = C.to_multi(pd.Series(["a| b||", None, np.array(["c", "d"]), ["e"]], dtype=object), "|", "w")
    assert multi.tolist() == [["a", "b"], [], ["c", "d"], ["e"]]
    with pytest.raises(ValueError, match=r"w: row 0 holds the string 'a,b' but no separator is set"):
        C.to_multi(pd.Series(["a,b"]), None, "w")
    num = C.to_feature(pd.Series(["1.5", "", None], dtype=object), FeatureSpec("p", "numeric"), "f")
    assert num[0] == 1.5 and np.isnan(num[1:]).all()
    assert np.isnan(C.to_float(pd.Series(["x", "2"]), "w", strict=False)[0])


def test_read_table_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"items file .*empty.csv is empty \(not even a header row\)"):
        C.read_table(tmp_path / "empty.csv", what="items")
    (tmp_path / "l1.csv").write_bytes("a,b\n\xe9,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"l1.csv is not utf-8 text .*set the encoding \(e.g. latin-1\)"):
        C.read_table(tmp_path / "l1.csv")
    assert C.read_table(tmp_path / "l1.csv", encoding="latin-1")["a"].tolist() == ["é"]
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"x.parquet is not readable as Parquet"):
        C.read_table(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"format 'json' is not one of"):
        C.read_table(tmp_path / "l1.csv", fmt="json")


@pytest.mark.parametrize("values, fmt", [
    (["1", str(2**63)], "seconds"),                     # text, one past int64 max
    ([1.0, 1e19], "seconds"),                            # float
    (np.array([1, 2**63], dtype=np.uint64), "seconds"),  # unsigned (e.g. Parquet uint64)
    ([1, -2**64 * 1000], "milliseconds"),                # below int64 min after the unit conversion
])
def test_timestamps_beyond_int64_are_refused_with_the_row(values, fmt):
    with np.errstate(all="raise"):  # no silent wrap-around and no RuntimeWarning on the way
        with pytest.raises(ValueError, match=r"t: 1 timestamp\(s\) in " + fmt + r" are beyond the int64 range of "
                                             r"seconds \(e\.g\. .* at rows \[1\]\); fix those rows"):
            C.to_epoch_seconds(pd.Series(values), fmt, "t")


def test_timestamps_at_the_int64_edges_are_kept():
    top = np.iinfo(np.int64).max
    assert C.to_epoch_seconds(pd.Series([str(top), "0"]), "seconds", "t").tolist() == [top, 0]
    assert C.to_epoch_seconds(pd.Series(np.array([top], dtype=np.uint64)), "seconds", "t").tolist() == [top]
    assert C.to_epoch_seconds(pd.Series([-5, 7]), "seconds", "t").tolist() == [-5, 7]


def test_duplicate_rows_are_counted_not_refused():
    df = pd.DataFrame({"user_id": ["u", "u", "v", "u", "u"], "item_id": ["a", "a", "a", "a", "b"],
                       "timestamp": [1, 1, 1, 1, 1]})
    assert C.duplicate_rows(df) == (2, [1, 3])  # rows 1 and 3 repeat row 0 exactly
    assert C.duplicate_rows(df.iloc[[0, 2, 4]]) == (0, [])
