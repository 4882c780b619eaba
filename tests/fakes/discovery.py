"""The official Compute v1 discovery document: routes and schema validation for the fake Compute API.

The document ships with google-api-python-client (a pinned dev dependency). The real client silently drops
response fields it does not know, so the fake validates everything it sends and receives against the
document instead: unknown properties, wrong JSON types, bad enum values and unknown query parameters are
violations.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from dataclasses import dataclass
from typing import Any

#: Query parameters the client may add to any method (the document's global parameters, plus ``$alt``).
SYSTEM_PARAMETERS = frozenset({"$alt", "alt", "$.xgafv", "fields", "prettyPrint", "quotaUser", "key"})
INT_STRING = re.compile(r"^-?[0-9]+$")


@dataclass(frozen=True)
class Method:
    """One API method: ``id`` like ``compute.images.get``, HTTP verb, path regex and schemas."""

    id: str
    http_method: str
    path: re.Pattern[str]
    parameters: dict[str, Any]
    request: str | None
    response: str | None


class Discovery:
    """Routes and schemas of the document; ``validate`` returns a list of violations (empty: valid)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document["schemas"]
        self.base_path = "/" + document["servicePath"]  # /compute/v1/

    def method(self, resource: str, name: str) -> Method:
        spec = self.document["resources"][resource]["methods"][name]
        pattern = re.escape(self.base_path + spec["path"])
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
        return Method(
            id=spec["id"],
            http_method=spec["httpMethod"],
            path=re.compile(f"^{pattern}$"),
            parameters=spec.get("parameters", {}),
            request=spec.get("request", {}).get("$ref"),
            response=spec.get("response", {}).get("$ref"),
        )

    def validate(self, value: Any, schema_name: str) -> list[str]:
        errors: list[str] = []
        self._check(value, {"$ref": schema_name}, schema_name, errors)
        return errors

    def validate_query(self, method: Method, query: dict[str, list[str]]) -> list[str]:
        errors = []
        for name, values in query.items():
            spec = method.parameters.get(name)
            if name in SYSTEM_PARAMETERS:
                continue
            if spec is None or spec.get("location") != "query":
                errors.append(f"{method.id}: unknown query parameter {name!r}")
                continue
            for value in values:
                self._check_scalar(value, spec, f"{method.id}?{name}", errors, from_query=True)
        return errors

    def _check(self, value: Any, schema: dict[str, Any], where: str, errors: list[str]) -> None:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                errors.append(f"{where}: expected an object, got {type(value).__name__}")
                return
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in properties:
                    self._check(item, properties[key], f"{where}.{key}", errors)
                elif extra is not None:
                    self._check(item, extra, f"{where}[{key!r}]", errors)
                elif schema.get("format") != "google.protobuf.Any":
                    errors.append(f"{where}: unknown property {key!r}")
        elif kind == "array":
            if not isinstance(value, list):
                errors.append(f"{where}: expected an array, got {type(value).__name__}")
                return
            for index, item in enumerate(value):
                self._check(item, schema["items"], f"{where}[{index}]", errors)
        elif kind != "any":
            self._check_scalar(value, schema, where, errors, from_query=False)

    @staticmethod
    def _check_scalar(value: Any, schema: dict[str, Any], where: str, errors: list[str], *, from_query: bool) -> None:
        kind, fmt = schema.get("type"), schema.get("format")
        if from_query and kind == "integer":
            ok = isinstance(value, str) and bool(INT_STRING.match(value))
        elif from_query and kind == "boolean":
            ok = value in ("true", "false")
        elif kind == "string":
            ok = isinstance(value, str) and (fmt not in ("int64", "uint64") or bool(INT_STRING.match(value)))
        elif kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind == "boolean":
            ok = isinstance(value, bool)
        else:
            ok = False
        if not ok:
            errors.append(f"{where}: {value!r} is not a valid {kind}{f' ({fmt})' if fmt else ''}")
        elif "enum" in schema and value not in schema["enum"]:
            errors.append(f"{where}: {value!r} is not one of {schema['enum']}")


@functools.cache
def compute_v1() -> Discovery:
    """The Compute v1 document installed with google-api-python-client (parsed once per process)."""
    path = importlib.resources.files("googleapiclient") / "discovery_cache/documents/compute.v1.json"
    return Discovery(json.loads(path.read_text()))
