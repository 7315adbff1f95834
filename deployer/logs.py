"""Per-run log files. Every line is masked before it reaches the disk."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TextIO

from deployer.secrets import Masker


class RunLog:
    """An append-only, thread-safe, masked log of one run (`.deployer/logs/<stamp>-<name>.log`).
    Each line starts with its wall-clock time to the millisecond, so a slow step shows."""

    def __init__(self, path: Path, masker: Masker):
        self.path = path
        self.masker = masker
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    @classmethod
    def create(cls, directory: Path, name: str, masker: Masker) -> RunLog:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return cls(directory / f"{stamp}-{name}.log", masker)

    def write(self, text: str) -> str:
        """Mask `text`, append it as a time-stamped line, and return the masked text."""
        masked = self.masker.mask(text.rstrip("\n"))
        now = time.time()
        stamp = f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d}"
        with self._lock:
            self._file.write(f"{stamp} {masked}\n")
            self._file.flush()
        return masked

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
