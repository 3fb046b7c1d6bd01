"""The OpenAPI document matches what the parser accepts and what the service answers."""
import pytest

from recdata.schema import FeatureSpec
from serving import openapi
from serving.config import ServingConfig
from serving.requests import FIELDS, MAX_TIMESTAMP, RequestError, parse_topk
from serving.service import TopKService
from tests.serving.conftest import tiny_run

SPECS = (FeatureSpec("age", "numeric"), FeatureSpec("gender", "categorical"),
         FeatureSpec("tags", "multi_categorical"), FeatureSpec("bio", "text"))


def test_the_request_model_is_the_parsers_field_list_and_bounds():
    cfg = ServingConfig(max_k=77, max_history_items=9)
    doc = openapi.build(SPECS, cfg, "m1")
    request = doc["components"]["schemas"]["TopKRequest"]
    assert tuple(request["properties"]) == FIELDS and request["additionalProperties"] is False
    assert request["properties"]["k"]["maximum"] == 77 and request["properties"]["history"]["maxItems"] == 9
    assert request["properties"]["timestamp"]["maximum"] == MAX_TIMESTAMP
    assert set(request["properties"]["features"]["properties"]) == {"age", "gender", "tags", "bio"}
    assert doc["info"]["version"] == "m1" and doc["openapi"] == "3.1.0"
    # the bounds the schema states are the parser's: one past each is refused, the bound itself accepted
    parse = lambda data: parse_topk(data, SPECS, max_k=77, max_history_items=9)  # noqa: E731
    assert parse({"user_id": "u", "k": 77, "timestamp": MAX_TIMESTAMP}).k == 77
    for bad in ({"user_id": "u", "k": 78}, {"user_id": "u", "k": 1, "timestamp": MAX_TIMESTAMP + 1},
                {"history": ["1"] * 10, "k": 1}):
        with pytest.raises(RequestError):
            parse(bad)


def test_the_response_models_name_the_keys_the_service_answers_with():
    svc = TopKService.open(tiny_run().root, ServingConfig(reload_interval_s=None))
    try:
        doc = openapi.build(svc.user_specs, svc.config, svc.model_version)
        schemas = doc["components"]["schemas"]
        from serving.requests import TopKRequest

        answer = svc.topk(TopKRequest(k=3, exclude_seen=True, user_id="u1"))
        assert set(answer) == set(schemas["TopKResponse"]["properties"]) == set(schemas["TopKResponse"]["required"])
        assert set(answer["items"][0]) == set(schemas["ScoredItem"]["properties"])
        assert set(schemas["Health"]["required"]) <= set(svc.health())
        assert set(schemas["Version"]["properties"]) <= set(svc.version_info())
        ready, body = svc.readiness()
        assert ready and set(body) == set(schemas["Ready"]["properties"])
        assert set(schemas["TopKRequest"]["properties"]["features"]["properties"]) == {s.name for s in svc.user_specs}
    finally:
        svc.close()
