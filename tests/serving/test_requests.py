import math

import pytest

from recdata.schema import FeatureSpec
from serving.requests import RequestError, TopKRequest, decode_json, parse_topk

SPECS = (FeatureSpec("age", "numeric"), FeatureSpec("gender", "categorical"),
         FeatureSpec("tags", "multi_categorical"), FeatureSpec("bio", "text"))


def parse(data, **kw):
    return parse_topk(data, SPECS, max_k=kw.pop("max_k", 100), max_history_items=kw.pop("max_history_items", 5),
                      **kw)


def test_known_user_request():
    req = parse({"user_id": "196", "k": 10})
    assert req == TopKRequest(k=10, exclude_seen=True, user_id="196")
    assert not req.is_raw
    assert parse({"user_id": 196, "k": 1, "exclude_seen": False, "timestamp": 5}) == \
        TopKRequest(k=1, exclude_seen=False, user_id="196", timestamp=5)
    assert parse({"user_id": "u", "k": 1}, default_exclude_seen=False).exclude_seen is False


def test_raw_request_fills_missing_features_and_turns_int_ids_into_strings():
    req = parse({"features": {"age": 31, "tags": ["a", 7]}, "history": ["50", 172], "k": 3})
    assert req.is_raw and req.user_id is None
    assert req.features == {"age": 31.0, "gender": None, "tags": ["a", "7"], "bio": None}
    assert req.history == ("50", "172") and req.history_timestamps is None
    only_history = parse({"history": [], "k": 1, "history_timestamps": []})
    assert only_history.features == {"age": None, "gender": None, "tags": None, "bio": None}
    assert only_history.history == () and only_history.history_timestamps == ()
    assert parse({"features": {"gender": 1}, "k": 1}).features["gender"] == "1"
    assert math.isnan(parse({"features": {"age": float("nan")}, "k": 1}).features["age"])


@pytest.mark.parametrize("body, status, message", [
    (b"", 400, "empty body"),
    (b"{not json", 400, "body is not valid JSON: Expecting property name"),
    (b"\xff\xfe", 400, "not UTF-8|not valid JSON"),
    (b"[1, 2]", 400, "body must be a JSON object, got a JSON list"),
    # issue 13 item 2: 100k-deep nesting was a RecursionError (500)
    (b"[" * 100_000 + b"]" * 100_000, 400, r"body is nested too deeply: a /topk request is a flat JSON object"),
    (b'{"k": ' + b"9" * 5000 + b"}", 400, r"body is not acceptable JSON: Exceeds the limit \(4300 digits\)"),
    (b'{"k": ' + b"{\"a\": " * 100_000 + b"1" + b"}" * 100_001, 400, "body is nested too deeply"),
])
def test_decode_errors(body, status, message):
    with pytest.raises(RequestError, match=message) as err:
        decode_json(body)
    assert err.value.status == status


