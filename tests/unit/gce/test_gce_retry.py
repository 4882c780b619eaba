"""Retry policy: backoff ceilings, jitter bounds, attempt and deadline limits, what counts as transient."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as api_exceptions

from bakery.gce.retry import RetriesExhausted, RetryPolicy, call_with_retry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def failing(errors: list[BaseException], timeouts: list[float]):  # type: ignore[no-untyped-def]
    def fn(timeout: float) -> str:
        timeouts.append(timeout)
        if errors:
            raise errors.pop(0)
        return "ok"

    return fn


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    assert RetryPolicy(attempts=6, initial=1, maximum=5, multiplier=2).delays() == [1, 2, 4, 5, 5]


@pytest.mark.parametrize(
    "error",
    [
        api_exceptions.TooManyRequests("x"),
        api_exceptions.InternalServerError("x"),
        api_exceptions.BadGateway("x"),
        api_exceptions.ServiceUnavailable("x"),
        api_exceptions.GatewayTimeout("x"),
        requests.exceptions.ReadTimeout("x"),
        requests.exceptions.ConnectionError("x"),
    ],
)
def test_transient_errors_are_retried_with_jittered_backoff(error: BaseException) -> None:
    clock, timeouts = Clock(), []
    policy = RetryPolicy(attempts=4, initial=1.0, maximum=10.0, deadline=100.0)
    result = call_with_retry(
        failing([error, error], timeouts), policy=policy, timeout=7.0, sleep=clock.sleep, clock=clock
    )
    assert result == "ok"
    assert timeouts == [7.0, 7.0, 7.0]
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 1.0 and 0 <= clock.sleeps[1] <= 2.0


@pytest.mark.parametrize("error", [api_exceptions.NotFound("x"), api_exceptions.BadRequest("x"), ValueError("x")])
def test_other_errors_are_not_retried(error: BaseException) -> None:
    clock, timeouts = Clock(), []
    with pytest.raises(type(error)):
        call_with_retry(failing([error], timeouts), policy=RetryPolicy(), timeout=1.0, sleep=clock.sleep, clock=clock)
    assert timeouts == [1.0] and clock.sleeps == []


def test_attempts_are_bounded() -> None:
    clock, timeouts = Clock(), []
    errors: list[BaseException] = [api_exceptions.ServiceUnavailable("down")] * 10
    with pytest.raises(RetriesExhausted) as caught:
        call_with_retry(
            failing(errors, timeouts), policy=RetryPolicy(attempts=3), timeout=1.0, sleep=clock.sleep, clock=clock
        )
    assert caught.value.attempts == 3 and len(timeouts) == 3
    assert isinstance(caught.value.last, api_exceptions.ServiceUnavailable)


def test_total_time_is_bounded_and_each_call_gets_at_most_the_time_left() -> None:
    clock, timeouts = Clock(), []
    errors: list[BaseException] = [api_exceptions.ServiceUnavailable("down")] * 100
    policy = RetryPolicy(attempts=100, initial=4.0, maximum=4.0, multiplier=1.0, deadline=10.0)

    def slow(timeout: float) -> str:
        clock.now += 3.0  # every attempt burns 3 s before failing
        return failing(errors, timeouts)(timeout)  # type: ignore[no-any-return]

    with pytest.raises(RetriesExhausted):
        call_with_retry(slow, policy=policy, timeout=5.0, sleep=clock.sleep, clock=clock)
    assert clock.now < 10.0 + 3.0
    assert timeouts[0] == 5.0 and all(t <= 5.0 for t in timeouts)
