"""The fake's validator against the official Compute v1 discovery document: it accepts valid resources
and catches what the real client would silently drop or misread."""

from __future__ import annotations

import pytest

from tests.fakes.discovery import compute_v1

VALID_IMAGE = {
    "kind": "compute#image",
    "id": "123",
    "name": "img-1",
    "diskSizeGb": "10",
    "labels": {"a": "b"},
    "deprecated": {"state": "DEPRECATED"},
    "storageLocations": ["eu"],
}


def test_valid_image_passes() -> None:
    assert compute_v1().validate(VALID_IMAGE, "Image") == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"bogusField": 1}, "Image: unknown property 'bogusField'"),
        ({"diskSizeGb": 10}, "Image.diskSizeGb: 10 is not a valid string (int64)"),
        ({"diskSizeGb": "ten"}, "Image.diskSizeGb: 'ten' is not a valid string (int64)"),
        ({"deprecated": {"state": "GONE"}}, "Image.deprecated.state: 'GONE' is not one of"),
        ({"labels": {"a": 1}}, "Image.labels['a']: 1 is not a valid string"),
        ({"storageLocations": "eu"}, "Image.storageLocations: expected an array, got str"),
        ({"deprecated": {"state": "DEPRECATED", "reason": "x"}}, "Image.deprecated: unknown property 'reason'"),
    ],
)
def test_invalid_image_is_caught(change: dict[str, object], problem: str) -> None:
    problems = compute_v1().validate({**VALID_IMAGE, **change}, "Image")
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_query_parameters_are_checked() -> None:
    doc = compute_v1()
    method = doc.method("images", "list")
    assert doc.validate_query(method, {"maxResults": ["2"], "filter": ['family = "x"'], "$alt": ["json"]}) == []
    assert doc.validate_query(method, {"maxResults": ["two"], "orderby": ["name"]}) == [
        "compute.images.list?maxResults: 'two' is not a valid integer (uint32)",
        "compute.images.list: unknown query parameter 'orderby'",
    ]


def test_routes_come_from_the_document() -> None:
    method = compute_v1().method("images", "getFromFamily")
    assert method.http_method == "GET" and method.response == "Image"
    match = method.path.match("/compute/v1/projects/p/global/images/family/debian-12")
    assert match is not None and match.groupdict() == {"project": "p", "family": "debian-12"}
