"""pipeline: the parts that are not the CLI's end-to-end runs (those are in test_cli.py)."""

from __future__ import annotations

import threading
import time

import pytest

from deployer import pipeline


def test_ahead_runs_in_a_thread_and_hands_over_its_result_or_its_error() -> None:
    started = threading.Event()

    def slow() -> str:
        started.set()
        time.sleep(0.3)
        return threading.current_thread().name

    made = pipeline.ahead(slow)
    assert started.wait(5) and not made.done()  # the caller goes on (to the engine) at once
    assert made.result(timeout=5).startswith("ahead") and threading.current_thread().name != "ahead"

    def broken() -> None:
        raise ValueError("no such profile")

    with pytest.raises(ValueError, match="no such profile"):  # raised where the result is taken
        pipeline.ahead(broken).result(timeout=5)
