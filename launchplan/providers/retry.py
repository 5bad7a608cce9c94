"""Retrying cloud calls that failed for a passing reason (throttling, 5xx, dropped connections).

boto3 has its own retry configuration (the ec2 provider uses it); this module serves drivers
that have none worth relying on, such as apache-libcloud's. Fatal errors are never retried.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from launchplan.errors import ProviderError

T = TypeVar("T")

# Error codes that clouds use for "slow down" or "try again" (EC2 and EC2-compatible APIs).
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
    }
)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: delay n is up to min(cap, base * 2**n)."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0

    def delay(self, failures: int) -> float:
        """How long to sleep after `failures` consecutive transient failures (>= 1)."""
        ceiling = min(self.cap, self.base * (2 ** (failures - 1)))
        return ceiling * (0.5 + random.random() / 2)


DEFAULT_BACKOFF = Backoff()


def is_transient_message(message: str) -> bool:
    """True when an error message starts with a transient code ("RequestLimitExceeded: ...")."""
    code = message.split(":", 1)[0].strip()
    return code in TRANSIENT_CODES


def retry_call(
    call: Callable[[], T],
    *,
    classify: Callable[[BaseException], bool],
    describe: Callable[[BaseException], str] = str,
    what: str = "cloud call",
    backoff: Backoff = DEFAULT_BACKOFF,
    cancel: threading.Event | None = None,
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
) -> T:
    """Run `call`, retrying transient failures with backoff; raise ProviderError otherwise.

    `classify(exc)` says whether an exception is transient. A fatal one becomes
    ProviderError(describe(exc), transient=False) at once; after the last attempt a transient one
    becomes ProviderError(..., transient=True) so the caller may still decide to try later.
    `cancel` cuts the wait between attempts short.
    """
    failures = 0
    while True:
        try:
            return call()
        except ProviderError:
            raise
        except Exception as exc:
            transient = classify(exc)
            message = describe(exc)
            if not transient:
                raise ProviderError(message, transient=False) from exc
            failures += 1
            if failures >= backoff.attempts:
                raise ProviderError(
                    f"{what} still failing after {failures} attempts: {message}", transient=True
                ) from exc
            delay = backoff.delay(failures)
            hinted = retry_after(exc)
            if hinted is not None:
                delay = min(backoff.cap, max(delay, hinted))
            if cancel is not None:
                if cancel.wait(delay):
                    raise ProviderError(
                        f"{what} cancelled while retrying: {message}", transient=True
                    ) from exc
            else:
                time.sleep(delay)
