"""Bounded retries with exponential backoff and full jitter for Compute Engine API calls."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from google.api_core import exceptions as api_exceptions

T = TypeVar("T")

#: Transient answers worth another attempt: 429 and the 5xx codes Google documents as retryable,
#: plus transport failures (a timed-out or dropped request may have been carried out: mutating calls
#: therefore carry a ``requestId`` that stays the same across attempts).
RETRYABLE: tuple[type[BaseException], ...] = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries within ``deadline`` seconds; sleeps ``initial * multiplier**n`` (capped
    at ``maximum``), each drawn uniformly from [0, that] ("full jitter")."""

    attempts: int = 6
    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0
    deadline: float = 300.0

    def delays(self) -> list[float]:
        """The backoff ceilings between attempts (before jitter)."""
        return [min(self.maximum, self.initial * self.multiplier**n) for n in range(self.attempts - 1)]


class RetriesExhausted(Exception):
    """Internal: the last transient error after the policy gave up; carries the attempt count."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"{last} (gave up after {attempts} attempts)")
        self.attempts = attempts
        self.last = last


def call_with_retry(
    fn: Callable[[float], T],
    *,
    policy: RetryPolicy,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn(per_call_timeout)`` until it returns or raises a non-retryable error.

    Every attempt gets ``min(timeout, time left)``; RetriesExhausted wraps the last transient error
    once the attempts or the deadline run out.
    """
    deadline = clock() + policy.deadline
    delays = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - clock()
        try:
            return fn(max(0.001, min(timeout, remaining)))
        except RETRYABLE as exc:
            if attempt > len(delays):
                raise RetriesExhausted(attempt, exc) from exc
            pause = random.uniform(0.0, delays[attempt - 1])  # noqa: S311 - jitter, not crypto
            if clock() + pause >= deadline:
                raise RetriesExhausted(attempt, exc) from exc
            sleep(pause)
