"""Fixtures: the fake Compute API on 127.0.0.1, clients and a store pointed at it, and a guard that
fails the test if anything connects anywhere but loopback (e.g. compute.googleapis.com or a metadata server)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from bakery.gce.client import ComputeClients
from bakery.gce.store import GceImageStore
from tests.fakes.compute import FakeCompute
from tests.integration.gce.gce_env import PROJECT, make_clients, seed_public_images


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket in this process looks up or connects to; only loopback (127.0.0.0/8) is let through."""
    seen: list[Any] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", b"127.0.0.1"):
            seen.append((host, port))
            raise socket.gaierror(f"test guard: lookup of {host!r} is not allowed")
        return real_getaddrinfo(host, port, *args, **kwargs)

    def guarded(sock: socket.socket, address: Any) -> None:
        seen.append(address)
        if not (isinstance(address, tuple) and address[0].startswith("127.")):  # loopback (VM backend: 127.0.0.N)
            raise ConnectionRefusedError(f"test guard: connection to {address!r} is not allowed")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
    return seen


@pytest.fixture
def loopback_ports() -> set[int]:
    """Ports of other servers a test starts on 127.0.0.1 (e.g. a webhook) that may be connected to."""
    return set()


@pytest.fixture
def fake(connections: list[Any], loopback_ports: set[int]) -> Iterator[FakeCompute]:
    """A running fake with one base image and the variants' public families; fails the test on any schema
    violation or foreign connection."""
    compute = FakeCompute(project=PROJECT)
    compute.seed_image("debian-12-base", "debian-12")
    seed_public_images(compute)
    with compute.serve():
        yield compute
    port = int(compute.endpoint.rsplit(":", 1)[1])
    assert compute.violations == [], "fake Compute API saw schema violations"
    allowed = {("127.0.0.1", p) for p in {port, *loopback_ports}}
    assert {tuple(a) for a in connections} <= allowed, f"foreign connections: {connections}"


@pytest.fixture
def clients(fake: FakeCompute) -> ComputeClients:
    return make_clients(fake)


@pytest.fixture
def store(clients: ComputeClients) -> GceImageStore:
    return GceImageStore(clients, page_size=2)
