"""The rejects file: one JSON line per rejected record, written 0600 (it holds PII)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from target_klaviyo.mapping.values import to_json


class RejectsFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.chmod(self.path, 0o600)
        return self._fd

    def write(
        self,
        *,
        stream: str,
        obj: str,
        identifiers: dict[str, Any],
        reason: str,
        record: dict[str, Any],
    ) -> None:
        line = json.dumps(
            {
                "stream": stream,
                "object": obj,
                "identifiers": identifiers,
                "reason": reason,
                "record": to_json(record),
            },
            ensure_ascii=False,
        )
        data = (line + "\n").encode()
        with self._lock:
            os.write(self._open(), data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
