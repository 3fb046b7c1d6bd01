import textwrap

import numpy as np
import pandas as pd
import pytest

from recdata.tabular import load_tabular, read_schema

SCHEMA = """
name: shop
interactions:
  path: events.parquet
  columns: {user_id: customer, item_id: sku, timestamp: ts, weight: qty}
  timestamp_format: milliseconds
items:
  path: products.csv
  id_column: sku
  features:
    - {name: brand, kind: categorical}
    - {name: tags, kind: multi_categorical, separator: ";"}
    - {name: colours, kind: multi_categorical}
    - {name: price, kind: numeric}
    - {name: title, kind: text, column: product_name}
users:
  path: customers.csv
  id_column: customer
  features: [{name: country, kind: categorical}]
"""


def write(tmp_path, schema=SCHEMA, events=None, products=None, customers=None):
    (tmp_path / "schema.yaml").write_text(textwrap.dedent(schema))
    if events is None:
        events = pd.DataFrame({"customer": [7, 8, 7], "sku": ["a", "b", "b"],
                               "ts": [1_600_000_000_500, 1_600_000_100_000, 1_600_000_000_999],
                               "qty": [1, 2, 3]})
    events.to_parquet(tmp_path / "events.parquet") if isinstance(events, pd.DataFrame) else \
        (tmp_path / "events.parquet").write_bytes(events)
    (tmp_path / "products.csv").write_text(products if products is not None else
                                           "sku,brand,tags,colours,price,product_name\n"
                                           "a,acme,x;y,red|blue,9.5,Anvil\n"
                                           "b,,,,,Rope\n")
    (tmp_path / "customers.csv").write_text(customers if customers is not None else
                                            "customer,country\n007,GB\n7,FR\n8,DE\n")
    return tmp_path / "schema.yaml"


def test_loads_renamed_columns_and_features(tmp_path):
    ds = load_tabular(write(tmp_path))
    inter = ds.interactions
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "weight"]
    assert inter["user_id"].tolist() == ["7", "8", "7"]                     # source order, ids as str
    assert inter["timestamp"].tolist() == [1_600_000_000, 1_600_000_100, 1_600_000_000]   # ms → s
    assert inter["weight"].dtype == np.float32 and inter["weight"].tolist() == [1, 2, 3]
    items = ds.items.set_index("item_id")
    assert items.loc["a", "tags"] == ["x", "y"] and items.loc["a", "colours"] == ["red", "blue"]
    assert items.loc["b", "tags"] == [] and items.loc["b", "brand"] == "" and np.isnan(items.loc["b", "price"])
    assert items.loc["a", "title"] == "Anvil"
    assert ds.users["user_id"].tolist() == ["007", "7", "8"]              # CSV ids keep leading zeros
    assert [(s.name, s.kind) for s in ds.item_features][-1] == ("title", "text")
    assert ds.name == "shop"


def test_without_item_and_user_tables(tmp_path):
    path = write(tmp_path, schema="interactions: {path: events.parquet, columns: {user_id: customer, "
                                  "item_id: sku, timestamp: ts}, timestamp_format: milliseconds}\n")
    ds = load_tabular(path)
    assert ds.items["item_id"].tolist() == ["a", "b"] and ds.users["user_id"].tolist() == ["7", "8"]
    assert ds.item_features == () and "weight" not in ds.interactions


def test_iso_and_strftime_timestamps(tmp_path):
    events = "u,i,when\n1,a,2020-01-01T00:00:10Z\n2,b,2020-01-01 00:00:20\n"
    (tmp_path / "e.csv").write_text(events)
    (tmp_path / "s.yaml").write_text("interactions: {path: e.csv, columns: {user_id: u, item_id: i, timestamp: when},"
                                     " timestamp_format: iso}\n")
    assert load_tabular(tmp_path / "s.yaml").interactions["timestamp"].tolist() == [1577836810, 1577836820]
    (tmp_path / "e2.csv").write_text("u,i,when\n1,a,01/02/2020\n")
    (tmp_path / "s2.yaml").write_text("interactions: {path: e2.csv, columns: {user_id: u, item_id: i, timestamp: when},"
                                      " timestamp_format: '%d/%m/%Y'}\n")
    assert load_tabular(tmp_path / "s2.yaml").interactions["timestamp"].tolist() == [1580515200]


def test_datetime_typed_parquet_column(tmp_path):
    events = pd.DataFrame({"customer": [7], "sku": ["a"], "ts": pd.to_datetime(["2020-01-01 00:01:00"]), "qty": [1]})
    ds = load_tabular(write(tmp_path, events=events))
    assert ds.interactions["timestamp"].tolist() == [1577836860]


def test_unknown_schema_key(tmp_path):
    path = write(tmp_path, schema=SCHEMA.replace("timestamp_format:", "timestamp_fmt:"))
    with pytest.raises(ValueError, match=r"schema.yaml: unknown config key\(s\) \['interactions.timestamp_fmt'\]"):
        read_schema(path)


def test_bad_kind_in_schema(tmp_path):
    path = write(tmp_path, schema=SCHEMA.replace("kind: numeric", "kind: number"))
    with pytest.raises(ValueError, match=r"schema.yaml: .*'number' is not one of \['categorical', "):
        read_schema(path)


def test_schema_names_absent_column(tmp_path):
    path = write(tmp_path, schema=SCHEMA.replace("column: product_name", "column: name"))
    with pytest.raises(ValueError, match=r"products.csv: the schema names column\(s\) absent from the file "
                                         r"\(feature 'title' → 'name'\); the file has \['sku', .*Fix items"):
        load_tabular(path)
    path = write(tmp_path, schema=SCHEMA.replace("weight: qty", "weight: quantity"))
    with pytest.raises(ValueError, match=r"events.parquet: the schema names column\(s\) absent from the file "
                                         r"\(weight → 'quantity'\).*Fix interactions.columns"):
        load_tabular(path)


