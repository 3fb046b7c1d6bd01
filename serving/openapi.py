"""The service's OpenAPI 3.1 document (``GET /openapi.json``), built from what the service really takes.

The /topk request model lists exactly ``serving.requests.FIELDS`` and, under ``features``, the query
tower's user features with their JSON types by kind; bounds come from the ``ServingConfig`` and from
``serving.requests`` (MAX_TIMESTAMP, FLOAT32_MAX). ``tests/serving/test_openapi.py`` checks the document
against the parser and against real answers, so the schema cannot drift from the code.
"""
from __future__ import annotations

from typing import Sequence

from recdata.schema import FeatureSpec
from serving.config import ServingConfig
from serving.requests import FIELDS, FLOAT32_MAX, MAX_TIMESTAMP

_ID = {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}
_TIMESTAMP = {"type": "integer", "minimum": 0, "maximum": MAX_TIMESTAMP,
              "description": "seconds since the epoch (up to 9999-12-31)"}
_FEATURE = {
    "categorical": {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
    "text": {"type": ["string", "null"]},
    "numeric": {"type": ["number", "null"], "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX},
    "multi_categorical": {"oneOf": [{"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                                    {"type": "null"}]},
}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def build(user_specs: Sequence[FeatureSpec], config: ServingConfig, model_version: str) -> dict:
    """The OpenAPI document for a service whose query tower takes ``user_specs``."""
    request = {
        "type": "object", "additionalProperties": False, "required": ["k"],
        "description": "A known user (user_id alone) or raw features (features and/or history present). "
                       "Either user_id or features/history must be given.",
        "properties": {
            "user_id": {**_ID, "description": "a known user's id (or an id for the raw-feature request)"},
            "k": {"type": "integer", "minimum": 1, "maximum": config.max_k, "description": "items to return"},
            "exclude_seen": {"type": "boolean", "default": config.default_exclude_seen,
                             "description": "leave out the user's items from the data / the given history"},
            "features": {"type": "object", "additionalProperties": False,
                         "properties": {s.name: {**_FEATURE[s.kind], "description": f"{s.kind} user feature"}
                                        for s in user_specs}},
            "history": {"type": "array", "items": _ID, "maxItems": config.max_history_items,
                        "description": "item ids, oldest first"},
            "history_timestamps": {"type": "array", "items": _TIMESTAMP, "maxItems": config.max_history_items,
                                   "description": "one per history item"},
            "timestamp": {**_TIMESTAMP, "description": "query time (default: when the request arrives)"},
        },
    }
    if tuple(request["properties"]) != FIELDS:
        raise RuntimeError(f"serving.requests.FIELDS is {FIELDS} but the schema lists {tuple(request['properties'])}; "
                           "update serving/openapi.py")
    schemas = {
        "TopKRequest": request,
        "ScoredItem": {"type": "object", "required": ["item_id", "score"],
                       "properties": {"item_id": {"type": "string"}, "score": {"type": "number"}}},
        "TopKResponse": {
            "type": "object", "required": ["items", "model_version", "index_version", "known_user"],
            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/ScoredItem"}},
                           "model_version": {"type": "string"}, "index_version": {"type": "string"},
                           "known_user": {"type": "boolean"}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Health": {"type": "object", "required": ["status", "model_version", "index_version"],
                   "properties": {"status": {"enum": ["ok", "degraded"]},
                                  "reason": {"type": "string", "description": "why degraded"},
                                  "model_version": {"type": "string"}, "index_version": {"type": "string"},
                                  "worker": {"type": ["integer", "null"],
                                             "description": "the worker process that answered (workers > 1)"},
                                  "pid": {"type": "integer"}}},
        "Ready": {"type": "object", "required": ["status", "model_version", "index_version", "index_model_version"],
                  "properties": {"status": {"const": "ready"}, "model_version": {"type": "string"},
                                 "index_version": {"type": "string"}, "index_model_version": {"type": "string"}}},
        "Version": {"type": "object",
                    "required": ["model_version", "index_version", "index_factory", "index_count", "index_dim"],
                    "properties": {"model_version": {"type": "string"}, "index_version": {"type": "string"},
                                   "index_factory": {"type": "string"}, "index_count": {"type": "integer"},
                                   "index_dim": {"type": "integer"}, "search_threads": {"type": "integer"},
                                   "refused_index_versions": {"type": "array", "items": {"type": "string"}},
                                   "last_reload_error": {"type": ["string", "null"]}}},
    }
    overloaded = _error("overloaded (queue full, no answer within request_timeout_s, too many connections) "
                        "or shutting down")
    return {
        "openapi": "3.1.0",
        "info": {"title": "twotower top-k retrieval", "version": model_version,
                 "description": "Every error is JSON {\"error\": message}."},
        "paths": {
            "/topk": {"post": {
                "summary": "Top-k items for a user", "operationId": "topk",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TopKRequest"}}}},
                "responses": {"200": _ok("the k best items, best first", "TopKResponse"),
                              "400": _error("bad JSON, field, type or range (the message names it)"),
                              "411": _error("no Content-Length (chunked bodies are not accepted)"),
                              "413": _error("body above max_body_bytes"),
                              "503": overloaded, "500": _error("a bug (logged with its traceback)")}}},
            "/healthz": {"get": {"summary": "Liveness; 'degraded' while the newest published index is refused",
                                 "operationId": "healthz", "responses": {"200": _ok("alive", "Health")}}},
            "/readyz": {"get": {"summary": "Readiness: model and index loaded, versions agree, not shutting down",
                                "operationId": "readyz",
                                "responses": {"200": _ok("ready", "Ready"), "503": _error("not ready")}}},
            "/version": {"get": {"summary": "What is served (no file paths)", "operationId": "version",
                                 "responses": {"200": _ok("versions and index facts", "Version")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "operationId": "metrics",
                                 "responses": {"200": {"description": "metrics",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {}}}}}},
        },
        "components": {"schemas": schemas},
    }