@pytest.mark.parametrize("data, message", [
    ({"user_id": "1"}, r"missing k: say how many items to return"),
    ({"user_id": "1", "k": 0}, r"k must be a positive int, got int 0"),
    ({"user_id": "1", "k": "10"}, r"k must be a positive int, got string '10'"),
    ({"user_id": "1", "k": 2.0}, r"k must be a positive int, got float 2.0"),
    ({"user_id": "1", "k": True}, r"k must be a positive int, got bool True"),
    ({"user_id": "1", "k": 101}, r"k=101 is above the largest allowed k \(100, ServingConfig.max_k\)"),
    ({"user_id": "1", "k": 1, "user": 3}, r"unknown field\(s\) \['user'\]; a /topk request takes"),
    ({"k": 1}, r"give a user_id .* or features and/or history"),
    ({"user_id": "", "k": 1}, r"user_id must be a non-empty string or an int id, got an empty string"),
    ({"user_id": [1], "k": 1}, r"user_id must be a non-empty string or an int id, got list"),
    ({"user_id": "1", "k": 1, "exclude_seen": "yes"}, r"exclude_seen must be true or false, got string 'yes'"),
    ({"user_id": "1", "k": 1, "timestamp": -5}, r"timestamp must be an int in \[0, 253402300799\] .*got int -5"),
    ({"user_id": "1", "k": 1, "timestamp": "now"}, r"timestamp must be an int in \[0, 253402300799\] .* got string"),
    # issue 13 item 1: 2**63 passed validation and overflowed inside the shared micro-batch
    ({"user_id": "1", "k": 1, "timestamp": 2 ** 63}, r"timestamp must be an int in \[0, 253402300799\] \(seconds "
                                                      r"since the epoch, up to 9999-12-31\), got int 9223372036854775808"),
    ({"user_id": "1", "k": 1, "timestamp": 253402300800}, r"timestamp must be an int in \[0, 253402300799\]"),
    ({"user_id": "1", "k": 1, "timestamp": 10 ** 5000}, r"timestamp .* got int an int of about 5001 digits"),
    ({"user_id": "1", "k": 10 ** 30}, r"k=1000000000000000000000000000000 is above the largest allowed k"),
    ({"history": ["1"], "history_timestamps": [2 ** 64], "k": 1},
     r"history_timestamps\[0\] must be an int in \[0, 253402300799\] .*got int 18446744073709551616"),
    ({"history": ["1", "2"], "history_timestamps": [5, -1], "k": 1}, r"history_timestamps\[1\] must be an int in"),
    ({"features": {"age": 1e39}, "k": 1}, r"features.age \(numeric\) must lie within \+-3.403e\+38 \(the tower takes "
                                          r"float32\), got 1e\+39"),
    ({"features": {"age": -(10 ** 400)}, "k": 1}, r"features.age \(numeric\) must lie within .* got an int of about 401 digits"),
    ({"user_id": "1", "k": 1, "history_timestamps": [1]}, r"history_timestamps needs a history list"),
    ({"features": [1], "k": 1}, r"features must be a JSON object \{name: value\}, got list"),
    ({"features": {"agee": 3, "x": 1}, "k": 1},
     r"unknown feature name\(s\) \['agee', 'x'\]; the query tower takes user features \['age', 'bio', 'gender', 'tags'\]"),
    ({"features": {"age": "old"}, "k": 1}, r"features.age \(numeric\) must be a number or null, got string 'old'"),
    ({"features": {"age": True}, "k": 1}, r"features.age \(numeric\) must be a number or null, got bool"),
    ({"features": {"age": float("inf")}, "k": 1}, r"features.age \(numeric\) must be finite"),
    ({"features": {"gender": 1.5}, "k": 1}, r"features.gender \(categorical\) must be a string \(or an int\) or null"),
    ({"features": {"bio": 3}, "k": 1}, r"features.bio \(text\) must be a string or null, got int 3"),
    ({"features": {"tags": "a|b"}, "k": 1}, r"features.tags \(multi_categorical\) must be a list of strings"),
    ({"features": {"tags": ["a", None]}, "k": 1}, r"features.tags \(multi_categorical\)\[1\] must be a string, got null"),
    ({"history": "50,172", "k": 1}, r"history must be a list of item ids .* got string"),
    ({"history": ["50", {"id": 1}], "k": 1}, r"history\[1\] must be a non-empty string or an int id, got object"),
    ({"history": ["50", True], "k": 1}, r"history\[1\] must be a non-empty string or an int id, got bool"),
    ({"history": ["1"] * 6, "k": 1}, r"history has 6 items, more than the 5 allowed"),
    ({"history": ["1"], "history_timestamps": [1, 2], "k": 1}, r"history_timestamps has 2 entries but history has 1"),
    ({"history": ["1"], "history_timestamps": ["x"], "k": 1}, r"history_timestamps\[0\] must be an int in"),
    ({"history": ["1"], "history_timestamps": 5, "k": 1}, r"history_timestamps must be a list of ints, got int"),
])
def test_each_bad_field_is_a_400_naming_it(data, message):
    with pytest.raises(RequestError, match=message) as err:
        parse(data)
    assert err.value.status == 400
