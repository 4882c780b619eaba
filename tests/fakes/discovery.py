"""Google API discovery documents: routes and schema validation for the fake Google APIs.

The documents ship with google-api-python-client (a pinned dev dependency), in
``googleapiclient/discovery_cache/documents/``: Compute v1 for the Compute fake, Resource Manager v3, IAM v1
and Pub/Sub v1 for ``cloudapis.py``. The real clients silently drop response fields they do not know, so the
fakes validate everything they send and receive against the document instead: unknown properties, wrong
JSON types, bad enum values and unknown query parameters are violations.

Routes: a method's ``path`` is matched with its parameters, nested resources (``projects.topics``) by their
dotted name. Reserved expansions (``{+name}``, RFC 6570: may contain ``/``) match the parameter's ``pattern``
where the document gives one, else any non-empty text; where the document gives a ``flatPath``
(``v1/projects/{projectsId}/topics/{topicsId}``) the request must match it too. Either is what the GAPIC
REST transports send: e.g. ``/v1/{topic=projects/*/topics/*}`` in
``google/pubsub_v1/services/publisher/transports/rest_base.py`` (google-cloud-pubsub 2.44.0) is the same URL
as the document's ``v1/{+topic}`` with pattern ``^projects/[^/]+/topics/[^/]+$``.
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
    """One API method: ``id`` like ``compute.images.get``, HTTP verb, path regexes and schemas."""

    id: str
    http_method: str
    path: re.Pattern[str]
    parameters: dict[str, Any]
    request: str | None
    response: str | None
    flat_path: re.Pattern[str] | None = None

    def match(self, url_path: str) -> dict[str, str] | None:
        """The path parameters (still percent-encoded) if ``url_path`` is this method's, else None."""
        found = self.path.match(url_path)
        if found is None or (self.flat_path is not None and not self.flat_path.match(url_path)):
            return None
        return found.groupdict()


class Discovery:
    """Routes and schemas of the document; ``validate`` returns a list of violations (empty: valid)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document["schemas"]
        self.base_path = "/" + document["servicePath"]  # /compute/v1/

    def method(self, resource: str, name: str) -> Method:
        """The method ``name`` of ``resource`` (nested resources dotted: ``projects.serviceAccounts``)."""
        node = self.document
        for part in resource.split("."):
            node = node["resources"][part]
        spec = node["methods"][name]
        parameters: dict[str, Any] = spec.get("parameters", {})
        flat = spec.get("flatPath")
        return Method(
            id=spec["id"],
            http_method=spec["httpMethod"],
            path=self._path_regex(spec["path"], parameters),
            parameters=parameters,
            request=spec.get("request", {}).get("$ref"),
            response=spec.get("response", {}).get("$ref"),
            flat_path=self._path_regex(flat, {}) if flat and flat != spec["path"] else None,
        )

    def _path_regex(self, template: str, parameters: dict[str, Any]) -> re.Pattern[str]:
        """``{name}`` matches one segment; ``{+name}`` the parameter's pattern (or any text, ``/`` too)."""

        def group(found: re.Match[str]) -> str:
            reserved, name = found.group(1) == "+", found.group(2)
            if not reserved:
                return f"(?P<{name}>[^/]+)"
            pattern = parameters.get(name, {}).get("pattern", "^.+$").removeprefix("^").removesuffix("$")
            return f"(?P<{name}>{pattern})"

        parts = re.split(r"(\{\+?\w+\})", self.base_path + template)
        regex = "".join(
            re.sub(r"\{(\+?)(\w+)\}", group, part) if part.startswith("{") else re.escape(part) for part in parts
        )
        return re.compile(f"^{regex}$")

    def validate(self, value: Any, schema_name: str) -> list[str]:
        errors: list[str] = []
        self._check(value, {"$ref": schema_name}, schema_name, errors)
        return errors

    def request_problems(self, method: Method, query: dict[str, list[str]], body: Any) -> list[str]:
        """Violations of one request: its query parameters, and its body (or an unexpected one)."""
        problems = self.validate_query(method, query)
        if method.request:
            problems += self.validate(body, method.request)
        elif body is not None:
            problems.append(f"{method.id}: unexpected request body")
        return problems

    def response_problems(self, method: Method, response: Any) -> list[str]:
        """Violations of one response (none for a method without a response schema)."""
        return self.validate(response, method.response) if method.response else []

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
def load(name: str) -> Discovery:
    """The document ``name`` (e.g. ``pubsub.v1``) installed with google-api-python-client (parsed once)."""
    path = importlib.resources.files("googleapiclient") / f"discovery_cache/documents/{name}.json"
    return Discovery(json.loads(path.read_text()))


def compute_v1() -> Discovery:
    """The Compute v1 document."""
    return load("compute.v1")
