"""The control API under ``/_emulator/`` (no auth): state, request log, violations, faults,
keys, seeded suppressions, reset and wait-idle, for a test or a demo driving the emulator from
another process.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .calls import Reply
from .transport import CONTROL_PREFIX

if TYPE_CHECKING:
    from .server import Emulator


def handle_control(emulator: Emulator, method: str, path: str, query: str, body: bytes) -> Reply:
    route = path[len(CONTROL_PREFIX) :].rstrip("/")
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        return Reply(400, {"error": "body is not JSON"}, content_type="application/json")
    try:
        document = _control(emulator, method, route, dict(parse_qsl(query)), payload)
    except (ValueError, TypeError, KeyError) as exc:
        return Reply(400, {"error": str(exc)}, content_type="application/json")
    if document is None:
        return Reply(
            404, {"error": f"no control route {method} {path}"}, content_type="application/json"
        )
    return Reply(200, document, content_type="application/json")


def _control(
    emulator: Emulator, method: str, route: str, query: dict[str, str], payload: Any
) -> Any:
    if (method, route) == ("GET", "/state"):
        return emulator.dump()
    if (method, route) == ("GET", "/requests"):
        return [entry.to_dict() for entry in emulator.request_log]
    if (method, route) == ("GET", "/violations"):
        return [list(item) for item in emulator.violations]
    if (method, route) == ("GET", "/faults"):
        return emulator.faults.pending()
    if (method, route) == ("POST", "/faults"):
        params = dict(payload)
        kind = params.pop("kind")
        operation = params.pop("operation", None)
        count = params.pop("count", 1)
        return emulator.add_fault(str(kind), operation, count, **params)
    if (method, route) in (("DELETE", "/faults"), ("POST", "/faults/clear")):
        emulator.clear_faults()
        return {"cleared": True}
    if (method, route) == ("POST", "/reset"):
        emulator.reset()
        return {"reset": True}
    if (method, route) == ("POST", "/keys"):
        granted = emulator.add_key(str(payload["key"]), list(payload.get("scopes", [])))
        return {"key": payload["key"], "scopes": sorted(granted)}
    if (method, route) == ("POST", "/suppressions"):
        reason = str(payload.get("reason", "HARD_BOUNCE"))
        profile_id = emulator.suppress(str(payload["email"]), reason, payload.get("timestamp"))
        return {"profile_id": profile_id}
    if (method, route) == ("GET", "/timing"):
        return emulator.timing()
    if (method, route) == ("GET", "/config"):
        return {"job_latency_s": emulator.job_latency_s}
    if (method, route) == ("POST", "/config"):
        unknown = set(payload) - {"job_latency_s"}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "job_latency_s" in payload:
            emulator.configure(job_latency_s=payload["job_latency_s"])
        return {"job_latency_s": emulator.job_latency_s}
    if (method, route) == ("POST", "/wait-idle"):
        timeout = float(payload.get("timeout", query.get("timeout", 10)))
        return {"idle": emulator.wait_idle(timeout)}
    return None