def test_missing_file(tmp_path):
    path = write(tmp_path)
    (tmp_path / "customers.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"users file .*customers.csv does not exist; the directory holds "
                                                r"\['events.parquet', 'products.csv', 'schema.yaml'\]"):
        load_tabular(path)
    with pytest.raises(FileNotFoundError, match=r"schema file .*nope.yaml does not exist"):
        load_tabular(tmp_path / "nope.yaml")


def test_empty_table(tmp_path):
    path = write(tmp_path, products="sku,brand,tags,colours,price,product_name\n")
    with pytest.raises(ValueError, match=r"items file .*products.csv has a header .* but no rows"):
        load_tabular(path)


def test_duplicate_ids(tmp_path):
    path = write(tmp_path, customers="customer,country\n7,FR\n8,DE\n7,GB\n")
    with pytest.raises(ValueError, match=r"customers.csv: column 'customer' \(user_id\): 2 rows share an id "
                                         r"\(e.g. \['7'\] at rows \[0, 2\]\)"):
        load_tabular(path)


def test_missing_and_unparsable_timestamps(tmp_path):
    events = pd.DataFrame({"customer": [7, 8], "sku": ["a", "b"], "ts": [1.6e12, np.nan], "qty": [1, 1]})
    with pytest.raises(ValueError, match=r"events.parquet: column 'ts' \(timestamp\): 1 missing timestamp\(s\) of 2 "
                                         r"\(rows \[1\]\); fill them or drop those rows"):
        load_tabular(write(tmp_path, events=events))
    events = pd.DataFrame({"customer": [7, 8], "sku": ["a", "b"], "ts": ["1600000000000", "soon"], "qty": [1, 1]})
    with pytest.raises(ValueError, match=r"column 'ts' \(timestamp\): 1 timestamp\(s\) are not numbers in "
                                         r"milliseconds \(e.g. \['soon'\] at rows \[1\]\).*'iso'"):
        load_tabular(write(tmp_path, events=events))


def test_non_numeric_numeric_feature(tmp_path):
    path = write(tmp_path, products="sku,brand,tags,colours,price,product_name\na,acme,,,cheap,Anvil\nb,,,,,Rope\n")
    with pytest.raises(ValueError, match=r"products.csv: column 'price', feature 'price' \(numeric\): 1 value\(s\) "
                                         r"are not numbers \(e.g. \['cheap'\].*kind 'categorical'"):
        load_tabular(path)


def test_missing_weight(tmp_path):
    events = pd.DataFrame({"customer": [7, 8], "sku": ["a", "b"], "ts": [1, 2], "qty": [1.0, np.nan]})
    with pytest.raises(ValueError, match=r"column 'qty' \(weight\) has 1 missing or infinite value\(s\) \(rows \[1\]\)"):
        load_tabular(write(tmp_path, events=events))


def test_interactions_naming_unknown_items(tmp_path):
    events = pd.DataFrame({"customer": [7], "sku": ["zzz"], "ts": [1], "qty": [1]})
    with pytest.raises(ValueError, match=r"1 interaction\(s\) name items absent from the item table \(e.g. \['zzz'\]\)"):
        load_tabular(write(tmp_path, events=events))


def test_negative_weights_are_refused_with_the_column_and_rows(tmp_path):
    # issue 13 item 10: negative weights trained "happily" (loss -51.2, exit 0, model exported).
    events = pd.DataFrame({"customer": [7, 8, 7, 8], "sku": ["a", "b", "b", "a"], "ts": [1, 2, 3, 4],
                           "qty": [1.0, -2.0, 3.0, -0.5]})
    with pytest.raises(ValueError, match=r"events.parquet: column 'qty' \(weight\) has 2 negative value\(s\) "
                                         r"\(e.g. \[-2.0, -0.5\] at rows \[1, 3\]\); weights must be >= 0"):
        load_tabular(write(tmp_path, events=events))


def test_an_all_zero_weight_column_is_refused(tmp_path):
    events = pd.DataFrame({"customer": [7, 8, 7], "sku": ["a", "b", "b"], "ts": [1, 2, 3], "qty": [0, 0, 0]})
    with pytest.raises(ValueError, match=r"events.parquet: column 'qty' \(weight\) is 0 in every row \(rows 0-2\); "
                                         r"a model trained on it learns nothing"):
        load_tabular(write(tmp_path, events=events))
    events["qty"] = [0, 0, 1]  # some zeros are fine (those rows simply do not count)
    assert load_tabular(write(tmp_path, events=events)).interactions["weight"].tolist() == [0, 0, 1]


def test_a_timestamp_beyond_int64_is_refused_with_its_row(tmp_path):
    # issue 13 item 11: 2**63 silently became -9223372036854775808 (only a RuntimeWarning).
    events = pd.DataFrame({"customer": ["7", "8", "7"], "sku": ["a", "b", "b"],
                           "ts": ["1600000000000", "1600000000001", str(2**63 * 1000)], "qty": [1, 1, 1]})
    with pytest.raises(ValueError, match=r"column 'ts' \(timestamp\): 1 timestamp\(s\) in milliseconds are beyond "
                                         r"the int64 range of seconds \(e.g. \['9223372036854775808000'\] at rows "
                                         r"\[2\]\)"):
        load_tabular(write(tmp_path, events=events))
