"""``imhost serve``'s process settings after start: the event loop, which shares the GIL with
the database threads, gets it back within a millisecond."""

from __future__ import annotations

import sys

from imhost.cli import serve


def test_the_loop_waits_at_most_a_millisecond_for_the_gil() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        serve._favour_the_loop()
        assert sys.getswitchinterval() == serve.SWITCH_INTERVAL <= 0.001
    finally:
        sys.setswitchinterval(before)
