"""Constants and the client factory the GCE integration tests share with their fixtures."""

from __future__ import annotations

from bakery.gce.client import ComputeClients
from bakery.gce.retry import RetryPolicy
from tests.fakes.compute import FakeCompute

PROJECT = "bakery-test"
ZONE = "europe-west1-b"
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, deadline=20.0)


def make_clients(fake: FakeCompute, *, timeout: float = 5.0, operation_timeout: float = 10.0) -> ComputeClients:
    """Clients for the running ``fake``, with fast retries."""
    return ComputeClients.create(
        PROJECT, ZONE, endpoint=fake.endpoint, timeout=timeout, operation_timeout=operation_timeout, retry=FAST_RETRY
    )
