"""Per-run log files. Every line is masked before it reaches the disk."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TextIO

from deployer.secrets import Masker


class RunLog:
    """An append-only, thread-safe, masked log of one run (`.deployer/logs/<stamp>-<name>.log`)."""

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
        """Mask `text`, append it as a line, and return the masked text."""
        masked = self.masker.mask(text.rstrip("\n"))
        with self._lock:
            self._file.write(masked + "\n")
            self._file.flush()
        return masked

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
