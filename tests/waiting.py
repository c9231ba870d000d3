"""The one way a test waits: on a condition, polled until it holds, never for a fixed time.

A sleep long enough on a loaded machine is far too long on an idle one, and still too short under more load;
the condition is what the test means. On a timeout the failure names what was awaited and, with ``detail``,
what was seen instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.02


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "the condition",
               detail: Callable[[], object] | None = None) -> T:
    """Poll ``predicate`` until it returns something true, and return that; after ``timeout`` seconds fail
    the test with ``what`` (and ``detail()``)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            raise AssertionError(message if detail is None else f"{message}; {detail()}")
        time.sleep(POLL_S)
    return result
