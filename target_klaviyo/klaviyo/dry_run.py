"""dry_run: a stand-in for the client that writes each planned request to a file.

Nothing touches the network. Bulk jobs are answered as if they completed without import
errors, so the plan shows exactly the requests a real run would send.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.klaviyo.operations import OPERATIONS


def _items(body: Any) -> int:
    """How many profiles / events / ids a request body carries."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list):
        return len(data)
    if not isinstance(data, dict):
        return 0
    attributes = data.get("attributes") or {}
    for key in (
        "profiles",
        "events-bulk-create",
        "items",
        "variants",
        "categories",
        "data-source-records",
    ):
        if key in attributes:
            entries = attributes[key].get("data") or []
            if key == "events-bulk-create":
                return sum(len(e["attributes"]["events"]["data"]) for e in entries)
            return len(entries)
    return 1


class DryRunClient:
    def __init__(self, plan_path: Path) -> None:
        self.plan_path = plan_path
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(plan_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "w")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.calls: Counter[str] = Counter()
        self.rate_limit_wait_s = 0.0

    def request(
        self,
        operation_name: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        url: str | None = None,
    ) -> ApiResult:
        operation = OPERATIONS[operation_name]
        if operation.method == "GET":
            return self._answer_read(operation_name)
        parsed = json.loads(body) if body else None
        line = {
            "operation": operation_name,
            "method": operation.method,
            "path": operation.path.format(**(path_params or {})),
            "items": _items(parsed),
            "bytes": len(body or b""),
            "body": parsed,
        }
        with self._lock:
            self.calls[operation_name] += 1
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
            job_id = f"dry-run-{next(self._ids)}"
        if operation_name == "bulk_import_profiles" or "_catalog_" in operation_name:
            return ApiResult(operation_name, 202, body={"data": {"id": job_id}})
        if operation_name in ("create_or_update_profile", "create_list", "create_data_source"):
            return ApiResult(operation_name, 201, body={"data": {"id": job_id}})
        return ApiResult(operation_name, 202 if operation.method == "POST" else 204)

    def writes_waiting(self) -> bool:
        return False  # nothing is paced: a plan is written as fast as it is read

    def _answer_read(self, operation_name: str) -> ApiResult:
        if operation_name.startswith("get_bulk_") and operation_name.endswith("_job"):
            attributes = {"status": "complete", "failed_count": 0}
            return ApiResult(operation_name, 200, body={"data": {"attributes": attributes}})
        # Reads that would resolve ids (list delete, mirror) find nothing without the network.
        return ApiResult(operation_name, 200, body={"data": [], "links": {}})

    def close(self) -> None:
        with self._lock:
            self._file.close()
