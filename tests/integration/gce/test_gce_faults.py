"""The fault matrix: every API call each store operation makes × each fault the fake can inject.

Transient faults (429, 500, 503 twice in a row; one response slower than the client's timeout) end in
success, with a retried mutation carried out once (same requestId). A failed operation, or a 503 that
outlasts the retry policy, ends in one clean RegistryError line and the family exactly as it was, except
when polling an accepted mutation's operation fails: then the error names the operation and says its
outcome is unknown (the mutation may well have happened); and when the read after a mutation fails, the
error says the mutation happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bakery.errors import RegistryError
from bakery.gce.store import GceImageStore
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import FAST_RETRY, PROJECT, make_clients

GET, LIST, FAMILY = "compute.images.get", "compute.images.list", "compute.images.getFromFamily"
INSERT, DEPRECATE, DELETE = "compute.images.insert", "compute.images.deprecate", "compute.images.delete"
WAIT, TEMPLATES = "compute.globalOperations.wait", "compute.instanceTemplates.aggregatedList"
MUTATIONS = {INSERT, DEPRECATE, DELETE}
READ_BACKS = {
    ("insert", GET): "created image c-4, but reading it back failed: ",
    ("promote", FAMILY): "created image prod-1, but reading it back failed: ",
}


def check_get(store: GceImageStore, fake: FakeCompute) -> None:
    assert store.get("c-2").name == "c-2"


def check_list(store: GceImageStore, fake: FakeCompute) -> None:
    assert [r.name for r in store.list("cand")] == ["c-3", "c-2", "c-1"]


def check_family(store: GceImageStore, fake: FakeCompute) -> None:
    assert store.get_from_family("cand").name == "c-3"


def check_insert(store: GceImageStore, fake: FakeCompute) -> None:
    store.insert("c-4", "cand", "debian-12-base", labels={}, description="")
    assert fake._family_head("cand")["name"] == "c-4"
    assert len({c.query["requestId"][0] for c in fake.calls_of(INSERT)}) == 1  # retries reuse the id


def check_promote(store: GceImageStore, fake: FakeCompute) -> None:
    store.promote("c-3", "prod", new_name="prod-1")
    assert fake._family_head("prod")["labels"]["promoted-from"] == "c-3"


def check_rollback(store: GceImageStore, fake: FakeCompute) -> None:
    store.rollback("cand")
    assert fake.images["c-3"]["deprecated"]["state"] == "DEPRECATED"
    assert fake._family_head("cand")["name"] == "c-2"


def check_retention(store: GceImageStore, fake: FakeCompute) -> None:
    assert store.retention("cand", keep=1) == ["c-1"]  # c-2 is rollback's target
    assert sorted(n for n in fake.images if n.startswith("c-")) == ["c-2", "c-3"]


ACTIONS: dict[str, tuple[Callable[[GceImageStore, FakeCompute], None], tuple[str, ...]]] = {
    "get": (check_get, (GET,)),
    "list": (check_list, (LIST,)),
    "get_from_family": (check_family, (FAMILY,)),
    "insert": (check_insert, (INSERT, WAIT, GET)),
    "promote": (check_promote, (GET, INSERT, WAIT, FAMILY)),
    "rollback": (check_rollback, (LIST, FAMILY, GET, DEPRECATE, WAIT)),
    "retention": (check_retention, (LIST, TEMPLATES, DELETE, WAIT)),
}
FAULTS: dict[str, dict[str, Any]] = {
    "429": {"status": 429, "times": 2},
    "500": {"status": 500, "times": 2},
    "503": {"status": 503, "times": 2},
    "slow": {"delay": 0.3, "times": 1},
    "failed-operation": {"op_error": ("QUOTA_EXCEEDED", "Quota 'IMAGES' exceeded.", 403)},
    "503-persistent": {"status": 503, "times": 50},
}
CASES = [
    pytest.param(action, method, fault, id=f"{action}-{method.split('.', 1)[1]}-{fault}")
    for action, (_, methods) in ACTIONS.items()
    for method in methods
    for fault in FAULTS
    if fault != "failed-operation" or method in MUTATIONS
]


def family_state(fake: FakeCompute) -> dict[str, Any]:
    return {name: (image.get("family"), image.get("deprecated")) for name, image in fake.images.items()}


@pytest.mark.parametrize(("action", "method", "fault"), CASES)
def test_fault_matrix(fake: FakeCompute, action: str, method: str, fault: str) -> None:
    fake.op_polls = 1  # every mutation's operation is waited for once
    setup = GceImageStore(make_clients(fake))
    for name in ("c-1", "c-2", "c-3"):
        setup.insert(name, "cand", "debian-12-base", labels={}, description="")
    fake.seed_template("web", f"projects/{PROJECT}/global/images/c-2")
    before = family_state(fake)
    fake.calls.clear()
    check, _ = ACTIONS[action]
    store = GceImageStore(make_clients(fake, timeout=0.2), page_size=2)
    fake.inject(method, **FAULTS[fault])
    if fault in ("failed-operation", "503-persistent"):
        with pytest.raises(RegistryError) as caught:
            check(store, fake)
        message = str(caught.value)
        assert "\n" not in message
        expected = (
            "QUOTA_EXCEEDED: Quota 'IMAGES' exceeded."
            if fault == "failed-operation"
            else (f"after {FAST_RETRY.attempts} attempts: 503")
        )
        assert expected in message
        if method == WAIT and fault == "503-persistent":  # the mutation was accepted: say so, do not guess
            assert "its outcome is unknown (check: gcloud compute operations describe operation-" in message
        elif (action, method) in READ_BACKS and fault == "503-persistent":  # done, only the read-back failed
            assert message.startswith(READ_BACKS[action, method])
        else:
            assert family_state(fake) == before
    else:
        check(store, fake)
        assert not fake.faults[method], "the fault was not reached"
