"""pipeline: the parts that are not the CLI's end-to-end runs (those are in test_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deployer import pipeline


def test_import_ahead_loads_in_a_thread_and_leaves_a_missing_library_to_the_host_phase(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ahead_one.py").write_text("import time\ntime.sleep(0.2)\nLOADED = True\n")
    (tmp_path / "ahead_two.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    thread = pipeline.import_ahead("ahead_one", "no_such_library_here", "ahead_two")
    assert thread.is_alive()  # the caller goes on (to the engine) at once
    thread.join(timeout=10)
    assert sys.modules["ahead_one"].LOADED
    assert "ahead_two" not in sys.modules  # stopped at the missing one: the host phase says why
    for name in ("ahead_one", "ahead_two"):
        sys.modules.pop(name, None)
